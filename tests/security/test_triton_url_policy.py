"""Triton server URLs are untrusted input (issue 10, item 6): the address policy at registration
and on every connection, TLS required off loopback in production, upstream error text cleaned.

DNS answers are scripted by replacing ``socket.getaddrinfo`` for made-up names only (literal
addresses still go to the real resolver): the one way to make a name resolve to a metadata
address on demand. Everything else is real: the API, the services, sockets, HTTP servers.
"""

from __future__ import annotations

import json
import socket
import unicodedata

import pytest
from django.test import Client

from apps.audit.models import AuditEvent, Outcome
from apps.deployments import services
from apps.deployments.models import Deployment, InferenceServer, Observed
from apps.deployments.transport import client_for
from inference_backend.client import UPSTREAM_TEXT_LIMIT, TritonRefused, clean_upstream_text
from tests.conftest import otp_login
from tests.factories import DeploymentFactory, InferenceServerFactory
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.helpers import infer, valid_request

pytestmark = pytest.mark.django_db
# The gateway's stand-ins: a scripted HTTP "Triton", a granted caller and its model version.
fake_triton = gateway_fixtures.fake_triton
caller = gateway_fixtures.caller
model_version = gateway_fixtures.model_version
SERVERS = "/api/v1/deployments/servers/"

FORBIDDEN = [
    "http://169.254.169.254",  # AWS/GCP/Azure metadata
    "http://169.254.169.254:80/",
    "http://169.254.0.23:8000",  # link-local (Tencent metadata)
    "http://[fe80::1]:8000",  # IPv6 link-local
    "http://[fd00:ec2::254]",  # AWS IPv6 metadata
    "http://100.100.100.200",  # Alibaba metadata
    "http://[::ffff:169.254.169.254]:8000",  # IPv4-mapped
    "http://[64:ff9b::a9fe:a9fe]",  # NAT64 of the metadata address
    "http://2852039166",  # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe",  # ... and in hex
    "http://metadata.google.internal",
    "http://METADATA.google.internal:80",
    "http://metadata.goog",
    "http://224.0.0.1:8000",  # multicast
    "http://[ff02::1]:8000",
    "http://0.0.0.0:8000",  # unspecified
    "http://[::]:8000",
    "https://255.255.255.255",  # broadcast / reserved
]


