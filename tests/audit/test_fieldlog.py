"""django-auditlog field changes bridged into the chain with the request id, never secrets, and
an action whose audit record cannot be written fails whole."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.audit.models import AuditEvent
from apps.deployments.models import InferenceServer
from tests.conftest import session_client

pytestmark = pytest.mark.django_db

SERVERS = "/api/v1/deployments/servers/"
TOKENS = "/api/v1/accounts/tokens/"
SERVER = {"name": "edge-9", "http_url": "http://triton-9.internal:8000/", "hardware": "cpu"}


def field_changes(target_type: str):
    return AuditEvent.objects.filter(event_type="audit.field_change", target_type=target_type)


def test_field_change_carries_request_id_actor_and_values(staff_client, staff_user):
    resp = staff_client.post(SERVERS, SERVER, format="json", HTTP_X_REQUEST_ID="req-field-1")

    assert resp.status_code == 201
    event = field_changes("deployments.inferenceserver").get()
    assert (event.request_id, event.actor_id, event.actor_name) == ("req-field-1", staff_user.pk, "ops")
    assert event.actor_roles == ["admin"]
    assert event.details["action"] == "create"
    assert event.details["changes"]["name"] == {"before": "None", "after": "edge-9"}
    domain = AuditEvent.objects.get(event_type="deployment.server.create")
    assert domain.request_id == "req-field-1"


def test_token_secrets_never_enter_the_log(plain_user):
    resp = session_client(plain_user).post(TOKENS, {"name": "ci", "scopes": ["read"]}, format="json")
    assert resp.status_code == 201, resp.json()
    plaintext = resp.json()["token"]

    event = field_changes("accounts.apitoken").filter(details__action="create").latest("id")
    assert "digest" not in event.details["changes"] and "name" in event.details["changes"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_auditevent WHERE details::text LIKE %s", [f"%{plaintext[4:20]}%"])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM auditlog_logentry WHERE changes::text LIKE %s", ["%digest%"])
        assert cursor.fetchone()[0] == 0


@pytest.fixture
def audit_refuses_inserts():
    """A temporary trigger (rolled back with the test) that makes every audit insert fail."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_audit_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit storage unavailable (test)'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_audit_insert BEFORE INSERT ON audit_auditevent "
            "FOR EACH ROW EXECUTE FUNCTION refuse_audit_insert()"
        )


def test_action_fails_when_its_audit_record_cannot_be_written(staff_client, audit_refuses_inserts):
    resp = staff_client.post(SERVERS, SERVER, format="json")

    assert resp.status_code == 503
    assert resp.json()["code"] == "audit_unavailable"
    assert not InferenceServer.objects.exists()
