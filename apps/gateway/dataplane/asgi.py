"""The data plane's HTTP front: a raw ASGI application (no framework: every microsecond counts).

- `/v2/models/{name}[/versions/{v}]`, `…/ready`, `…/infer`: KServe v2 over HTTP, Triton's own
  protocol including the binary tensor extension, so an unmodified `tritonclient.http` works with
  `Authorization: Bearer <token>`. Each call goes through the pipeline (pipeline.py).
- `/v2/…` otherwise: 404 `not_found` (JSON), like the portal's unknown URLs.
- `/v1/chat/completions`, `/v1/completions`, `/v1/models`: the OpenAI-compatible API for language
  models (openai.py), on the same pipeline.
- `/dataplane/healthz`: public liveness and snapshot age, for probes.
- everything else: relayed to the portal when `portal_upstream` is set (`make run`, where one
  port serves both planes), else 404. In production nginx sends `/v2/` and `/v1/` here and
  the rest to the portal (docs/production.md).
"""

from __future__ import annotations

import asyncio
import json
import re
from functools import partial

from django.conf import settings

from apps.core.errors import ServiceError, _
from apps.core.netaddr import client_address, trusted_proxies

from ..protocol import HEADER_LENGTH
from .pipeline import JSON, error_outbound, new_request_id
from .types import INFER, METADATA, READY, Inbound, Outbound

_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"expect",  # the relay sends whole bodies; a 100 Continue is not the client's to ask for
    }
)
_KIND = {None: METADATA, "/ready": READY, "/infer": INFER}
_METHOD = {METADATA: "GET", READY: "GET", INFER: "POST"}


def _header(headers: list, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class DataPlaneApp:
    """The ASGI callable. `pipeline` is a pipeline.Pipeline; `portal_upstream` an http URL."""

    def __init__(self, pipeline, *, portal_upstream: str | None = None, health=None, openai=None):
        self.pipeline = pipeline
        self.openai = openai  # openai.OpenAIAdapter: /v1/…
        self.portal_upstream = portal_upstream.rstrip("/") if portal_upstream else None
        self.health = health  # () -> dict, for /dataplane/healthz

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":  # the process owner (run_dataplane) starts and stops the parts
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith("/v2/"):
            await self._kserve(scope, receive, send, path)
        elif path.startswith("/v1/") and self.openai is not None:
            await self.openai(scope, receive, send)
        elif path == "/dataplane/healthz":
            body = json.dumps({"status": "ok", **(self.health() if self.health else {})}).encode()
            await _answer(send, Outbound(200, body, [("Content-Type", JSON)]), "")
        elif self.portal_upstream is not None:
            await self._relay(scope, receive, send)
        else:
            err = ServiceError("not_found", _("no such URL on the data plane"), 404)
            await _answer(send, error_outbound(err), new_request_id())

    async def _kserve(self, scope, receive, send, path: str) -> None:
        headers = scope["headers"]
        incoming = _header(headers, b"x-request-id") or ""
        request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        match = _MODEL_PATH.match(path)
        if match is None:
            err = ServiceError("not_found", _("no such URL: %(value)s") % {"value": path[:200]}, 404)
            await _answer(send, error_outbound(err), request_id)
            return
        name, version, tail = match.groups()
        kind = _KIND[tail]
        if scope["method"] != _METHOD[kind] and not (scope["method"] == "HEAD" and kind != INFER):
            err = ServiceError("method_not_allowed", _("use %(value)s for this URL") % {"value": _METHOD[kind]}, 405)
            out = error_outbound(err)
            out.headers.append(("Allow", _METHOD[kind]))
            await _answer(send, out, request_id)
            return
        client = scope.get("client")
        inbound = Inbound(
            kind=kind,
            model=name,
            version=version,
            authorization=_header(headers, b"authorization"),
            peer=client[0] if client else None,
            forwarded_for=_header(headers, b"x-forwarded-for"),
            user_agent=_header(headers, b"user-agent") or "",
            request_id=request_id,
        )
        if kind == INFER:
            inbound.content_type = _header(headers, b"content-type") or JSON
            length = _header(headers, HEADER_LENGTH.lower().encode())
            if length is not None:
                try:
                    inbound.header_length = int(length)
                except ValueError:
                    inbound.header_length = -1  # refused by the request checks with their code
            inbound.read_body = partial(_read_body, receive, headers)  # after authentication and routing
        out = await self.pipeline.handle(inbound)
        await _answer(send, out, request_id, head=scope["method"] == "HEAD")

    async def _relay(self, scope, receive, send) -> None:
        """The portal behind the same port (`make run`): method, path, headers and body pass
        through as they come, streamed both ways; X-Forwarded-For names the client."""
        # Names with "_" are dropped, as nginx does: gunicorn maps them onto CGI variables (SCRIPT_NAME…).
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in _HOP_BY_HOP and b"_" not in k
        ]
        host = _header(scope["headers"], b"host")
        if host:
            headers.append(("Host", host))
        client = scope.get("client")
        # The client as this hop determined it (X-Forwarded-For believed only from its own trusted
        # proxies), alone: the portal trusts this loopback hop, so a chain passed on as it came
        # would let any caller name its own address in the portal's audit log and limits.
        address = client_address(
            client[0] if client else None, _header(scope["headers"], b"x-forwarded-for"), trusted_proxies()
        )
        headers.append(("X-Forwarded-For", address or ""))
        headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
        length = _header(scope["headers"], b"content-length")
        chunked = (_header(scope["headers"], b"transfer-encoding") or "").lower() == "chunked"
        url = self.portal_upstream + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        body: bytes | tuple = b""
        if length or chunked:
            body = (_body_chunks(receive), int(length) if length and length.isdigit() else None)
        try:
            upstream = await self.pipeline.pool.request(
                scope["method"], url, headers, body, timeout=settings.PORTAL_RELAY_TIMEOUT, stream=True
            )
        except ServiceError:
            err = ServiceError("portal_unavailable", _("the portal is not answering; try again shortly"), 502)
            await _answer(send, error_outbound(err), new_request_id())
            return
        out_headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in upstream.headers.items()
            if k.encode("latin-1") not in _HOP_BY_HOP or k == "content-length"
        ]
        await send({"type": "http.response.start", "status": upstream.status, "headers": out_headers})
        try:
            async for chunk in upstream.iter_chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ServiceError:
            upstream.close()
        except Exception:
            upstream.close()
            raise
        await send({"type": "http.response.body", "body": b""})


async def _body_chunks(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def _read_body(receive, headers, limit: int | None = None) -> tuple[bytes, str | None]:
    """The whole body, or (b"", why not): too large (refused before it is read, when the
    Content-Length says so), too slow, or the client went away. `limit`: a lower bound than
    SOVEREIGN_MAX_REQUEST_BODY_BYTES (a de-identified model's)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE if limit is None else min(limit, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    declared = _header(headers, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"", "too_large"
    parts, size = [], 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.GATEWAY_BODY_TIMEOUT
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return b"", "timeout"
        try:
            async with asyncio.timeout(remaining):
                message = await receive()
        except TimeoutError:
            return b"", "timeout"
        if message["type"] == "http.disconnect":
            return b"", "disconnected"
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", "too_large"
        parts.append(chunk)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts), None


async def _answer(send, out: Outbound, request_id: str, *, head: bool = False) -> None:
    headers = [(b"content-length", str(len(out.body)).encode())]
    for name, value in out.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    if out.retry_after:
        headers.append((b"retry-after", str(out.retry_after).encode()))
    await send({"type": "http.response.start", "status": out.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else out.body})
