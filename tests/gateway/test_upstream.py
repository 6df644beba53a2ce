"""What the gateway does with the inference server: relay its answer, or say precisely why not."""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEvent, Outcome
from apps.gateway.dataplane.balancer import Balancer
from tests.factories import ModelVersionFactory, closed_port

from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db


def event() -> AuditEvent:
    return AuditEvent.objects.get(event_group="inference")


class TestUnreachable:
    def test_closed_port_is_503_triton_unavailable(self, caller, model_version):
        dep = deploy(model_version, url=f"http://127.0.0.1:{closed_port()}")

        resp = infer(caller, valid_request())

        assert resp.status_code == 503, resp.content
        assert resp.json()["code"] == "triton_unavailable"
        ev = event()
        assert (ev.outcome, ev.error_code, ev.details["status"]) == (Outcome.FAILURE, "triton_unavailable", 503)
        assert ev.details["deployment"] == dep.pk
        assert ev.details["server"] == dep.server.name
        assert ev.details["version"] == 1
        assert ev.target_id == str(model_version.model_id)

    @pytest.mark.parametrize(("path", "event_type"), [("", "inference.metadata"), ("/ready", "inference.ready")])
    def test_metadata_and_ready_on_closed_port(self, caller, model_version, path, event_type):
        deploy(model_version)

        resp = caller.get(f"/v2/models/triage{path}")

        assert resp.status_code == 503
        assert resp.json()["code"] == "triton_unavailable"
        assert event().event_type == event_type

    def test_silent_server_is_504_triton_timeout(self, caller, model_version, silent_server, settings):
        settings.TRITON_TIMEOUT = 0.5
        deploy(model_version, url=silent_server)

        resp = infer(caller, valid_request())

        assert resp.status_code == 504, resp.content
        assert resp.json()["code"] == "triton_timeout"
        ev = event()
        assert (ev.outcome, ev.error_code, ev.details["status"]) == (Outcome.FAILURE, "triton_timeout", 504)
        assert 450 <= ev.details["latency_ms"] < 5000  # settings.TRITON_TIMEOUT, not a default, applied


