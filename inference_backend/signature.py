"""Read the input/output signature of an ONNX model, in Triton's vocabulary."""

from __future__ import annotations

from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from inference_backend.onnx_external import describe_references, external_data_references

# ONNX element type -> Triton datatype string (KServe v2 protocol names).
_ONNX_TO_TRITON: dict[int, str] = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.DOUBLE: "FP64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.BOOL: "BOOL",
    TensorProto.STRING: "BYTES",
}

#: Triton datatype string -> numpy dtype name.
TRITON_TO_NUMPY: dict[str, str] = {
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "BOOL": "bool",
    "BYTES": "object",
}


class InvalidModelError(Exception):
    """The uploaded bytes are not a usable ONNX model.

    ``code`` is one of ``not_onnx``, ``onnx_external_data`` (a tensor keeps its data in a file
    outside the model, see :mod:`inference_backend.onnx_external`), ``invalid_onnx``,
    ``unsupported_dtype`` or ``unsupported_shape`` (a tensor of unknown rank; the checker
    normally rejects those first).
    """

    def __init__(self, code: str, message: str) -> None:
        """Store the machine-readable ``code`` next to the human-readable message."""
        super().__init__(message)
        self.code = code
        self.message = message


def _parse(data: bytes) -> onnx.ModelProto:
    if not data:
        raise InvalidModelError("not_onnx", "the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(data))
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidModelError("not_onnx", f"the file is not an ONNX model: {exc}") from None
    # Protobuf accepts many byte strings that are not models at all (unknown fields are kept):
    # a real model always names an IR version and holds a graph.
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise InvalidModelError("not_onnx", "the file is not an ONNX model (no IR version or no graph)")
    return model


def _tensor_entry(value: onnx.ValueInfoProto, kind: str) -> dict[str, Any]:
    if value.type.WhichOneof("value") != "tensor_type":
        raise InvalidModelError(
            "unsupported_dtype", f"{kind} {value.name!r} is a {value.type.WhichOneof('value')}, not a tensor"
        )
    tensor = value.type.tensor_type
    datatype = _ONNX_TO_TRITON.get(tensor.elem_type)
    if datatype is None:
        type_name = TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "UNDEFINED"
        raise InvalidModelError("unsupported_dtype", f"{kind} {value.name!r} has unsupported element type {type_name}")
    if not tensor.HasField("shape"):
        raise InvalidModelError("unsupported_shape", f"{kind} {value.name!r} has an unknown rank")
    shape = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else -1 for dim in tensor.shape.dim]
    return {"name": value.name, "datatype": datatype, "shape": shape}


def read_onnx_signature(data: bytes) -> dict[str, Any]:
    """Return ``{"inputs": [...], "outputs": [...], "batch_dynamic": bool}`` for serialized ONNX ``data``.

    Each entry is ``{"name", "datatype" (Triton string, e.g. "FP32"), "shape" (-1 = dynamic)}``.
    Graph inputs that are initializers are not model inputs and are left out.
    ``batch_dynamic`` is True when the first dimension of every input and output is dynamic.
    Raises :class:`InvalidModelError`.
    """
    model = _parse(data)
    # Before the checker: it resolves external-data names against the working directory too.
    references = external_data_references(model)
    if references:
        raise InvalidModelError("onnx_external_data", describe_references(references))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InvalidModelError("invalid_onnx", f"the ONNX checker rejected the model: {exc}") from None
    except Exception as exc:  # the checker raises other types for e.g. unsupported IR versions
        raise InvalidModelError("invalid_onnx", f"the ONNX checker rejected the model: {exc}") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer} | {init.name for init in graph.sparse_initializer}
    inputs = [_tensor_entry(v, "input") for v in graph.input if v.name not in initializers]
    outputs = [_tensor_entry(v, "output") for v in graph.output]
    tensors = inputs + outputs
    batch_dynamic = bool(inputs) and all(t["shape"] and t["shape"][0] == -1 for t in tensors)
    return {"inputs": inputs, "outputs": outputs, "batch_dynamic": batch_dynamic}


def breaking_changes(old: dict, new: dict) -> list[str]:
    """What a caller of `old` would find broken in `new` (two signatures as read_onnx_signature or the
    registry's language-model signature return): an input or output removed or renamed, a changed
    datatype, a changed rank or fixed dimension, a new input (callers do not send it), a kind change.
    Empty when `new` accepts every call `old` did and answers with the same outputs. Shared by the
    registry (at upload, against the previous version) and deployments (at rollout, against the live
    one), so both layers judge alike without importing each other."""
    if old.get("kind", "tensor") != new.get("kind", "tensor"):
        return [f"kind changed: {old.get('kind', 'tensor')} → {new.get('kind', 'tensor')}"]
    if old.get("kind") == "llm":
        return []  # chat models share the chat API: their answers keep their shape
    changes: list[str] = []
    for side in ("inputs", "outputs"):
        before = {t["name"]: t for t in old.get(side, [])}
        after = {t["name"]: t for t in new.get(side, [])}
        noun = side[:-1]
        for name in sorted(set(before) - set(after)):
            changes.append(f"{noun} {name!r} removed or renamed")
        if side == "inputs":
            changes.extend(f"input {name!r} added" for name in sorted(set(after) - set(before)))
        for name in sorted(set(before) & set(after)):
            a, b = before[name], after[name]
            if a.get("datatype") != b.get("datatype"):
                changes.append(f"{noun} {name!r} datatype {a.get('datatype')} → {b.get('datatype')}")
            sa, sb = list(a.get("shape", [])), list(b.get("shape", []))
            if len(sa) != len(sb):
                changes.append(f"{noun} {name!r} rank {len(sa)} → {len(sb)}")
            elif any(x != y and y != -1 for x, y in zip(sa, sb, strict=True)):
                changes.append(f"{noun} {name!r} shape {sa} → {sb}")
    if old.get("batch_dynamic") and not new.get("batch_dynamic", False):
        changes.append("batching: the first dimension is no longer dynamic")
    return changes
