"""Every gateway call is audited, and a call that cannot be audited gets no answer (fail closed)."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from apps.audit.models import AuditEvent

from .dataplane_client import DataPlaneClient as Client
from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def audit_down():
    """Call it to make the audit table refuse every insert from then on, as a full disk or a lost
    database would: a trigger created inside the test's transaction (rolled back with it)."""
    return _break_audit


def _break_audit() -> None:
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION pg_temp.audit_down() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit store unavailable'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER audit_down BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION pg_temp.audit_down()"
        )


class TestEveryCallAudited:
    def test_one_event_per_call(self, caller, model_version, fake_triton):
        deploy(model_version, url=fake_triton.url)

        statuses = [
            infer(caller, valid_request()).status_code,
            caller.get("/v2/models/triage").status_code,
            caller.get("/v2/models/triage/ready").status_code,
            infer(caller, {"inputs": []}).status_code,
            infer(Client(), valid_request()).status_code,
            infer(caller, valid_request(), name="unknown").status_code,
        ]

        events = list(AuditEvent.objects.filter(event_group="inference").order_by("id"))
        assert [e.details["status"] for e in events] == statuses == [200, 200, 200, 400, 401, 404]
        assert [e.event_type for e in events] == [
            "inference.infer",
            "inference.metadata",
            "inference.ready",
            "inference.infer",
            "inference.infer",
            "inference.infer",
        ]
        assert [e.outcome for e in events] == ["success", "success", "success", "failure", "denied", "denied"]
        assert [e.error_code for e in events] == ["", "", "", "missing_input", "missing_token", "model_not_found"]
        assert all(e.details["latency_ms"] >= 0 for e in events)

    def test_request_id_is_recorded(self, caller, model_version, fake_triton):
        deploy(model_version, url=fake_triton.url)

        resp = infer(caller, valid_request(), HTTP_X_REQUEST_ID="gw-trace-42")

        assert resp["X-Request-ID"] == "gw-trace-42"
        assert AuditEvent.objects.get(event_group="inference").request_id == "gw-trace-42"


class TestFailClosed:
    def test_successful_inference_is_withheld(self, caller, model_version, fake_triton, audit_down):
        fake_triton.body = json.dumps({"outputs": [{"name": "OUTPUT", "data": [0.2, 0.3, 0.5]}]}).encode()
        deploy(model_version, url=fake_triton.url)
        audit_down()

        resp = infer(caller, valid_request())

        assert resp.status_code == 503
        assert resp.json()["code"] == "audit_unavailable"
        assert b"OUTPUT" not in resp.content
        assert not AuditEvent.objects.filter(event_group="inference").exists()

    @pytest.mark.parametrize(
        "request_kind", ["no-token", "unknown-model", "invalid-json", "unreachable", "metadata", "ready"]
    )
    def test_error_paths_also_refuse(self, caller, model_version, audit_down, request_kind):
        deploy(model_version)
        audit_down()
        send = {
            "no-token": lambda: infer(Client(), valid_request()),
            "unknown-model": lambda: infer(caller, valid_request(), name="nope"),
            "invalid-json": lambda: infer(caller, b"{"),
            "unreachable": lambda: infer(caller, valid_request()),
            "metadata": lambda: caller.get("/v2/models/triage"),
            "ready": lambda: caller.get("/v2/models/triage/ready"),
        }[request_kind]

        resp = send()

        assert resp.status_code == 503
        assert resp.json()["code"] == "audit_unavailable"
        assert resp.json()["error"]
