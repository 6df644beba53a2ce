"""Drives the data plane's ASGI app in process, with the interface of Django's test Client that
the gateway tests were written against (get/post, `HTTP_*` extras, `response.json()`).

The app runs under `async_to_sync` from the test's thread, so the data plane's database work
(`sync_to_async(thread_sensitive=True)`) runs on that thread, inside the test's transaction."""

from __future__ import annotations

import asyncio
import json as jsonlib
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync

from apps.gateway.dataplane import runtime
from apps.gateway.dataplane.snapshot import SnapshotHolder


class Response:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status_code = status
        self.content = body
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}

    def json(self):
        return jsonlib.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def get(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    def has_header(self, name: str) -> bool:
        return name.lower() in self.headers


class DataPlaneClient:
    """`defaults`: HTTP_AUTHORIZATION=…, REMOTE_ADDR=… as for django.test.Client."""

    def __init__(self, **defaults):
        self.defaults = defaults
        self.on_build = None  # called with each call's DataPlane before it serves
        self.policy = None  # a SnapshotHolder to use instead of one reading the database per call
        self.disconnect_after_body = False  # the client leaves as soon as its body is sent
        self.stop_reading = False  # the client takes the answer's head, then never reads its body

    def get(self, path: str, **extra) -> Response:
        return self.request("GET", path, b"", None, extra)

    def head(self, path: str, **extra) -> Response:
        return self.request("HEAD", path, b"", None, extra)

    def post(self, path: str, data=b"", content_type: str = "application/json", **extra) -> Response:
        body = data if isinstance(data, bytes) else (data if isinstance(data, str) else jsonlib.dumps(data)).encode()
        return self.request("POST", path, body, content_type, extra)

    def put(self, path: str, data=b"", content_type: str = "application/json", **extra) -> Response:
        body = data if isinstance(data, bytes) else str(data).encode()
        return self.request("PUT", path, body, content_type, extra)

    def request(self, method: str, path: str, body: bytes, content_type: str | None, extra: dict) -> Response:
        meta = {**self.defaults, **extra}
        headers = []
        for key, value in meta.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].lower().replace("_", "-").encode(), str(value).encode("latin-1")))
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        if method in ("POST", "PUT"):
            headers.append((b"content-length", str(len(body)).encode()))
        parts = urlsplit(path)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "headers": headers,
            "client": (meta.get("REMOTE_ADDR", "127.0.0.1"), 50000),
            "server": ("testserver", 80),
        }
        return async_to_sync(self._run)(scope, body)

    async def _run(self, scope, body: bytes) -> Response:
        # fresh per call: async_to_sync runs each call on a new event loop. The policy snapshot is
        # read on every call inside the test's transaction (whose writes never commit, so never
        # notify); tests/gateway/dataplane/test_snapshot_invalidation.py covers invalidation.
        if self.policy is not None:
            plane = runtime.build(policy=self.policy, audit_writer="django")
        else:  # its own holder, started and stopped with it (stop writes the tokens' last use)
            plane = runtime.build(policy=SnapshotHolder(refresh="always"), owns_policy=True, audit_writer="django")
        if self.on_build is not None:
            self.on_build(plane)
        sent = [{"type": "http.request", "body": body, "more_body": False}]
        out: dict = {"body": []}

        async def receive():
            if sent:
                return sent.pop(0)
            if self.disconnect_after_body:
                return {"type": "http.disconnect"}
            await asyncio.get_running_loop().create_future()  # as a server: nothing until the client leaves

        async def send(message):
            if self.stop_reading and message["type"] == "http.response.body" and "status" in out:
                await asyncio.get_running_loop().create_future()  # as a full socket buffer: never returns
            if message["type"] == "http.response.start":
                out["status"], out["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                out["body"].append(message.get("body", b""))

        await plane.start()
        try:
            await plane.app(scope, receive, send)
        finally:
            await plane.stop(final=False)
        return Response(out.get("status", 0), out.get("headers", []), b"".join(out["body"]))
