"""Stand-ins for a Triton server at the socket level: closed, silent, or a tiny scripted HTTP server.

The gateway only relays bytes, so these are enough to exercise every path of it without Triton.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest

from tests.conftest import grant
from tests.factories import ModelVersionFactory, token_for
from tests.gateway.helpers import serving

from .dataplane_client import DataPlaneClient


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class FakeTriton:
    """Answers every request with `status` and `body`, and records what it received."""

    url: str = ""
    status: int = 200
    body: bytes = b"{}"
    headers: dict = field(default_factory=lambda: {"Content-Type": "application/json"})
    requests: list[Recorded] = field(default_factory=list)


@pytest.fixture
def fake_triton():
    state = FakeTriton()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    with serving(Handler) as state.url:
        yield state


@pytest.fixture
def silent_server():
    """Accepts TCP connections (the kernel completes the handshake) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def caller(plain_user, model_version) -> DataPlaneClient:
    """An analyst granted `invoke_model` on triage, calling the gateway with their token as
    tritonclient would."""
    grant(plain_user, model_version.model)
    return DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")


@pytest.fixture
def model_version(staff_user, onnx_bytes):
    return ModelVersionFactory(model_name="triage", data=onnx_bytes, actor=staff_user)
