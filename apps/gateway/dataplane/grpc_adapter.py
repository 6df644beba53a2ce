"""KServe v2 over gRPC (Triton's `inference.GRPCInferenceService`), so that an unmodified
`tritonclient.grpc` works against the gateway with `headers={"authorization": "Bearer <token>"}`.

The adapter only translates: a ModelInferRequest becomes the KServe v2 *HTTP* form (JSON header +
binary tensors) in an `Inbound`, the one pipeline (authenticate → route → limit → de-identify →
forward → audit) answers with an `Outbound`, and that becomes a ModelInferResponse or a gRPC status.
So every check, refusal code and audit event is the HTTP path's.

Choices, and why:
- Requests arrive as raw bytes and are parsed here (not by grpc), so a malformed message is a
  clear INVALID_ARGUMENT (`invalid_request`) that can be audited, not grpc's bare INTERNAL.
- ModelInfer is served as a stream→unary method reading one message: a message over
  `max_message_bytes` is refused by grpc itself (RESOURCE_EXHAUSTED "Received message larger than
  max", before any byte is buffered past the limit — also after decompression), and the handler
  then sees a call with no message, which it reports as `request_too_large` for the audit. A
  message that has not arrived within `message_timeout` is refused as `request_timeout`. (Unary
  ModelReady/ModelMetadata are read by grpc before any handler runs: a slow sender holds no task.)
- ServerLive / ServerReady are public and answered locally, like Triton's own health endpoints:
  they say nothing about any model or caller, and load balancers probe them without a token.
- The pipeline runs in its own task, shielded from the call's cancellation: a client that hangs
  up or whose deadline passes gets its status from grpc at once, while the pipeline finishes
  (forward bounded by the upstream timeout, audit event written) exactly as for an HTTP client
  that disconnected. Nothing is left waiting on the dead call.
- Shared-memory parameters are refused: the caller's memory is not the gateway's, and a region
  name would be resolved on the Triton host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import struct
from collections.abc import Awaitable, Callable
from typing import NoReturn
from urllib.parse import unquote

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from apps.core.errors import ServiceError

from .types import INFER, METADATA, READY, Inbound, Outbound

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
ERROR_CODE_KEY = "sovereign-error-code"  # trailing metadata: the stable refusal code
REQUEST_ID_KEY = "x-request-id"  # metadata in (optional, validated) and trailing metadata out
HEADER_LENGTH = "inference-header-content-length"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_compact = json.JSONEncoder(separators=(",", ":")).encode  # as tritonclient.http (rapidjson) writes JSON

Handle = Callable[[Inbound], Awaitable[Outbound]]
Refuse = Callable[[Inbound, ServiceError], Awaitable[Outbound]]

# HTTP status of an Outbound → gRPC status code.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

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
# Calls that Triton's service defines and the gateway does not offer, with what to use instead.
_CONTROL_PLANE = "model management, configuration, statistics, shared memory and logging are not offered by the gateway"
_NOT_OFFERED = {
    "ServerMetadata": "ServerMetadata is not offered by the gateway; ask ModelMetadata of a model",
    "ModelConfig": f"ModelConfig: {_CONTROL_PLANE}; read the model in the portal",
    "ModelStatistics": f"ModelStatistics: {_CONTROL_PLANE}; the portal shows usage",
    "RepositoryIndex": f"RepositoryIndex: {_CONTROL_PLANE}; list models in the portal",
    "RepositoryModelLoad": f"RepositoryModelLoad: {_CONTROL_PLANE}; deploy through the portal",
    "RepositoryModelUnload": f"RepositoryModelUnload: {_CONTROL_PLANE}; undeploy through the portal",
    "SystemSharedMemoryStatus": f"SystemSharedMemoryStatus: {_CONTROL_PLANE}",
    "SystemSharedMemoryRegister": f"SystemSharedMemoryRegister: {_CONTROL_PLANE}",
    "SystemSharedMemoryUnregister": f"SystemSharedMemoryUnregister: {_CONTROL_PLANE}",
    "CudaSharedMemoryStatus": f"CudaSharedMemoryStatus: {_CONTROL_PLANE}",
    "CudaSharedMemoryRegister": f"CudaSharedMemoryRegister: {_CONTROL_PLANE}",
    "CudaSharedMemoryUnregister": f"CudaSharedMemoryUnregister: {_CONTROL_PLANE}",
    "TraceSetting": f"TraceSetting: {_CONTROL_PLANE}",
    "LogSettings": f"LogSettings: {_CONTROL_PLANE}",
    "ModelStreamInfer": "ModelStreamInfer (streaming inference) is not offered yet; use ModelInfer",
}


def build_grpc_server(
    handle: Handle,
    *,
    bind: str,
    max_message_bytes: int,
    refuse: Refuse | None = None,
    ready: Callable[[], bool] | None = None,
    credentials: grpc.ServerCredentials | None = None,
    message_timeout: float = 30.0,
) -> grpc.aio.Server:
    """A grpc.aio server (not started: `await server.start()` in the serving loop) offering
    GRPCInferenceService on `bind` ("host:port"). `handle` is the pipeline's. `refuse(inbound,
    err)`, if given, authenticates and audits a refusal the adapter made itself (a malformed or
    oversized message) and answers it; without it such refusals are answered here and only logged.
    `ready()` answers ServerReady (default: serving means ready). A ModelInfer message that has not
    arrived whole `message_timeout` seconds after the call began is refused (`request_timeout`, as
    SOVEREIGN_GATEWAY_BODY_TIMEOUT does for HTTP bodies)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ]
    )
    server.add_generic_rpc_handlers([_Service(handle, refuse, ready, max_message_bytes, message_timeout)])
    if credentials is not None:
        server.add_secure_port(bind, credentials)
    else:
        server.add_insecure_port(bind)
    return server


class _Service(grpc.GenericRpcHandler):
    def __init__(self, handle: Handle, refuse: Refuse | None, ready, limit: int, message_timeout: float):
        self.handle, self.refuse, self.ready, self.limit = handle, refuse, ready, limit
        self.message_timeout = message_timeout
        self.inflight: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self.handlers = {
            "ServerLive": _unary(self.server_live, pb.ServerLiveResponse),
            "ServerReady": _unary(self.server_ready, pb.ServerReadyResponse),
            "ModelReady": _unary(self.model_ready, pb.ModelReadyResponse),
            "ModelMetadata": _unary(self.model_metadata, pb.ModelMetadataResponse),
            "ModelInfer": grpc.stream_unary_rpc_method_handler(
                self.model_infer, response_serializer=pb.ModelInferResponse.SerializeToString
            ),
        }

    def service(self, handler_call_details):
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if service != SERVICE:
            return None  # grpc answers UNIMPLEMENTED "Method not found!"
        handler = self.handlers.get(method)
        if handler is None and method == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(_not_offered_stream(_NOT_OFFERED[method]))
        if handler is None:
            detail = _NOT_OFFERED.get(method, f"{method} is not a call the gateway offers")
            return grpc.unary_unary_rpc_method_handler(_not_offered(detail))
        return handler

    # -- health: public, local -----------------------------------------------------------------
    async def server_live(self, raw: bytes, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, raw: bytes, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True if self.ready is None else bool(self.ready()))

    # -- model calls: through the pipeline -------------------------------------------------------
    async def model_ready(self, raw: bytes, context) -> pb.ModelReadyResponse:
        request = await self._parse(pb.ModelReadyRequest, raw, READY, context)
        inbound = _inbound(context, READY, request.name, request.version)
        out = await self._call(inbound, context)
        if out.status < 400 and out.error is None:
            return pb.ModelReadyResponse(ready=True)
        code, _ = _error_of(out)
        if code.startswith("triton_"):
            # Triton answered "not ready" (400) or could not be reached: the model is not ready.
            # The gateway's own refusals (token, grant, route, rate, audit) stay errors.
            return pb.ModelReadyResponse(ready=False)
        await _abort(context, out, inbound.request_id)

    async def model_metadata(self, raw: bytes, context) -> pb.ModelMetadataResponse:
        request = await self._parse(pb.ModelMetadataRequest, raw, METADATA, context)
        inbound = _inbound(context, METADATA, request.name, request.version)
        out = await self._call(inbound, context)
        if out.status >= 400 or out.error is not None:
            await _abort(context, out, inbound.request_id)
        try:
            return metadata_response(out.body)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            await _unreadable(context, "metadata", err)

    async def model_infer(self, requests, context) -> pb.ModelInferResponse:
        try:
            async with asyncio.timeout(self.message_timeout):  # no extra task, unlike wait_for
                raw = await _first(requests)
        except TimeoutError:
            await self._slow(context)
        if raw is None:
            await self._oversized(context)
        request = await self._parse(pb.ModelInferRequest, raw, INFER, context)
        inbound = _inbound(context, INFER, request.model_name, request.model_version)
        try:
            inbound.body, inbound.header_length = infer_body(request)
        except ServiceError as err:
            await self._refused(inbound, err, context)
        out = await self._call(inbound, context)
        if out.status >= 400 or out.error is not None:
            await _abort(context, out, inbound.request_id)
        try:
            response = infer_response(out)
        except (ValueError, TypeError, KeyError, AttributeError, struct.error) as err:
            await _unreadable(context, "inference", err)
        return response

    # -- plumbing ------------------------------------------------------------------------------
    async def _call(self, inbound: Inbound, context) -> Outbound:
        out = await self._shielded(self.handle(inbound), inbound)
        if inbound.request_id:  # the pipeline names the call when the client did not
            context.set_trailing_metadata(((REQUEST_ID_KEY, inbound.request_id),))
        return out

    async def _shielded(self, work: Awaitable[Outbound], inbound: Inbound) -> Outbound:
        """Run the pipeline in its own task: the call's cancellation (client gone, deadline
        passed) ends the wait, not the pipeline, whose audit event must still be written."""
        task = asyncio.ensure_future(work)
        self.inflight.add(task)
        task.add_done_callback(self._finished)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            logger.info(
                "gRPC %s call %s for %r ended by the client (cancelled or past its deadline); the pipeline finishes it",
                inbound.kind,
                inbound.request_id,
                inbound.model,
            )
            raise

    def _finished(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("the pipeline failed on a gRPC call", exc_info=task.exception())

    async def _parse(self, message_type, raw: bytes, kind: str, context):
        try:
            return message_type.FromString(raw)
        except DecodeError:
            err = ServiceError(
                "invalid_request", f"the request is not a valid {message_type.DESCRIPTOR.full_name} message"
            )
            await self._refused(_inbound(context, kind, "", ""), err, context)

    async def _refused(self, inbound: Inbound, err: ServiceError, context) -> NoReturn:
        """End the call with the adapter's own refusal, audited through `refuse` when the pipeline
        offers it (which authenticates first: a bad token is still answered as a bad token)."""
        if self.refuse is None:
            logger.warning("gRPC %s call refused (%s): %s", inbound.kind, err.code, err.detail)
            out = _refusal(err)
        else:
            out = await self._shielded(self.refuse(inbound, err), inbound)
            if out.error is None and out.status < 400:  # a refuse that forgot to refuse still refuses
                out = _refusal(err)
        await _abort(context, out, inbound.request_id)

    async def _slow(self, context) -> NoReturn:
        err = ServiceError(
            "request_timeout",
            f"the request message did not arrive within {self.message_timeout:g} s (SOVEREIGN_GATEWAY_BODY_TIMEOUT)",
            408,
        )
        await self._refused(_inbound(context, INFER, "", ""), err, context)

    async def _oversized(self, context) -> NoReturn:
        """No message arrived: grpc has already answered RESOURCE_EXHAUSTED for a message over the
        limit (or the client sent none). Only the audit event is left to write."""
        err = ServiceError(
            "request_too_large",
            f"no request message was received: over the {self.limit}-byte limit (SOVEREIGN_MAX_REQUEST_BODY_BYTES)"
            " or none was sent",
            413,
        )
        await self._refused(_inbound(context, INFER, "", ""), err, context)


async def _first(requests) -> bytes | None:
    """The call's one message (a unary call), without waiting for the half-close (and measured
    faster than context.read()); None if none arrived: over the size limit, or none sent."""
    async for raw in requests:
        return raw
    return None


# -- Inbound --------------------------------------------------------------------------------------
def _inbound(context, kind: str, model: str, version: str) -> Inbound:
    meta = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            meta.setdefault(key, value)
    rid = meta.get(REQUEST_ID_KEY, "")
    return Inbound(
        kind=kind,
        model=model,
        version=version or None,
        authorization=meta.get("authorization"),
        peer=peer_address(context.peer()),
        forwarded_for=meta.get("x-forwarded-for"),
        user_agent=meta.get("user-agent", ""),
        request_id=rid if rid and _VALID_REQUEST_ID.match(rid) else "",  # "": the pipeline makes one
        protocol="grpc",
    )


def peer_address(peer: str | None) -> str | None:
    """The address in grpc's peer string: "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678" (the brackets
    percent-encoded by newer grpc); None for a unix socket or anything else."""
    if not peer:
        return None
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        if rest.startswith("["):
            return rest[1:].partition("]")[0] or None
        return rest.rpartition(":")[0] or None
    return None


def infer_body(request: pb.ModelInferRequest) -> tuple[bytes, int | None]:
    """The KServe v2 HTTP form of a ModelInferRequest: the JSON header tritonclient.http would
    send (same keys, same order, compact, ASCII-escaped) followed by the binary tensors;
    the header's length, or None when there are no binary tensors."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ServiceError(
            "invalid_request",
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: give one per input, or none",
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
            raise ServiceError("invalid_request", f"{where} has both contents and raw_input_contents")
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
            "invalid_request", f"{where} is {tensor.datatype}: give its values in {hint}, not {others[0]}"
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
            raise ServiceError("invalid_request", f"{where} has values out of range for {tensor.datatype}")
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
                f"{where} names a shared-memory region: the gateway forwards tensors only in the request",
            )
        choice = params[key].WhichOneof("parameter_choice")
        if choice is None:
            raise ServiceError("invalid_request", f"parameter {key!r} of {where} has no value")
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


# -- errors ------------------------------------------------------------------------------------------
def _error_of(out: Outbound) -> tuple[str, str]:
    if out.error is not None:
        return out.error.code, out.error.detail
    try:
        body = json.loads(out.body)
        return str(body.get("code") or "upstream_error"), str(body.get("detail") or body.get("error") or "")
    except (ValueError, AttributeError):
        return "upstream_error", out.body.decode(errors="replace")[:500]


def _refusal(err: ServiceError) -> Outbound:
    return Outbound(err.status_code, json.dumps(err.as_dict()).encode(), [("Content-Type", "application/json")], err)


async def _abort(context, out: Outbound, request_id: str | None = None) -> NoReturn:
    """End the call with the status for the Outbound's HTTP status; "<code>: <detail>" as details,
    the code (and Retry-After, the request id) in trailing metadata. Raises, as context.abort does."""
    code, detail = _error_of(out)
    trailing = [(ERROR_CODE_KEY, code)]
    if out.retry_after:
        trailing.append(("retry-after", str(out.retry_after)))
    if request_id:
        trailing.append((REQUEST_ID_KEY, request_id))
    status = STATUS_CODES.get(out.status, grpc.StatusCode.INTERNAL)
    await context.abort(status, f"{code}: {detail}", trailing_metadata=tuple(trailing))


async def _unreadable(context, what: str, err: Exception) -> NoReturn:
    logger.error("the %s answer could not be translated to gRPC: %s: %s", what, type(err).__name__, err)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        "upstream_unreadable: the inference server's answer could not be translated to gRPC",
        trailing_metadata=((ERROR_CODE_KEY, "upstream_unreadable"),),
    )


def _unary(fn, response_type):
    return grpc.unary_unary_rpc_method_handler(fn, response_serializer=response_type.SerializeToString)


def _not_offered(detail: str):
    async def handler(raw, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, detail)

    return handler


def _not_offered_stream(detail: str):
    async def handler(requests, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, detail)
        yield  # pragma: no cover - makes this an async generator, as a stream→stream handler is

    return handler
