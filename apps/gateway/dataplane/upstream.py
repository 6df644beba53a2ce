"""The data plane's HTTP/1.1 client to Triton servers (and, under `make run`, to the portal):
keep-alive connections pooled per server, a raw `asyncio.Protocol` with httptools' parser.

Why not aiohttp or httpx: on these machines aiohttp cost about 3× and httpx 10× the CPU per call
of this client (../shared/GATEWAY_NOTES.md), and the gateway's whole budget is ≈ 1 ms.

Per server:
- at most `max_connections` calls in flight; beyond that, up to `max_waiting` callers queue
  (in order) for a connection, and the next one is refused at once with 503 `upstream_busy` and
  `Retry-After` — back-pressure instead of an unbounded queue that turns overload into timeouts;
- every NEW connection obeys the Triton server policy (inference_backend.netpolicy: the host is
  resolved once, every address checked, the connection made to a checked address) and, for https,
  the pinned CA and client certificate (apps/deployments/transport settings); reused keep-alive
  connections cost nothing extra;
- a reused connection that the server had closed (keep-alive race) is retried once on a new one,
  only when not a byte of the answer had arrived;
- connect and read timeouts end in 504 `triton_timeout`, refusals in 503 `triton_unavailable`,
  TLS failures in 502 `triton_tls_failed`, a refused address in 502 `triton_address_refused`.
  The caller gets a generic text; the server log gets the detail.

Answers are read whole (`request`) or streamed (`stream`: status and headers first, then the body
chunk by chunk — server-sent events pass through as they arrive).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from apps.core.errors import ServiceError, _
from inference_backend.client import clean_upstream_text
from inference_backend.netpolicy import AddressRefused, ServerPolicy
from inference_backend.transport import TlsConfig

log = logging.getLogger(__name__)
_EOF = object()
_MAX_QUEUED_CHUNKS = 16  # a streamed answer's chunks held for a slow reader before reading pauses


class UpstreamFailure(Exception):
    """A transport failure before or while reading an answer (no status yet, or a cut body)."""

    def __init__(self, kind: str, detail: str, *, reused: bool = False, received: bool = False):
        super().__init__(detail)
        self.kind, self.reused, self.received = kind, reused, received


class UpstreamError(ServiceError):
    """A transport failure as the caller sees it (its code and text), with what the balancer needs:
    `before_answer` (not a byte of the answer arrived: another replica may take the call) and
    `retryable` (also not a read timeout: the call may be sent again elsewhere)."""

    def __init__(self, code: str, detail: str, status: int, *, kind: str, before_answer: bool, cause: str = ""):
        super().__init__(code, detail, status)
        self.kind, self.before_answer, self.cause = kind, before_answer, cause
        self.retryable = before_answer and kind != "timeout"


class UpstreamBusy(ServiceError):
    """503 `upstream_busy`: every connection to the server is in use and the queue is full."""

    retry_after = "1"

    def __init__(self):
        super().__init__("upstream_busy", _("the inference server is at capacity; retry in a second"), 503)


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    _chunks: asyncio.Queue | None = field(default=None, repr=False)
    _conn: _Connection | None = field(default=None, repr=False)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (streamed responses only)."""
        assert self._chunks is not None, "not a streamed response"
        while True:
            item = await self._chunks.get()
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                raise item
            conn = self._conn
            if conn is not None and conn.transport is not None and self._chunks.qsize() < _MAX_QUEUED_CHUNKS // 2:
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    conn.transport.resume_reading()
            yield item

    def close(self) -> None:
        """Give up a streamed answer early: the connection is closed, not reused."""
        if self._conn is not None:
            self._conn.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, server: _Server):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.uses = 0
        self._reset(None)
        self._can_write = asyncio.Event()
        self._can_write.set()

    def _reset(self, future):
        self.future: asyncio.Future | None = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.chunks: asyncio.Queue | None = None
        self.complete = False
        self.received = False
        self.active = future is not None  # a call is using this connection
        self.informational = False

    # asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamFailure("protocol", "the server asked for a protocol upgrade", received=True))
        except httptools.HttpParserError as err:
            self._fail(UpstreamFailure("protocol", f"malformed HTTP answer: {err}", received=True))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.forget(self)
        if self.active and not self.complete:
            detail = f"connection closed by the server ({exc})" if exc else "connection closed by the server"
            self._fail(UpstreamFailure("closed", detail, reused=self.uses > 1, received=self.received))

    def pause_writing(self):
        self._can_write.clear()

    def resume_writing(self):
        self._can_write.set()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # informational (100 Continue…): the answer is still to come
            self.informational = True
            self.headers = {}
            return
        if self.chunks is not None and self.future is not None and not self.future.done():
            self.future.set_result(Response(self.status, self.headers, _chunks=self.chunks, _conn=self))

    def on_body(self, body: bytes) -> None:
        if self.informational:
            return
        if self.chunks is not None:
            self.chunks.put_nowait(body)
            if self.chunks.qsize() >= _MAX_QUEUED_CHUNKS and self.transport is not None:
                self.transport.pause_reading()  # a slow reader: stop taking the upstream's bytes
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if not self.active:  # an answer nobody asked for: this connection cannot be trusted again
            self.abort()
            return
        self.complete = True
        keep = self.parser.should_keep_alive()
        if self.chunks is not None:
            self.chunks.put_nowait(_EOF)
        elif self.future is not None and not self.future.done():
            self.future.set_result(Response(self.status, self.headers, b"".join(self.body)))
        self.future = None
        self.active = False
        if keep and not self.closed:
            self.server.release(self)
        else:
            self.abort()
            self.server.release(None)

    # ours
    def _fail(self, err: BaseException) -> None:
        if not self.active:  # between calls (idle) or already settled: nothing waits on this
            if not self.closed:
                self.abort()
            return
        self.active = False
        if self.future is not None and not self.future.done():
            self.future.set_exception(err)
        elif self.chunks is not None:
            self.chunks.put_nowait(err)
        self.future = None
        if not self.closed:
            self.abort()
        self.server.release(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def timeout(self) -> None:
        self._fail(UpstreamFailure("timeout", "the server did not answer in time", received=self.received))


class _Server:
    """The pool of one (scheme, host, port)."""

    def __init__(self, pool: UpstreamPool, scheme: str, host: str, port: int):
        self.pool, self.scheme, self.host, self.port = pool, scheme, host, port
        self.idle: collections.deque[_Connection] = collections.deque()
        self.busy = 0  # calls holding a connection (or opening one)
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.in_flight: set[_Connection] = set()  # connections a call is waiting on

    def abandon(self, why: str) -> int:
        """Fail every call still waiting on this server without a byte of its answer, as a connection
        that dropped before answering (retryable: inference is idempotent, the gateway sends it to
        another replica). For a server the gateway has given up on: a process killed without its
        children can leave its accepted connections open and silent until the read timeout."""
        abandoned = 0
        for conn in list(self.in_flight):
            if conn.active and not conn.received and conn.chunks is None:
                conn._fail(UpstreamFailure("closed", why))
                abandoned += 1
        return abandoned

    def forget(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):  # not idle: in use or never pooled
            self.idle.remove(conn)

    async def acquire(self) -> _Connection | None:
        """An idle connection, or None: the caller opens one. Waits (bounded) when all are busy."""
        if self.busy >= self.pool.max_connections:
            if len(self.waiters) >= self.pool.max_waiting:
                raise UpstreamBusy()
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter  # handed over by release(): busy stays counted
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release(waiter.result())  # it was handed to us just as we gave up
                else:
                    self.waiters.remove(waiter)
                raise
            return conn
        self.busy += 1
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: _Connection | None) -> None:
        """A call is done with its connection (None: it is gone). The next waiter gets it."""
        if conn is not None and conn.closed:
            conn = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                if conn is None:
                    while self.idle and conn is None:
                        candidate = self.idle.pop()
                        conn = None if candidate.closed else candidate
                waiter.set_result(conn)
                return
        self.busy -= 1
        if conn is not None:
            self.idle.append(conn)


