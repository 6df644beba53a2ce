"""Find tensors of an ONNX model that keep their data outside the model file ("external data").

A tensor whose ``data_location`` is ``EXTERNAL`` (or that carries ``external_data`` entries)
names a file, an offset and a length; onnxruntime reads that file when it builds a session. A
model built from bytes in memory resolves the name against the process's working directory,
so an uploaded model could read any file there (a key store, a log) into a model output.
Sovereign's artifacts are single files: any external reference is refused, at upload
(:func:`inference_backend.signature.read_onnx_signature`) and again on the Triton host before
the session is built (``triton_model.py``).

Tensors can sit in many places; this module walks all of them, without recursion (a deep
nest of subgraphs cannot exhaust the stack): graph initializers and sparse initializers
(values and indices), every node attribute that holds a tensor (``TENSOR``, ``TENSORS``,
``SPARSE_TENSOR``, ``SPARSE_TENSORS``) whatever its declared ``type``, every subgraph
(``GRAPH``/``GRAPHS`` attributes: ``If``, ``Loop``, ``Scan`` and custom operators), function
bodies and their default attributes, and training-info graphs.

No Django here: this module ships to Triton hosts.
"""

from __future__ import annotations

from collections.abc import Iterator

from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto

#: How many references a refusal names (a hostile model may hold thousands).
MAX_REPORTED = 5
_NAME_CHARS = 60


def _label(kind: str, name: str) -> str:
    shown = name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "…"
    return f"{kind} {shown!r}"


def is_external(tensor: TensorProto) -> bool:
    """True when the tensor points to data outside the model (either marker is enough)."""
    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


def _sparse(sparse: SparseTensorProto) -> Iterator[tuple[str, TensorProto]]:
    yield "values", sparse.values
    yield "indices", sparse.indices


def _attribute_tensors(attr: AttributeProto) -> Iterator[tuple[str, TensorProto]]:
    # Every field is read whatever `attr.type` says: a parser may honour a field the type denies.
    if attr.HasField("t"):
        yield "t", attr.t
    for index, tensor in enumerate(attr.tensors):
        yield f"tensors[{index}]", tensor
    sparse_tensors = [("sparse_tensor", attr.sparse_tensor)] if attr.HasField("sparse_tensor") else []
    sparse_tensors += [(f"sparse_tensors[{i}]", s) for i, s in enumerate(attr.sparse_tensors)]
    for where, sparse in sparse_tensors:
        for part, tensor in _sparse(sparse):
            yield f"{where}.{part}", tensor


def _attribute_graphs(attr: AttributeProto) -> Iterator[tuple[str, GraphProto]]:
    if attr.HasField("g"):
        yield "g", attr.g
    for index, graph in enumerate(attr.graphs):
        yield f"graphs[{index}]", graph


class _Walk:
    """An explicit work list of (path, message) pairs; each message contributes its tensors and children."""

    def __init__(self, model: ModelProto) -> None:
        self.found: list[str] = []
        self.todo: list[tuple[str, object]] = [("model", model)]

    def run(self) -> list[str]:
        while self.todo:
            path, message = self.todo.pop()
            if isinstance(message, ModelProto):
                self._model(path, message)
            elif isinstance(message, GraphProto):
                self._graph(path, message)
            elif isinstance(message, FunctionProto):
                self._nodes(path, message.node)
                self._attributes(path, message.attribute_proto)
        return self.found

    def _tensor(self, path: str, tensor: TensorProto) -> None:
        if is_external(tensor):
            self.found.append(f"{path} ({_label('tensor', tensor.name)})" if tensor.name else path)

    def _model(self, path: str, model: ModelProto) -> None:
        if model.HasField("graph"):
            self.todo.append((f"{path} / {_label('graph', model.graph.name)}", model.graph))
        for function in model.functions:
            self.todo.append((f"{path} / {_label('function', function.name)}", function))
        for index, info in enumerate(model.training_info):
            self.todo.append((f"{path} / training_info[{index}].initialization", info.initialization))
            self.todo.append((f"{path} / training_info[{index}].algorithm", info.algorithm))

    def _graph(self, path: str, graph: GraphProto) -> None:
        for tensor in graph.initializer:
            self._tensor(f"{path} / {_label('initializer', tensor.name)}", tensor)
        for index, sparse in enumerate(graph.sparse_initializer):
            for part, tensor in _sparse(sparse):
                self._tensor(f"{path} / sparse_initializer[{index}].{part}", tensor)
        self._nodes(path, graph.node)

    def _nodes(self, path: str, nodes: list[NodeProto]) -> None:
        for index, node in enumerate(nodes):
            label = _label(f"node[{index}] {node.op_type}", node.name)
            self._attributes(f"{path} / {label}", node.attribute)

    def _attributes(self, path: str, attributes: list[AttributeProto]) -> None:
        for attr in attributes:
            where = f"{path} / {_label('attribute', attr.name)}"
            for field, tensor in _attribute_tensors(attr):
                self._tensor(f"{where}.{field}", tensor)
            for field, graph in _attribute_graphs(attr):
                self.todo.append((f"{where}.{field}", graph))


def external_data_references(model: ModelProto) -> list[str]:
    """Where the model's tensors refer to external data: one readable path per tensor, in no
    particular order; empty when every tensor is stored inside the model."""
    return _Walk(model).run()


def describe_references(references: list[str]) -> str:
    """One sentence naming the first :data:`MAX_REPORTED` references (never the file names they point to)."""
    shown = "; ".join(sorted(references)[:MAX_REPORTED])
    more = f" and {len(references) - MAX_REPORTED} more" if len(references) > MAX_REPORTED else ""
    return (
        f"the model keeps tensor data in external files, which is refused: {shown}{more}. "
        "Save the model as one self-contained file (onnx.save_model(model, path, save_as_external_data=False))"
    )
