"""A deterministic chat model for the closure of powers: a tiny HTTP server that answers Triton's
`generate_stream` by repeating the user text it received, in small deltas (so a surrogate is split
across two of them), and records every prompt it was sent.

The gateway de-identifies the prompt before forwarding (surrogate mode); the answer therefore
carries the surrogates, and a caller gets the original identifiers back only if the data plane
re-identified the answer for it. Started once per test process (a daemon thread), shared by every
world: it holds no state that decides an answer.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)
DELTA = 4  # characters per streamed delta

_lock = threading.Lock()
_url: str | None = None
received: list[str] = []  # every prompt forwarded to the model (to assert no original reached it)


def _answer(prompt: str) -> bytes:
    found = _USER.findall(prompt)
    text = found[-1] if found else ""
    parts = [text[i : i + DELTA] for i in range(0, len(text), DELTA)]
    events = [{"text_output": p, "num_input_tokens": 8, "num_output_tokens": 1, "finish_reason": ""} for p in parts]
    events.append({"text_output": "", "num_input_tokens": 8, "num_output_tokens": 0, "finish_reason": "stop"})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            prompt = json.loads(raw).get("text_input", "")
        except ValueError:
            prompt = ""
        received.append(prompt)
        body = _answer(prompt)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # readiness and metadata: an empty success
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def url() -> str:
    """The echo server's base URL (started on first use)."""
    global _url
    with _lock:
        if _url is None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            _url = f"http://127.0.0.1:{server.server_address[1]}"
        return _url
