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
- The message translation itself (and the refusal of shared-memory parameters: a region name
  would be resolved on the Triton host) is in grpc_codec.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from typing import NoReturn
from urllib.parse import unquote

import grpc
from django.conf import settings
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from apps.core.errors import ServiceError, _

from .grpc_codec import infer_body, infer_response, metadata_response
from .types import INFER, METADATA, READY, Inbound, Outbound

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
ERROR_CODE_KEY = "sovereign-error-code"  # trailing metadata: the stable refusal code
REQUEST_ID_KEY = "x-request-id"  # metadata in (optional, validated) and trailing metadata out
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

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
            ("grpc.max_concurrent_streams", settings.GATEWAY_MAX_CONNECTIONS),
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
                "invalid_request",
                _("the request is not a valid %(full_name)s message")
                % {"full_name": message_type.DESCRIPTOR.full_name},
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
            _("the request message did not arrive within %(message_timeout)s s (SOVEREIGN_GATEWAY_BODY_TIMEOUT)")
            % {"message_timeout": format(self.message_timeout, "g")},
            408,
        )
        await self._refused(_inbound(context, INFER, "", ""), err, context)

    async def _oversized(self, context) -> NoReturn:
        """No message arrived: grpc has already answered RESOURCE_EXHAUSTED for a message over the
        limit (or the client sent none). Only the audit event is left to write."""
        err = ServiceError(
            "request_too_large",
            _(
                "no request message was received: over the %(limit)s-byte limit "
                "(SOVEREIGN_MAX_REQUEST_BODY_BYTES) or none was sent"
            )
            % {"limit": self.limit},
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
