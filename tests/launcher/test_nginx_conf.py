"""deploy/nginx/sovereign.conf, the production front of docs/production.md: nginx accepts it
(`nginx -t`), and run for real in front of two stand-in planes it sends /v2/ to the data plane and
everything else to the portal, over TLS, with the client's address and the scheme in
X-Forwarded-For / X-Forwarded-Proto, and streams request bodies rather than spooling them to disk.
Its gRPC location (grpc_pass) is checked by `nginx -t` only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inference_backend.server import free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "sovereign.conf"


def _nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if binary is None:
        pytest.fail("nginx is not installed: run `make system-deps` (Debian package nginx)")
    return binary


def _self_signed(prefix: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = prefix / "cert.pem", prefix / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return str(cert_path), str(key_path)


class _Plane(ThreadingHTTPServer):
    """A stand-in plane: answers every request with its own name, what it received and the headers."""

    daemon_threads = True

    def __init__(self, name: str):
        self.name = name

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while (size := int(self.rfile.readline().strip(), 16)) > 0:
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(length)
                seen = {
                    "plane": name,
                    "path": self.path,
                    "method": self.command,
                    "body": len(body),
                    "x_forwarded_for": self.headers.get("X-Forwarded-For"),
                    "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
                    "host": self.headers.get("Host"),
                }
                data = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("nginx")
    cert, key = _self_signed(prefix)
    planes = {name: _Plane(name) for name in ("dataplane", "portal")}
    for plane in planes.values():
        threading.Thread(target=plane.serve_forever, daemon=True).start()
    tls_port, plain_port = free_port(), free_port()
    values = {
        "PREFIX": str(prefix),
        "LISTEN": f"127.0.0.1:{tls_port}",
        "SERVER_NAME": "localhost",
        "CERT": cert,
        "KEY": key,
        "DATAPLANE": f"127.0.0.1:{planes['dataplane'].server_port}",
        "DATAPLANE_GRPC": f"127.0.0.1:{free_port()}",
        "PORTAL": f"127.0.0.1:{planes['portal'].server_port}",
        "MAX_BODY": "1m",
        "MAX_UPLOAD": "4m",
    }
    conf = TEMPLATE.read_text()
    for name, value in values.items():
        conf = conf.replace("{{" + name + "}}", value)
    assert "{{" not in conf
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{plain_port};")  # no root-only port in a test
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    (prefix / "nginx.conf").write_text(conf)
    binary = _nginx_binary()
    check = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    with open(prefix / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
            stdout=err,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", tls_port), timeout=1):
                return True
        except OSError:
            return proc.poll() is not None

    try:
        wait_for(listening, 30, what="nginx to listen")
        assert proc.poll() is None, (prefix / "stderr.log").read_text() + (prefix / "error.log").read_text()
        ctx = ssl.create_default_context(cafile=cert)
        yield type("Front", (), {"port": tls_port, "plain_port": plain_port, "ctx": ctx, "prefix": prefix})
    finally:
        proc.terminate()
        proc.wait(10)
        for plane in planes.values():
            plane.shutdown()


def _call(front, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    import http.client

    conn = http.client.HTTPSConnection("localhost", front.port, context=front.ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if resp.getheader("Content-Type") == "application/json" else data)
    finally:
        conn.close()


def test_v2_reaches_the_data_plane_and_the_rest_the_portal_with_the_client_address(front):
    status, seen = _call(front, "POST", "/v2/models/m/infer", b'{"inputs": []}', {"Content-Type": "application/json"})
    assert status == 200 and seen["plane"] == "dataplane" and seen["path"] == "/v2/models/m/infer"
    assert seen["body"] == len(b'{"inputs": []}')
    assert seen["x_forwarded_for"] == "127.0.0.1" and seen["x_forwarded_proto"] == "https"
    assert seen["host"] == "localhost"
    status, seen = _call(front, "POST", "/v1/chat/completions", b"{}", {"Content-Type": "application/json"})
    assert status == 200 and (seen["plane"], seen["path"]) == ("dataplane", "/v1/chat/completions")
    for path in ("/admin/login/", "/api/v1/registry/models/", "/healthz", "/static/x.css", "/v2x/models", "/v1x"):
        status, seen = _call(front, "GET", path)
        assert status == 200, (path, status, seen)
        assert (seen["plane"], seen["path"]) == ("portal", path)
    # A forged X-Forwarded-For stays to the left of the address nginx saw: the planes read from the right.
    status, seen = _call(front, "GET", "/v2/health/ready", headers={"X-Forwarded-For": "6.6.6.6"})
    assert seen["plane"] == "dataplane" and seen["x_forwarded_for"] == "6.6.6.6, 127.0.0.1"


def test_inference_bodies_are_capped_and_portal_uploads_may_be_larger(front):
    big = b"x" * (2 * 1024 * 1024)
    status, _ = _call(front, "POST", "/v2/models/m/infer", big, {"Content-Type": "application/json"})
    assert status == 413  # nginx refuses it before the data plane reads a byte
    status, seen = _call(front, "POST", "/api/v1/registry/upload", big, {"Content-Type": "application/octet-stream"})
    assert status == 200 and seen["plane"] == "portal" and seen["body"] == len(big)
    # Streamed, not spooled: nginx warns "a client request body is buffered to a temporary file" when it spools.
    assert "temporary file" not in (front.prefix / "error.log").read_text()


def test_plain_http_is_redirected_to_https(front):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", front.plain_port, timeout=10)
    conn.request("GET", "/v2/models/m", headers={"Host": "localhost"})
    resp = conn.getresponse()
    assert resp.status == 308 and resp.getheader("Location") == "https://localhost/v2/models/m"
    conn.close()