class TestRelay:
    def test_success_relays_body_and_headers(self, caller, plain_user, model_version, fake_triton):
        # Triton serves version 1 as "triage--v1" and answers (compact JSON) under that name
        answer = {"model_name": "triage", "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [1, 3]}]}
        fake_triton.body = json.dumps({**answer, "model_name": "triage--v1"}, separators=(",", ":")).encode()
        dep = deploy(model_version, url=fake_triton.url)
        body = json.dumps(valid_request()).encode()

        resp = caller.post("/v2/models/triage/infer", data=body, content_type="application/json")

        assert resp.status_code == 200
        assert resp.json() == answer
        assert resp["Content-Type"] == "application/json"
        [sent] = fake_triton.requests
        assert (sent.method, sent.path, sent.body) == ("POST", "/v2/models/triage--v1/infer", body)
        assert "Authorization" not in sent.headers
        ev = event()
        assert (ev.event_type, ev.outcome, ev.error_code) == ("inference.infer", Outcome.SUCCESS, "")
        assert ev.details["status"] == 200
        assert ev.details["deployment"] == dep.pk
        assert ev.actor == plain_user

    def test_binary_request_forwarded_byte_for_byte(self, caller, model_version, fake_triton):
        fake_triton.headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "2"}
        fake_triton.body = b"{}\x01\x02"
        deploy(model_version, url=fake_triton.url)
        header = json.dumps(
            {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
        ).encode()
        body = header + bytes(range(16))

        resp = caller.post(
            "/v2/models/triage/infer",
            data=body,
            content_type="application/octet-stream",
            HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
        )

        assert resp.status_code == 200
        assert resp.content == b"{}\x01\x02"
        assert resp["Inference-Header-Content-Length"] == "2"
        [sent] = fake_triton.requests
        assert sent.body == body
        assert sent.headers["Inference-Header-Content-Length"] == str(len(header))
        assert sent.headers["Content-Type"] == "application/octet-stream"

    @pytest.mark.parametrize(("path", "event_type"), [("", "inference.metadata"), ("/ready", "inference.ready")])
    def test_metadata_and_ready_relayed(self, caller, model_version, fake_triton, path, event_type):
        fake_triton.body = b'{"name":"triage--v1","versions":["1"]}' if not path else b""
        deploy(model_version, url=fake_triton.url)

        resp = caller.get(f"/v2/models/triage{path}")

        assert resp.status_code == 200
        assert resp.content == (b'{"name":"triage","versions":["1"]}' if not path else b"")  # the public name
        assert [r.path for r in fake_triton.requests] == [f"/v2/models/triage--v1{path}"]
        assert (event().event_type, event().outcome) == (event_type, Outcome.SUCCESS)

    @pytest.mark.parametrize("path", ["", "/ready"])
    def test_version_url_is_forwarded_to_that_version(self, caller, model_version, fake_triton, path):
        """Forwarded to Triton's versioned path, so Triton answers only with that version (the
        answer's model_version is checked on a real Triton in test_versions_integration.py)."""
        deploy(model_version, url=fake_triton.url)

        resp = caller.get(f"/v2/models/triage/versions/1{path}")

        assert resp.status_code == 200
        assert [r.path for r in fake_triton.requests] == [f"/v2/models/triage--v1/versions/1{path}"]
        assert event().details["version"] == 1

    def test_versioned_infer_is_forwarded_to_that_version(self, caller, model_version, fake_triton):
        deploy(model_version, url=fake_triton.url)

        resp = caller.post("/v2/models/triage/versions/1/infer", valid_request(), content_type="application/json")

        assert resp.status_code == 200
        assert [r.path for r in fake_triton.requests] == ["/v2/models/triage--v1/versions/1/infer"]

    @pytest.mark.parametrize("upstream", [404, 503])
    def test_triton_not_serving_the_routed_version_is_a_404(self, caller, model_version, fake_triton, upstream):
        fake_triton.status = upstream
        fake_triton.body = b'{"error": "Request for unknown model: \'triage\' version 1 is not found"}'
        deploy(model_version, url=fake_triton.url)

        resp = caller.post("/v2/models/triage/versions/1/infer", valid_request(), content_type="application/json")

        assert resp.status_code == 404
        assert resp.json()["code"] == "model_version_not_deployed"

    @pytest.mark.parametrize(
        ("upstream", "status", "code"), [(400, 400, "triton_rejected"), (500, 502, "triton_error")]
    )
    def test_upstream_error_carries_tritons_message(self, caller, model_version, fake_triton, upstream, status, code):
        fake_triton.status = upstream
        fake_triton.body = b'{"error": "inference failed: tensor too tired"}'
        deploy(model_version, url=fake_triton.url)

        resp = infer(caller, valid_request())

        assert resp.status_code == status
        assert resp.json()["code"] == code
        assert resp.json()["error"] == "inference failed: tensor too tired"
        ev = event()
        assert (ev.outcome, ev.error_code, ev.details["status"]) == (Outcome.FAILURE, code, status)


class TestSeveralServers:
    """Two versions of one model served from two servers (a canary): a version URL must reach its own."""

    @pytest.mark.parametrize("pick", ["first", "last"])
    def test_version_url_routes_to_the_server_serving_it(
        self, caller, model_version, staff_user, fake_triton, monkeypatch, pick
    ):
        v1 = deploy(model_version, url=fake_triton.url)
        v2 = deploy(ModelVersionFactory(model_name="triage", actor=staff_user), url=f"http://127.0.0.1:{closed_port()}")
        # Whichever version the weighted split would favour, the version in the URL decides.
        monkeypatch.setattr(Balancer, "_version", lambda self, routes: routes[:1] if pick == "first" else routes[-1:])

        v1_resp = caller.get("/v2/models/triage/versions/1/ready")
        v2_resp = caller.get("/v2/models/triage/versions/2/ready")

        assert v1_resp.status_code == 200, v1_resp.content
        assert v2_resp.status_code == 503, v2_resp.content  # routed to v2's (closed) server, not refused
        assert v2_resp.json()["code"] == "triton_unavailable"
        events = AuditEvent.objects.filter(event_type="inference.ready").order_by("id")
        assert [e.details["deployment"] for e in events] == [v1.pk, v2.pk]
