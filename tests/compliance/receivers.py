"""Real local receivers for alert and audit-shipping tests: an HTTP server in a thread on
127.0.0.1 that records what it was sent and answers with a status the test chooses. Loopback is
allowed by the outbound address policy (inference_backend/netpolicy.py), so no setting opens it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """POSTs are recorded in `received` (parsed JSON bodies); `status` is the answer."""

    def __init__(self, status: int = 200):
        self.status = status
        self.received: list = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received.append(json.loads(body or b"null"))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/sovereign-token-abc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Down: nothing listens on the port any more (connection refused)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
