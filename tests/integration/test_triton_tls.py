"""TLS to Triton for real (issue 10, item 6): a tritonserver behind an nginx TLS proxy that requires
a client certificate (deploy/nginx/triton-tls.conf), certificates generated here with
`cryptography`. The model is deployed through the deployment services and called through the
gateway; both use the pinned CA and the client certificate. A wrong CA fails the handshake; a
missing client certificate is refused by the proxy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apps.accounts.roles import ADMIN, ANALYST
from apps.deployments import services as deployments
from apps.deployments.models import Observed
from apps.deployments.transport import client_for
from apps.registry import services as registry
from inference_backend.client import TritonError, TritonRefused
from inference_backend.demo_model import build_demo_onnx
from inference_backend.private_file import write_private
from inference_backend.server import free_port
from tests.conftest import grant, make_user
from tests.factories import token_for
from tests.gateway.dataplane_client import DataPlaneClient
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "triton-tls.conf"
X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]], dtype=np.float32)


# -- a small PKI --------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sovereign test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _write_private(path: Path, data: bytes) -> str:
    write_private(path, data, exclusive=True)
    return str(path)


def _issue(subject: str, issuer, issuer_key, *, ca: bool = False, server: bool = False, client: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    return cert, key


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, plain)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Files: ca (pins the proxy), server cert/key, client cert/key (mutual TLS), and an unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _issue("Sovereign test CA", None, None, ca=True)
    server, server_key = _issue("localhost", ca, ca_key, server=True)
    client, client_key = _issue("sovereign-portal", ca, ca_key, client=True)
    other_ca, _ = _issue("Somebody else's CA", None, None, ca=True)
    return SimpleNamespace(
        ca=_write_private(d / "ca.pem", _pem(ca)),
        server_cert=_write_private(d / "server.pem", _pem(server) + _pem(ca)),
        server_key=_write_private(d / "server.key", _key_pem(server_key)),
        client_cert=_write_private(d / "client.pem", _pem(client)),
        client_key=_write_private(d / "client.key", _key_pem(client_key)),
        other_ca=_write_private(d / "other-ca.pem", _pem(other_ca)),
    )


# -- nginx in front of the session's tritonserver ---------------------------------------------


def _nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if binary is None:
        pytest.fail("nginx is not installed: run `make system-deps` (Debian package nginx)")
    return binary


def _tls_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def nginx(pki, triton, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = TEMPLATE.read_text()
    for key, value in {
        "PREFIX": str(prefix),
        "LISTEN": f"127.0.0.1:{port}",
        "CERT": pki.server_cert,
        "KEY": pki.server_key,
        "CLIENT_CA": pki.ca,
        "UPSTREAM": f"127.0.0.1:{triton.http_port}",
    }.items():
        conf = conf.replace("{{" + key + "}}", value)
    assert "{{" not in conf
    (prefix / "nginx.conf").write_text(conf)
    binary = _nginx_binary()
    check = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=open(prefix / "stderr.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        wait_for(lambda: proc.poll() is not None or _tls_ready(port), 30, what="nginx to listen")
        if proc.poll() is not None:
            pytest.fail(f"nginx exited: {(prefix / 'stderr.log').read_text()} {(prefix / 'error.log').read_text()}")
        yield SimpleNamespace(url=f"https://localhost:{port}", port=port, access_log=prefix / "access.log")
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, close keep-alive connections
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def tls_settings(settings, pki):
    settings.TRITON_CA_FILE = pki.ca
    settings.TRITON_CLIENT_CERT_FILE = pki.client_cert
    settings.TRITON_CLIENT_KEY_FILE = pki.client_key
    return settings


def _log_lines(nginx, path_part: str) -> list[str]:
    return [line for line in nginx.access_log.read_text().splitlines() if path_part in line]


def _infer(client, name: str):
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": list(X.shape), "data": X.flatten().tolist()}]}
    return client.post(f"/v2/models/{name}/infer", data=json.dumps(body), content_type="application/json")


def _deployed(name: str, server, actor):
    version = registry.register_model_version(model_name=name, data=build_demo_onnx(), actor=actor)
    dep = deployments.request_deployment(
        model_version_id=version.pk, server_id=server.pk, batching={"max_batch_size": 4}, actor=actor
    )
    return deployments.reconcile_deployment(dep.pk)


def test_deploy_and_infer_over_mutual_tls_and_refusals(triton, nginx, pki, tls_settings):
    operator = make_user("tls-operator", ADMIN)
    server = deployments.register_server(name="triton-tls", http_url=nginx.url, actor=operator)

    dep = _deployed("tls-demo", server, operator)

    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    upstream = f"upstream=127.0.0.1:{triton.http_port}"
    loads = _log_lines(nginx, "/v2/repository/models/tls-demo--v1/load")
    assert loads and all(" 200 TLSv1.3 " in line and "CN=sovereign-portal" in line for line in loads), loads
    assert all(upstream in line for line in loads)

    analyst = make_user("tls-analyst", ANALYST)
    grant(analyst, dep.model)
    caller = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(analyst)}")
    resp = _infer(caller, "tls-demo")
    assert resp.status_code == 200, resp.content
    output = next(o for o in resp.json()["outputs"] if o["name"] == "PROBABILITIES")
    expected = ort.InferenceSession(build_demo_onnx()).run(None, {"INPUT": X})[0]
    np.testing.assert_allclose(np.array(output["data"]).reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)
    infers = _log_lines(nginx, "/v2/models/tls-demo--v1/infer")
    assert infers and all(" 200 TLSv1.3 " in line and "CN=sovereign-portal" in line for line in infers), infers

    # A CA that did not sign the proxy's certificate: the handshake fails, nothing reaches nginx's log.
    seen = len(nginx.access_log.read_text().splitlines())
    tls_settings.TRITON_CA_FILE = pki.other_ca
    with pytest.raises(TritonRefused) as refused, client_for(nginx.url, 10) as client:
        client.model_ready("tls-demo")
    assert refused.value.code == "triton_tls_failed" and "CERTIFICATE_VERIFY_FAILED" in refused.value.message
    resp = _infer(caller, "tls-demo")
    assert resp.status_code == 502 and resp.json()["code"] == "triton_tls_failed", resp.content
    # The caller gets the generic answer; the reason goes to the server log (no internal detail).
    assert resp.json()["detail"] == "the TLS connection to the inference server failed"
    assert deployments.probe_server(server.pk).state == "down"
    assert len(nginx.access_log.read_text().splitlines()) == seen

    # The right CA but no client certificate: the proxy refuses, Triton never sees the request.
    tls_settings.TRITON_CA_FILE = pki.ca
    tls_settings.TRITON_CLIENT_CERT_FILE = tls_settings.TRITON_CLIENT_KEY_FILE = ""
    with pytest.raises(TritonError) as no_cert, client_for(nginx.url, 10) as client:
        client.model_ready("tls-demo") or client.model_metadata("tls-demo")
    assert no_cert.value.status == 400 and "No required SSL certificate was sent" in no_cert.value.message
    resp = _infer(caller, "tls-demo")
    assert resp.status_code == 400 and resp.json()["code"] == "triton_rejected"
    assert "No required SSL certificate was sent" in resp.json()["detail"]
    refused_lines = nginx.access_log.read_text().splitlines()[seen:]
    assert refused_lines and all(' 400 TLSv1.3 "-" upstream=- ' in line for line in refused_lines), refused_lines
    failed = _deployed("tls-no-cert", server, operator)
    assert failed.observed_state == Observed.FAILED
    assert "No required SSL certificate was sent" in failed.last_error

    # And with everything in place again, the same pool serves once more.
    tls_settings.TRITON_CLIENT_CERT_FILE, tls_settings.TRITON_CLIENT_KEY_FILE = pki.client_cert, pki.client_key
    assert _infer(caller, "tls-demo").status_code == 200


def test_the_handshake_itself_needs_the_pinned_ca(nginx, pki):
    """Below the portal: a plain TLS client trusting the system store (not the pinned CA) fails."""
    context = ssl.create_default_context()
    with (
        socket.create_connection(("127.0.0.1", nginx.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="localhost")
    pinned = ssl.create_default_context(cafile=pki.ca)
    pinned.load_cert_chain(pki.client_cert, pki.client_key)
    with (
        socket.create_connection(("127.0.0.1", nginx.port), timeout=5) as raw,
        pinned.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.3"
        assert tls.getpeercert()["subject"][-1] == (("commonName", "localhost"),)
