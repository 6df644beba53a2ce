"""KServe v2 gRPC messages ↔ the KServe v2 HTTP form the data plane's pipeline speaks (JSON header
+ binary tensors, Triton's binary tensor extension). Pure functions, no I/O: grpc_adapter.py calls
them on the way in and out.

A ModelInferRequest becomes the body tritonclient.http would send for the same call; Triton's HTTP
answer becomes the ModelInferResponse Triton's own gRPC endpoint would send (every output in
raw_output_contents; BYTES with the same 4-byte length framing as HTTP binary). What cannot be
translated is a ServiceError with a stable code (the adapter refuses it through the pipeline).
Shared-memory parameters are refused: the caller's memory is not the gateway's, and a region name
would be resolved on the Triton host.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from apps.core.errors import ServiceError, _

from .types import Outbound

HEADER_LENGTH = "inference-header-content-length"
_compact = json.JSONEncoder(separators=(",", ":")).encode  # as tritonclient.http (rapidjson) writes JSON

# Typed InferTensorContents field per KServe datatype, and numpy dtypes for raw tensors.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def infer_body(request: pb.ModelInferRequest) -> tuple[bytes, int | None]:
    """The KServe v2 HTTP form of a ModelInferRequest: the JSON header tritonclient.http would
    send (same keys, same order, compact, ASCII-escaped) followed by the binary tensors;
    the header's length, or None when there are no binary tensors."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ServiceError(
            "invalid_request",
            _("raw_input_contents has %(n_raw)s entries for %(n_inputs)s inputs: give one per input, or none")
            % {"n_raw": len(raw), "n_inputs": len(request.inputs)},
        )
    header: dict = {}
    if request.id:
        header["id"] = request.id
    blobs: list[bytes] = []
    header["inputs"] = [_input(tensor, raw[i] if raw else None, blobs) for i, tensor in enumerate(request.inputs)]
    outputs = [_output(tensor) for tensor in request.outputs]
    if outputs:
        header["outputs"] = outputs
    parameters = _parameters(request.parameters, "the request")
    if not outputs:
        parameters["binary_data_output"] = True  # every output, each in binary, as tritonclient.http asks
    if parameters:
        header["parameters"] = parameters
    head = _compact(header).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _input(tensor, raw: bytes | None, blobs: list[bytes]) -> dict:
    where = f"input {tensor.name!r}"
    parameters = _parameters(tensor.parameters, where)
    out = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
    if raw is not None:
        if tensor.HasField("contents"):
            raise ServiceError(
                "invalid_request", _("%(where)s has both contents and raw_input_contents") % {"where": where}
            )
        parameters["binary_data_size"] = len(raw)
        blobs.append(raw)
        out["parameters"] = parameters
        return out
    data, binary = _contents(tensor, where)
    if binary is not None:
        parameters["binary_data_size"] = len(binary)
        blobs.append(binary)
    if parameters:
        out["parameters"] = parameters
    if binary is None:
        out["data"] = data
    return out


def _contents(tensor, where: str) -> tuple[list, bytes | None]:
    """Typed contents as JSON `data`, or as binary when JSON cannot carry them (BYTES that are not
    UTF-8, non-finite floats)."""
    field = _CONTENTS_FIELD.get(tensor.datatype)
    contents = tensor.contents
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        hint = field or "raw_input_contents"
        raise ServiceError(
            "invalid_request",
            _("%(where)s is %(datatype)s: give its values in %(hint)s, not %(value)s")
            % {"where": where, "datatype": tensor.datatype, "hint": hint, "value": others[0]},
        )
    if field is None:
        return [], None
    values = list(getattr(contents, field))
    if tensor.datatype == "BYTES":
        try:
            return [v.decode("utf-8") for v in values], None
        except UnicodeDecodeError:
            return [], b"".join(struct.pack("<I", len(v)) + v for v in values)
    if tensor.datatype in ("FP32", "FP64") and not all(math.isfinite(v) for v in values):
        return [], np.asarray(values, dtype=_NUMPY[tensor.datatype]).tobytes()
    if tensor.datatype in ("INT8", "INT16", "UINT8", "UINT16") and values:
        info = np.iinfo(_NUMPY[tensor.datatype])  # carried in 32-bit fields: refuse, do not wrap
        if min(values) < info.min or max(values) > info.max:
            raise ServiceError(
                "invalid_request",
                _("%(where)s has values out of range for %(datatype)s") % {"where": where, "datatype": tensor.datatype},
            )
    return values, None