class ScriptedDns(dict):
    """``dns[name] = ["10.0.0.5", ...]`` (or a callable giving such a list); ``lookups`` lists the names asked."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []


@pytest.fixture
def dns(monkeypatch):
    answers = ScriptedDns()
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        answers.lookups.append(host)
        value = answers[host]
        result = []
        for address in value() if callable(value) else value:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port or 0, 0, 0) if family == socket.AF_INET6 else (address, port or 0)
            result.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def register(client, url: str, name: str = "edge", **extra):
    return client.post(SERVERS, {"name": name, "http_url": url, **extra}, format="json")


def _clean(text: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


# -- registration ------------------------------------------------------------------------------


class TestRegistration:
    @pytest.mark.parametrize("url", FORBIDDEN)
    def test_forbidden_addresses_are_refused_and_nothing_saved(self, staff_client, staff_user, url):
        resp = register(staff_client, url)

        assert resp.status_code == 400, resp.json()
        assert resp.json()["code"] == "server_address_forbidden", resp.json()
        assert resp.json()["field"] == "http_url"
        assert not InferenceServer.objects.exists()
        event = AuditEvent.objects.get(event_type="deployment.server.rejected")
        assert (event.actor, event.outcome) == (staff_user, Outcome.FAILURE)
        assert event.error_code == "server_address_forbidden"

    @pytest.mark.parametrize("url", ["ftp://triton:21", "file:///etc/passwd", "gopher://triton:70", "http://"])
    def test_only_http_and_https(self, staff_client, url):
        resp = register(staff_client, url)
        assert resp.status_code == 400
        assert not InferenceServer.objects.exists()

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://10.0.0.7:8000", "https://[::1]:8443"]
    )
    def test_ordinary_addresses_are_accepted_in_development(self, staff_client, url):
        assert register(staff_client, url).status_code == 201

    def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_on_connection(self, staff_client):
        assert register(staff_client, "http://triton-7.invalid:8000").status_code == 201

    def test_every_address_of_a_name_is_checked(self, staff_client, dns):
        dns["two-faced.test"] = ["10.0.0.5", "169.254.169.254"]
        resp = register(staff_client, "http://two-faced.test:8000")
        assert resp.status_code == 400 and resp.json()["code"] == "server_address_forbidden"
        assert "169.254.169.254" in resp.json()["detail"]

    def test_allow_list(self, staff_client, settings, dns):
        settings.TRITON_ALLOWED_NETWORKS = ["10.20.0.0/16", "fd12:3456::/32"]
        dns["inside.test"] = ["10.20.1.5", "fd12:3456::5"]
        dns["straddling.test"] = ["10.20.1.5", "10.30.0.1"]
        assert register(staff_client, "http://10.20.1.5:8000", "a").status_code == 201
        assert register(staff_client, "http://inside.test:8000", "b").status_code == 201
        for name, url in [
            ("c", "http://10.30.0.1:8000"),
            ("d", "http://127.0.0.1:8000"),
            ("e", "http://straddling.test:8000"),
            ("f", "http://[::ffff:10.30.0.1]:8000"),
        ]:
            resp = register(staff_client, url, name)
            assert resp.status_code == 400 and resp.json()["code"] == "server_address_not_allowed", (url, resp.json())
            assert "SOVEREIGN_TRITON_ALLOWED_NETWORKS" in resp.json()["detail"]
        assert sorted(InferenceServer.objects.values_list("name", flat=True)) == ["a", "b"]

    def test_grpc_endpoint_is_held_to_the_same_rules(self, staff_client):
        resp = register(staff_client, "http://10.0.0.7:8000", grpc_url="169.254.169.254:8001")
        assert resp.status_code == 400 and resp.json()["code"] == "server_address_forbidden"
        assert resp.json()["field"] == "grpc_url"
        assert register(staff_client, "http://10.0.0.7:8000", grpc_url="10.0.0.7:8001").status_code == 201

    def test_admin_add_form_goes_through_the_same_policy(self, admin_user):
        client = Client()
        otp_login(client, admin_user)
        resp = client.post(
            "/admin/deployments/inferenceserver/add/",
            {"name": "meta", "http_url": "http://169.254.169.254", "grpc_url": "", "hardware": "cpu"},
            follow=True,
        )
        assert resp.status_code == 200
        assert "server_address_forbidden" in resp.content.decode()
        assert not InferenceServer.objects.exists()


class TestProductionTls:
    @pytest.fixture(autouse=True)
    def production(self, settings):
        settings.PRODUCTION = True
        return settings

    def test_plaintext_to_a_remote_host_is_refused(self, staff_client):
        for url in ("http://10.0.0.7:8000", "http://triton-1.invalid:8000"):
            resp = register(staff_client, url)
            assert resp.status_code == 400 and resp.json()["code"] == "server_tls_required", resp.json()
        assert not InferenceServer.objects.exists()

    def test_https_needs_a_pinned_ca(self, staff_client, production, tmp_path):
        resp = register(staff_client, "https://10.0.0.7:8443", "a")
        assert resp.status_code == 400 and resp.json()["code"] == "server_ca_required"
        ca = tmp_path / "ca.pem"
        ca.write_text("-----BEGIN CERTIFICATE-----\n")  # registration only needs it configured
        production.TRITON_CA_FILE = str(ca)
        assert register(staff_client, "https://10.0.0.7:8443", "a").status_code == 201

    def test_loopback_may_stay_plaintext(self, staff_client):
        assert register(staff_client, "http://127.0.0.1:8000").status_code == 201

    @pytest.mark.parametrize(
        ("url", "code"),
        [("http://192.0.2.10:8000", "server_tls_required"), ("https://192.0.2.10", "server_ca_required")],
    )
    def test_refused_again_at_connection_time(self, url, code):
        """A row registered before production mode (or written past the service) is not dialled."""
        with pytest.raises(TritonRefused) as refused, client_for(url, 2.0) as client:
            client.server_ready() or client.model_ready("m")
        assert refused.value.code == code


# -- at connection time: DNS rebinding -----------------------------------------------------------


def test_a_name_rebound_to_the_metadata_address_is_refused_on_every_path(
    staff_client, dns, fake_triton, caller, model_version
):
    port = int(fake_triton.url.rsplit(":", 1)[1])
    dns["rebind.test"] = ["127.0.0.1"]
    resp = register(staff_client, f"http://rebind.test:{port}")
    assert resp.status_code == 201, resp.json()
    server = InferenceServer.objects.get()
    assert services.probe_server(server.pk).state == "up"
    assert len(fake_triton.requests) == 1

    dns["rebind.test"] = ["169.254.169.254"]  # the attacker's DNS now answers differently

    assert services.probe_server(server.pk).state == "down"
    dep = DeploymentFactory(model_version=model_version, server=server, observed_state=Observed.PENDING)
    services.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.FAILED
    assert "169.254.169.254" in dep.last_error and "cloud instance-metadata" in dep.last_error
    Deployment.objects.filter(pk=dep.pk).update(observed_state=Observed.ACTIVE)
    answer = infer(caller, valid_request())
    assert answer.status_code == 502 and answer.json()["code"] == "triton_address_refused", answer.content
    assert len(fake_triton.requests) == 1  # nothing more reached any server


def test_a_connection_goes_to_the_address_that_was_checked(dns, fake_triton):
    """One lookup per new connection, and the socket goes to the answer that was checked: a
    resolver that answers a safe address once and then the metadata address cannot slip it in."""
    port = int(fake_triton.url.rsplit(":", 1)[1])
    answers = iter([["127.0.0.1"]])
    dns["flip.test"] = lambda: next(answers, ["169.254.169.254"])
    with client_for(f"http://flip.test:{port}", 5.0) as client:
        assert client.server_ready()
        assert dns.lookups == ["flip.test"]
        client.close()  # the next request needs a new connection, hence a new lookup
        with pytest.raises(TritonRefused) as refused:
            client.model_ready("m")
    assert refused.value.code == "server_address_forbidden"
    assert len(fake_triton.requests) == 1


def test_the_default_client_refuses_metadata_addresses_too():
    from inference_backend.client import TritonClient

    with pytest.raises(TritonRefused), TritonClient("http://169.254.169.254", timeout=1.0) as client:
        client.model_ready("m")


# -- upstream error text -----------------------------------------------------------------------

EVIL = "\x1b[2J\x1b[31mmodel failed\r\nSet-Cookie: admin=1\x00 \u202egnp.exe\u200b \x85\u2028next " + "A" * 6000


def test_clean_upstream_text():
    cleaned = clean_upstream_text(EVIL)
    assert len(cleaned) == UPSTREAM_TEXT_LIMIT and cleaned.endswith("…")
    assert _clean(cleaned)
    assert cleaned.startswith("[2J [31mmodel failed Set-Cookie: admin=1 gnp.exe next AAA")
    assert clean_upstream_text(b"short \xff\x1b[0m") == "short \ufffd [0m"
    assert clean_upstream_text("fine text") == "fine text"


def test_reconcile_stores_triton_error_text_cleaned(fake_triton, model_version):
    fake_triton.status, fake_triton.body = 400, json.dumps({"error": EVIL}).encode()
    dep = DeploymentFactory(
        model_version=model_version,
        server=InferenceServerFactory(http_url=fake_triton.url),
        observed_state=Observed.PENDING,
    )

    services.reconcile_deployment(dep.pk)

    dep.refresh_from_db()
    assert dep.observed_state == Observed.FAILED
    assert "model failed" in dep.last_error and len(dep.last_error) <= UPSTREAM_TEXT_LIMIT and _clean(dep.last_error)
    failed = dep.transitions.get(to_state=Observed.FAILED)
    assert failed.message == dep.last_error
    event = AuditEvent.objects.filter(event_type="deployment.transition", target_id=str(dep.pk)).latest("id")
    assert event.details["message"] == dep.last_error


@pytest.mark.parametrize("status", [400, 500])
def test_gateway_shows_triton_error_text_cleaned(fake_triton, caller, model_version, status):
    fake_triton.status, fake_triton.body = status, json.dumps({"error": EVIL}).encode()
    DeploymentFactory(model_version=model_version, server=InferenceServerFactory(http_url=fake_triton.url))

    resp = infer(caller, valid_request())

    assert resp.status_code == (400 if status == 400 else 502)
    body = resp.json()
    assert "model failed" in body["detail"] and len(body["detail"]) <= UPSTREAM_TEXT_LIMIT
    assert _clean(body["detail"]) and _clean(body["error"])
