"""What a protocol adapter hands the data plane's pipeline, and what it gets back.

Adapters (KServe v2 over HTTP in asgi.py, KServe v2 over gRPC in grpc_adapter.py, OpenAI later)
translate their wire form into an `Inbound`, the pipeline answers with an `Outbound`, and the
adapter translates that back. The canonical request body is KServe v2's HTTP form: a JSON header,
optionally followed by binary tensors (`header_length` = Inference-Header-Content-Length).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from apps.core.errors import ServiceError

INFER, METADATA, READY = "infer", "metadata", "ready"
EVENT_TYPES = {INFER: "inference.infer", METADATA: "inference.metadata", READY: "inference.ready"}


@dataclass
class Inbound:
    kind: str  # INFER | METADATA | READY
    model: str
    version: str | None
    authorization: str | None  # the raw "Bearer …" value (HTTP header or gRPC metadata)
    peer: str | None  # the socket peer's address
    forwarded_for: str | None = None  # X-Forwarded-For, believed only from trusted proxies
    user_agent: str = ""
    request_id: str = ""
    protocol: str = "http"  # "http" | "grpc": recorded in the audit event
    body: bytes = b""  # INFER: JSON header (+ binary tensors)
    header_length: int | None = None
    content_type: str = "application/json"
    body_error: str | None = None  # "too_large" | "timeout" | "disconnected": the body could not be read whole
    # HTTP: the body is read only once the caller is authenticated and routed (an anonymous caller's
    # upload is never buffered): `await read_body(limit=None)` -> (body, body_error).
    read_body: Callable[..., Awaitable[tuple[bytes, str | None]]] | None = None


@dataclass
class Outbound:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)  # Content-Type, Inference-Header-Content-Length…
    error: ServiceError | None = None  # set when refused or failed: body is the JSON error
    retry_after: str | None = None  # for 429 / 503 upstream_busy
