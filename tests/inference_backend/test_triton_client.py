"""Unit tests of inference_backend.client against a small in-process HTTP server."""

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inference_backend.client import TritonClient, TritonError, TritonUnavailable
from inference_backend.server import free_port


class FakeTriton:
    """Answers each path from ``routes``: path -> (status, body bytes); records requests."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        self.release = threading.Event()
        self.disconnected = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like Triton

            def finish(self):
                super().finish()
                fake.disconnected.set()

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append((self.command, self.path, body))
                if self.path == "/hang":
                    fake.release.wait(30)
                status, payload = fake.routes.get(self.path, (404, b'{"error":"no route"}'))
                if callable(payload):
                    payload = payload(body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 resets connections under the thread test

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    server = FakeTriton()
    yield server
    server.close()


def test_load_model_sends_config_and_files(fake):
    fake.routes["/v2/repository/models/my%20model/load"] = (200, b"")
    config = {"name": "my model", "backend": "python"}
    files = {"1/model.py": b"print('hi')", "file:1/model.onnx.enc": b"\x00\x01\xff"}
    TritonClient(fake.url).load_model("my model", config, files)
    method, path, body = fake.requests[-1]
    assert (method, path) == ("POST", "/v2/repository/models/my%20model/load")
    params = json.loads(body)["parameters"]
    assert json.loads(params["config"]) == config
    assert base64.b64decode(params["file:1/model.py"]) == b"print('hi')"
    assert base64.b64decode(params["file:1/model.onnx.enc"]) == b"\x00\x01\xff"
    assert set(params) == {"config", "file:1/model.py", "file:1/model.onnx.enc"}


@pytest.mark.parametrize("key", ["/etc/passwd", "1/../../x", "", "1//model.py"])
def test_load_model_refuses_odd_file_paths(fake, key):
    with pytest.raises(ValueError, match="invalid model file path"):
        TritonClient(fake.url).load_model("m", {}, {key: b""})
    assert not fake.requests


def test_error_text_and_status(fake):
    fake.routes["/v2/repository/models/m/load"] = (400, b'{"error":"load failed for model \'m\': boom"}')
    fake.routes["/v2/models/m"] = (500, b"plain failure")
    client = TritonClient(fake.url)
    with pytest.raises(TritonError) as err:
        client.load_model("m", {}, {})
    assert err.value.status == 400 and err.value.message == "load failed for model 'm': boom"
    assert not isinstance(err.value, TritonUnavailable)
    with pytest.raises(TritonError) as err:
        client.model_metadata("m")
    assert (err.value.status, err.value.message) == (500, "plain failure")


def test_readiness(fake):
    client = TritonClient(fake.url)
    fake.routes["/v2/health/ready"] = (200, b"")
    fake.routes["/v2/models/a/ready"] = (200, b"")
    fake.routes["/v2/models/b/ready"] = (400, b'{"error":"not ready"}')
    assert client.server_ready() is True
    assert client.model_ready("a") is True
    assert client.model_ready("b") is False
    fake.routes["/v2/health/ready"] = (503, b"")
    assert client.server_ready() is False


def test_unreachable_server_is_unavailable():
    client = TritonClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert client.server_ready() is False
    with pytest.raises(TritonUnavailable) as err:
        client.model_ready("m")
    assert err.value.status is None
    with pytest.raises(TritonUnavailable):
        client.infer_json("m", [])


def test_timeout_is_unavailable(fake):
    fake.routes["/hang"] = (200, b"{}")
    client = TritonClient(fake.url, timeout=0.3)
    with pytest.raises(TritonUnavailable, match="unavailable"):
        client._call("GET", "/hang")


def test_infer_index_metadata_unload_and_threads(fake):
    def echo(body):
        inputs = json.loads(body)["inputs"]
        return json.dumps({"model_name": "m", "outputs": inputs}).encode()

    fake.routes["/v2/models/m/infer"] = (200, echo)
    fake.routes["/v2/repository/index"] = (200, b'[{"name":"m","state":"READY"}]')
    fake.routes["/v2/models/m"] = (200, b'{"name":"m","inputs":[]}')
    fake.routes["/v2/repository/models/m/unload"] = (200, b"")
    client = TritonClient(fake.url)
    assert client.repository_index() == [{"name": "m", "state": "READY"}]
    assert client.model_metadata("m")["name"] == "m"
    client.unload_model("m")
    assert fake.requests[-1][:2] == ("POST", "/v2/repository/models/m/unload")

    def call(i):
        item = {"name": "X", "shape": [1], "datatype": "INT32", "data": [i]}
        return client.infer_json("m", [item])["outputs"][0]["data"][0]

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(call, range(200))) == list(range(200))
    client.close()


def test_close_drops_keep_alive_connections(fake):
    # A stopping Triton waits (up to its exit timeout) for open connections, idle ones included.
    fake.routes["/v2/health/ready"] = (200, b"")
    client = TritonClient(fake.url)
    assert client.server_ready()
    assert not fake.disconnected.wait(0.2)  # the connection is kept alive in the pool
    client.close()
    assert fake.disconnected.wait(5)
    assert client.server_ready()  # still usable afterwards