def _output(tensor) -> dict:
    parameters = _parameters(tensor.parameters, f"output {tensor.name!r}")
    parameters["binary_data"] = True  # the answer is translated from binary tensors
    return {"name": tensor.name, "parameters": parameters}


def _parameters(params, where: str) -> dict:
    out = {}
    for key in sorted(params):  # protobuf maps have no order; a sorted one makes the body reproducible
        if key in _SHARED_MEMORY:
            raise ServiceError(
                "shared_memory_not_supported",
                _("%(where)s names a shared-memory region: the gateway forwards tensors only in the request")
                % {"where": where},
            )
        choice = params[key].WhichOneof("parameter_choice")
        if choice is None:
            raise ServiceError(
                "invalid_request", _("parameter %(key)s of %(where)s has no value") % {"key": repr(key), "where": where}
            )
        out[key] = getattr(params[key], choice)
    return out


# -- Outbound → responses ---------------------------------------------------------------------------
def infer_response(out: Outbound) -> pb.ModelInferResponse:
    """A ModelInferResponse from Triton's HTTP answer: JSON header + binary outputs (or JSON only);
    every output's values in raw_output_contents, as Triton's own gRPC endpoint sends them."""
    length = _header(out.headers, HEADER_LENGTH)
    body = out.body
    head, tail = (body[: int(length)], body[int(length) :]) if length is not None else (body, b"")
    header = json.loads(head)
    response = pb.ModelInferResponse(
        model_name=str(header.get("model_name", "")),
        model_version=str(header.get("model_version", "")),
        id=str(header.get("id", "")),
    )
    _set_parameters(response.parameters, header.get("parameters") or {})
    offset = 0
    for output in header.get("outputs") or []:
        parameters = dict(output.get("parameters") or {})
        size = parameters.pop("binary_data_size", None)
        tensor = response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        _set_parameters(tensor.parameters, parameters)
        if size is None:
            response.raw_output_contents.append(_raw_from_json(output["datatype"], output.get("data", [])))
            continue
        chunk = tail[offset : offset + int(size)]
        if len(chunk) != int(size):
            raise ValueError("the binary output is shorter than its binary_data_size")
        offset += int(size)
        response.raw_output_contents.append(chunk)
    return response


def _raw_from_json(datatype: str, data) -> bytes:
    flat = np.asarray(data, dtype=object).ravel().tolist() if data else []
    if datatype == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat]
        return b"".join(struct.pack("<I", len(v)) + v for v in items)
    return np.asarray(flat, dtype=_NUMPY[datatype]).tobytes()


def metadata_response(body: bytes) -> pb.ModelMetadataResponse:
    meta = json.loads(body)
    response = pb.ModelMetadataResponse(
        name=str(meta.get("name", "")),
        versions=[str(v) for v in meta.get("versions") or []],
        platform=str(meta.get("platform", "")),
    )
    for key in ("inputs", "outputs"):
        for tensor in meta.get(key) or []:
            getattr(response, key).add(
                name=tensor["name"], datatype=tensor["datatype"], shape=[int(d) for d in tensor["shape"]]
            )
    return response


def _set_parameters(target, params: dict) -> None:
    for key, value in params.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                target[key].uint64_param = value
            else:
                target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        elif isinstance(value, str):
            target[key].string_param = value
        else:
            target[key].string_param = json.dumps(value)


def _header(headers, name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
