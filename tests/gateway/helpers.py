"""Request builders shared by the gateway tests."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import ThreadingHTTPServer

from tests.factories import DeploymentFactory, InferenceServerFactory, closed_port


def deploy(model_version, url: str | None = None, **kwargs):
    server = InferenceServerFactory(http_url=url or f"http://127.0.0.1:{closed_port()}")
    return DeploymentFactory(model_version=model_version, server=server, **kwargs)


def valid_request(batch: int = 1) -> dict:
    return {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [batch, 4], "data": [0.5] * 4 * batch}]}


def infer(client, body, name: str = "triage", **extra):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(f"/v2/models/{name}/infer", data=data, content_type="application/json", **extra)


@contextlib.contextmanager
def serving(handler):
    """A ThreadingHTTPServer on a free local port answering with `handler`, for as long as the block
    lasts; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