class UpstreamPool:
    """Pooled keep-alive connections to every server this process forwards to."""

    def __init__(
        self,
        policy: ServerPolicy,
        tls: TlsConfig | None = None,
        *,
        max_connections: int = 64,
        max_waiting: int = 256,
        connect_timeout: float = 3.0,
        quiet: bool = False,
    ):
        self.policy = policy
        self.quiet = quiet  # failures logged at debug (the balancer's metrics reads: their own log)
        self.tls = tls or TlsConfig()
        self.max_connections = max_connections
        self.max_waiting = max_waiting
        self.connect_timeout = connect_timeout
        self._servers: dict[tuple[str, str, int], _Server] = {}
        self._ssl: ssl.SSLContext | None = None

    def _server(self, url: str) -> tuple[_Server, str]:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in ("http", "https"):
            raise ServiceError("triton_address_refused", _("the inference server's address is not http(s)"), 502)
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname or ""
        key = (scheme, host, port)
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = _Server(self, scheme, host, port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return server, path

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.tls.ca_file or None)  # a pinned CA replaces the system store
            if self.tls.client_cert_file:
                ctx.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file or None)
            self._ssl = ctx
        return self._ssl

    async def _open(self, server: _Server) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            ipaddress.ip_address(server.host)
            addresses = self.policy.resolve(server.host, server.port)  # a literal: no lookup
        except ValueError:
            addresses = await loop.run_in_executor(None, self.policy.resolve, server.host, server.port)
        self.policy.check_transport(server.scheme, server.host, addresses)  # AddressRefused
        error: Exception | None = None
        for address in addresses:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(server),
                        str(address),
                        server.port,
                        ssl=self.ssl_context() if server.scheme == "https" else None,
                        server_hostname=server.host if server.scheme == "https" else None,
                    ),
                    self.connect_timeout,
                )
                return conn
            except TimeoutError:
                error = UpstreamFailure("connect_timeout", f"connecting to {server.host}:{server.port} timed out")
            except ssl.SSLError as err:
                error = UpstreamFailure("tls", f"TLS with {server.host}: {err}")
            except OSError as err:
                error = UpstreamFailure("refused", f"connecting to {server.host}:{server.port}: {err}")
        raise error or UpstreamFailure("refused", f"{server.host} resolved to no address")

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | tuple = b"",
        *,
        timeout: float = 30.0,
        stream: bool = False,
    ) -> Response:
        """One call. Raises ServiceError with a stable code on any transport failure."""
        server, path = self._server(url)
        for attempt in (1, 2):
            try:
                return await self._attempt(server, method, path, headers or [], body, timeout, stream)
            except UpstreamFailure as err:
                if attempt == 1 and err.reused and not err.received and not isinstance(body, tuple):
                    continue  # the server had closed this idle connection: once more on a new one
                raise self._service_error(err) from None
            except AddressRefused as err:
                log.warning("inference server address refused by the server policy: %s", err.message)
                raise ServiceError(
                    "triton_address_refused", _("the inference server's address is refused by the server policy"), 502
                ) from None
        raise AssertionError("unreachable")

    async def _attempt(self, server, method, path, headers, body, timeout, stream) -> Response:
        conn = await server.acquire()
        try:
            if conn is None:
                conn = await self._open(server)
        except BaseException:
            server.release(None)
            raise
        conn.uses += 1
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        conn._reset(future)
        if stream:
            conn.chunks = asyncio.Queue()
        head = [f"{method} {path} HTTP/1.1\r\n"]
        if not any(name.lower() == "host" for name, _ in headers):
            head.append(f"Host: {server.host}:{server.port}\r\n")
        for name, value in headers:
            head.append(f"{name}: {value}\r\n")
        if isinstance(body, tuple):  # (async iterator of chunks, Content-Length): streamed as it comes
            chunks, length = body
            head.append(
                f"Content-Length: {length}\r\n\r\n" if length is not None else "Transfer-Encoding: chunked\r\n\r\n"
            )
            conn.transport.write("".join(head).encode("latin-1"))
            try:
                async for chunk in chunks:
                    if chunk:
                        await conn._can_write.wait()
                        conn.transport.write(chunk if length is not None else b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if length is None:
                    conn.transport.write(b"0\r\n\r\n")
            except BaseException:
                conn._fail(UpstreamFailure("closed", "the client stopped sending"))
                raise
        else:
            head.append(f"Content-Length: {len(body)}\r\n\r\n")
            # one write, so one segment for a small call (two would wait on each other's ACK with Nagle)
            conn.transport.write("".join(head).encode("latin-1") + body)
        handle = loop.call_later(timeout, conn.timeout)
        server.in_flight.add(conn)
        try:
            return await future
        except asyncio.CancelledError:  # the client went away: this connection is in an unknown state
            if conn.active:
                conn.active = False
                conn.future = None
                conn.abort()
                server.release(None)
            raise
        finally:
            handle.cancel()
            server.in_flight.discard(conn)

    def _service_error(self, err: UpstreamFailure) -> UpstreamError:
        cause = clean_upstream_text(str(err))
        (log.debug if self.quiet else log.warning)("inference server call failed (%s): %s", err.kind, cause)
        extra = {"kind": err.kind, "before_answer": not err.received, "cause": f"{err.kind}: {cause}"}
        if err.kind in ("timeout", "connect_timeout"):
            return UpstreamError("triton_timeout", _("the inference server did not answer in time"), 504, **extra)
        if err.kind == "tls":
            return UpstreamError(
                "triton_tls_failed", _("the TLS connection to the inference server failed"), 502, **extra
            )
        return UpstreamError(
            "triton_unavailable",
            _("the inference server is unreachable; quote the X-Request-ID header to the operator"),
            503,
            **extra,
        )

    def abandon(self, url: str, why: str) -> int:
        """Fail the calls waiting on `url`'s server without an answer byte (see _Server.abandon)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        server = self._servers.get((parts.scheme, parts.hostname or "", port))
        return server.abandon(why) if server is not None else 0

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            f"{s.scheme}://{s.host}:{s.port}": {"busy": s.busy, "idle": len(s.idle), "waiting": len(s.waiters)}
            for s in self._servers.values()
        }

    def close(self) -> None:
        for server in self._servers.values():
            while server.idle:
                server.idle.pop().abort()
