"""The data plane as a real server (uvicorn in a thread, real sockets, committed data): back-pressure,
slow and vanishing clients, URLs it does not serve, and the portal behind the same port (`make run`)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.audit.models import AuditEvent
from apps.gateway.dataplane.server import ServerThread
from tests.conftest import grant
from tests.factories import token_for

from ..helpers import deploy, valid_request

pytestmark = pytest.mark.django_db(transaction=True)
BODY = json.dumps(valid_request()).encode()


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class HeldTriton:
    """Answers 200 to every request, but only once `release` is set; counts what it holds."""

    def __init__(self):
        self.release = threading.Event()
        self.holding = 0
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                state.holding += 1
                state.release.wait(20)
                body = b'{"outputs":[]}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held():
    triton = HeldTriton()
    yield triton
    triton.close()


@pytest.fixture
def plane(settings):
    settings.GATEWAY_POOL_SIZE, settings.GATEWAY_MAX_WAITING = 1, 1
    settings.GATEWAY_BODY_TIMEOUT = 0.5
    server = ServerThread().start()
    yield server
    server.stop()


@pytest.fixture
def token(plain_user, model_version):
    grant(plain_user, model_version.model)
    return token_for(plain_user)


def deployed(plane, model_version, url: str):
    """Deploy, then have the running data plane read its policy now (it would within tens of
    milliseconds of the commit anyway: tests/gateway/dataplane/test_snapshot_invalidation.py)."""
    dep = deploy(model_version, url=url)
    plane.sync_policy()
    return dep


def post(plane, token: str, body: bytes = BODY, timeout: float = 20.0):
    conn = http.client.HTTPConnection(plane.host, plane.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/v2/models/triage/infer",
            body,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def events(**filters):
    return list(AuditEvent.objects.filter(event_type="inference.infer", **filters).order_by("id"))


def test_back_pressure_refuses_at_once_beyond_the_queue(plane, held, token, model_version):
    deployed(plane, model_version, held.url)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(post(plane, token))) for _ in range(2)]
    for t in threads:
        t.start()
    # one call holds the server's only connection, the second waits for it
    wait_for(lambda: held.holding == 1 and _stats(plane) == (1, 1), what="one call in flight and one queued")

    started = time.monotonic()
    status, headers, body = post(plane, token)
    refused_in = time.monotonic() - started

    assert status == 503 and json.loads(body)["code"] == "upstream_busy"
    assert headers["retry-after"] == "1"
    assert refused_in < 2  # at once, not after a timeout
    held.release.set()
    for t in threads:
        t.join(20)
    assert sorted(a[0] for a in answers) == [200, 200]
    codes = sorted(e.error_code for e in events())
    assert codes == ["", "", "upstream_busy"]
    assert _stats(plane) == (0, 0)


def _stats(plane) -> tuple[int, int]:
    stats = list(plane.plane.pipeline.pool.stats().values())
    return (stats[0]["busy"], stats[0]["waiting"]) if stats else (0, 0)


def _raw(plane, token: str, declared: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection((plane.host, plane.port), timeout=10)
    head = (
        f"POST /v2/models/triage/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + sent)
    return sock


def test_a_slow_body_is_refused_and_audited(plane, held, token, model_version):
    deployed(plane, model_version, held.url)
    sock = _raw(plane, token, len(BODY), BODY[:10])  # and then nothing: slowloris
    try:
        answer = sock.recv(65536).decode()
    finally:
        sock.close()

    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"code":"request_timeout"' in answer
    [event] = events()
    assert (event.error_code, event.details["status"]) == ("request_timeout", 408)
    assert held.holding == 0  # nothing was forwarded


def test_a_client_gone_mid_body_is_audited(plane, held, token, model_version):
    deployed(plane, model_version, held.url)
    _raw(plane, token, len(BODY), BODY[:10]).close()

    [event] = wait_for(lambda: events(), what="the audit event of the abandoned call")
    assert event.error_code in ("client_disconnected", "request_timeout")
    assert held.holding == 0


def test_a_client_gone_while_triton_works_is_audited_and_frees_the_connection(plane, held, token, model_version):
    deployed(plane, model_version, held.url)
    sock = _raw(plane, token, len(BODY), BODY)
    wait_for(lambda: held.holding == 1, what="the call to reach Triton")
    sock.close()  # gone while Triton works

    held.release.set()

    [event] = wait_for(lambda: events(), what="the audit event")
    assert event.outcome == "success" and event.details["status"] == 200
    wait_for(lambda: _stats(plane) == (0, 0), what="the connection back in the pool")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/models/triage/infer", 405, "method_not_allowed"),
        ("POST", "/v2/models/triage", 405, "method_not_allowed"),
        ("GET", "/v2/repository/index", 404, "not_found"),
        ("GET", "/admin/", 404, "not_found"),  # no portal behind this one
    ],
)
def test_what_the_data_plane_does_not_serve(plane, method, path, status, code):
    conn = http.client.HTTPConnection(plane.host, plane.port, timeout=10)
    conn.request(method, path)
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())["code"]) == (status, code)
    assert resp.getheader("X-Request-ID")


class Portal:
    """Records what reaches it; answers with a body larger than one chunk."""

    def __init__(self):
        self.seen: list[tuple[str, str, dict, bytes]] = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                state.seen.append((self.command, self.path, dict(self.headers), body))
                out = b"x" * 300_000
                self.send_response(302 if self.path.startswith("/go") else 200)
                self.send_header("Location", "/elsewhere")
                self.send_header("Set-Cookie", "sessionid=abc; HttpOnly")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


def test_make_run_serves_the_portal_behind_the_same_port():
    portal = Portal()
    server = ServerThread(portal_upstream=portal.url).start()
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        upload = b"y" * 1_000_000
        conn.request("POST", "/api/v1/registry/upload?x=1", upload, {"Host": "portal.example", "X-Custom": "kept"})
        resp = conn.getresponse()
        assert resp.status == 200 and len(resp.read()) == 300_000
        assert resp.getheader("Set-Cookie") == "sessionid=abc; HttpOnly"
        conn.request("GET", "/go/somewhere", headers={"X-Forwarded-For": "6.6.6.6"})
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("Location")) == (302, "/elsewhere")
        resp.read()
    finally:
        server.stop()
        portal.server.shutdown()
        portal.server.server_close()

    method, path, headers, body = portal.seen[0]
    assert (method, path, body == upload) == ("POST", "/api/v1/registry/upload?x=1", True)
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["host"] == "portal.example" and headers["x-custom"] == "kept"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    # A chain from a peer that is not a trusted proxy of the data plane is not passed on: the
    # portal trusts the data plane's hop, so it would believe the caller's own claim.
    assert {k.lower(): v for k, v in portal.seen[1][2].items()}["x-forwarded-for"] == "127.0.0.1"


def test_an_anonymous_upload_is_refused_before_its_body_is_read(plane):
    """No token, a 60 MB body announced: the answer comes before a byte of the body is sent (an
    unauthenticated crowd cannot make the data plane buffer uploads)."""
    sock = socket.create_connection((plane.host, plane.port), timeout=10)
    try:
        sock.sendall(b"POST /v2/models/triage/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n")
        answer = sock.recv(65536).decode()
    finally:
        sock.close()
    assert answer.startswith("HTTP/1.1 401"), answer
    assert '"code":"missing_token"' in answer


def test_the_relay_does_not_pass_expect_or_underscored_headers():
    portal = Portal()
    server = ServerThread(portal_upstream=portal.url).start()
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request(
            "POST", "/login", b"a=1", {"Expect": "100-continue", "SCRIPT_NAME": "/att", "X_Forwarded_For": "6.6.6.6"}
        )
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    finally:
        server.stop()
        portal.server.shutdown()
        portal.server.server_close()
    names = {k.lower() for k in portal.seen[0][2]}
    assert not names & {"expect", "script_name", "x_forwarded_for"}


class InformationalFirst:
    """An upstream that answers every request with `100 Continue` and then the real answer naming
    the path it was asked for (as gunicorn does when a request carries Expect: 100-continue)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                body = b"answer-for:" + path
                conn.sendall(
                    b"HTTP/1.1 100 Continue\r\n\r\n"
                    + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
                )


def test_an_informational_answer_is_not_taken_for_the_answer():
    """A 100 Continue before the answer must neither end the call nor leave the real answer on the
    pooled connection for the next caller (who would get someone else's response)."""
    import asyncio

    from apps.gateway.dataplane.upstream import UpstreamPool
    from inference_backend.netpolicy import ServerPolicy

    upstream = InformationalFirst()

    async def calls():
        pool = UpstreamPool(ServerPolicy(), max_connections=1)
        answers = []
        for path in ("/first", "/second", "/third"):
            response = await pool.request("GET", upstream.url + path, timeout=5)
            answers.append((response.status, response.body))
            busy = next(iter(pool.stats().values()))["busy"]
            assert busy == 0, pool.stats()
        pool.close()
        return answers

    answers = asyncio.new_event_loop().run_until_complete(calls())
    upstream.sock.close()
    assert answers == [(200, b"answer-for:/first"), (200, b"answer-for:/second"), (200, b"answer-for:/third")]
