"""The data-plane process: uvicorn (uvloop + httptools, one worker) serving the ASGI app, and the
gRPC adapter on the same event loop. `manage.py run_dataplane` runs it; tests run it in a thread
(`ServerThread`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from . import runtime

log = logging.getLogger(__name__)


def uvicorn_config(app, host: str, port: int, **extra) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,  # every call is in the audit log; a second log of it would only cost
        log_level="warning",
        timeout_keep_alive=30,
        backlog=2048,
        server_header=False,
        # uvicorn would otherwise rewrite the client address from X-Forwarded-For whenever the peer
        # is 127.0.0.1: the pipeline applies SOVEREIGN_TRUSTED_PROXIES itself (apps/core/netaddr.py).
        proxy_headers=False,
        # Connections and requests in progress beyond this are answered 503 at once: a bound on the
        # memory a crowd of slow clients can hold (each body at most SOVEREIGN_MAX_REQUEST_BODY_BYTES,
        # read only once its caller is authenticated).
        limit_concurrency=settings.GATEWAY_MAX_CONNECTIONS,
        date_header=False,
        **extra,
    )


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket bound with SO_REUSEPORT: several data-plane processes on one port, the kernel
    spreading the connections among them (docs/gateway.md, "Running it")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def serve(
    host: str,
    port: int,
    grpc_port: int = 0,
    *,
    portal_upstream: str | None = None,
    ready=None,
    stop=None,
    reuse_port: bool = False,
):
    """Serve until `stop` (an asyncio.Event) is set, or SIGINT/SIGTERM in the main thread. `reuse_port`:
    share the port with other data-plane processes (SO_REUSEPORT; gRPC's port is shared by grpcio's default)."""
    plane = runtime.build(portal_upstream=portal_upstream)
    await plane.start()
    server = uvicorn.Server(uvicorn_config(plane.app, host, port))
    sockets = [reuse_port_socket(host, port)] if reuse_port else None
    grpc_server = None
    try:
        if grpc_port:
            from .grpc_adapter import build_grpc_server

            grpc_server = build_grpc_server(
                plane.pipeline.handle,
                bind=f"{host}:{grpc_port}",
                max_message_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                refuse=plane.pipeline.refuse,
                message_timeout=settings.GATEWAY_BODY_TIMEOUT,
            )
            await grpc_server.start()
        serving = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            serving.result()  # raises: the port is taken, say
            raise RuntimeError(f"the data plane could not listen on {host}:{port}")
        if ready is not None:
            ready(plane)
        if stop is not None:
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stopper.cancel()
        await serving
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await plane.stop()
        # The database connections of the thread that did the plane's database work.
        await sync_to_async(connections.close_all, thread_sensitive=True)()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerThread:
    """The data plane on its own event loop in a background thread (tests, benchmarks)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, grpc_port: int = 0, **kwargs):
        self.host, self.port, self.grpc_port, self.kwargs = host, port, grpc_port, kwargs
        self.plane = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dataplane", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        import uvloop

        self._loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def main():
            self._stop = asyncio.Event()

            def ready(plane):
                self.plane = plane
                self._ready.set()

            await serve(self.host, self.port, self.grpc_port, ready=ready, stop=self._stop, **self.kwargs)

        try:
            self._loop.run_until_complete(main())
        except BaseException as err:  # noqa: BLE001 - reported to start()
            self._error = err
            self._ready.set()
        finally:
            connections.close_all()
            self._loop.close()

    def start(self, timeout: float = 20.0) -> ServerThread:
        if not self.port:
            self.port = _free_port(self.host)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the data plane did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the data plane did not start: {self._error!r}") from self._error
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def sync_policy(self) -> None:
        """Have the policy snapshot read now (tests: what a commit's NOTIFY does within tens of ms)."""
        self.call(self.plane.pipeline.policy.refresh)

    def call(self, coro_fn, timeout: float = 20.0):
        """Run `coro_fn()` on the data plane's loop and return its result (tests)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(timeout)
