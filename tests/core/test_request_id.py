"""X-Request-ID: accepted when well formed, generated otherwise, echoed, and recorded in the audit log."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from apps.core.context import bound_request_id, current_request_id
from tests.conftest import session_client

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/accounts/tokens/"


@pytest.fixture
def user_client(plain_user):
    """alice in a portal session: tokens are issued from a session, never with a token."""
    return session_client(plain_user)


def create_token(client, **headers):
    resp = client.post(TOKENS, {"name": "ci"}, format="json", **headers)
    assert resp.status_code == 201
    return resp, AuditEvent.objects.get(event_type="auth.token.create", target_id=str(resp.json()["id"]))


def test_given_request_id_is_echoed_and_recorded(user_client):
    resp, event = create_token(user_client, HTTP_X_REQUEST_ID="trace-2024.05_abc")

    assert resp["X-Request-ID"] == "trace-2024.05_abc"
    assert event.request_id == "trace-2024.05_abc"


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 65, "semi;colon", "ünïcode"])
def test_missing_or_malformed_request_id_is_replaced(user_client, given):
    headers = {} if given is None else {"HTTP_X_REQUEST_ID": given}

    resp, event = create_token(user_client, **headers)

    assert re.fullmatch(r"[0-9a-f]{32}", resp["X-Request-ID"])
    assert event.request_id == resp["X-Request-ID"]


def test_each_request_gets_its_own_id(user_client):
    first, _ = create_token(user_client)
    second, _ = create_token(user_client)

    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_id_does_not_outlive_the_request(user_client, plain_user):
    create_token(user_client, HTTP_X_REQUEST_ID="only-for-this-request")

    assert current_request_id() == ""
    assert record_event("auth.token.create", actor=plain_user).request_id == ""


def test_refused_request_is_correlated_too(anon_client):
    resp = anon_client.get(TOKENS, HTTP_AUTHORIZATION="Bearer svt_unknown", HTTP_X_REQUEST_ID="denied-1")

    assert resp.status_code == 401
    assert resp["X-Request-ID"] == "denied-1"
    assert AuditEvent.objects.get(event_type="auth.token.denied").request_id == "denied-1"


def test_bound_request_id_for_tasks(plain_user):
    with bound_request_id("from-the-api") as rid:
        event = record_event("auth.token.create", actor=plain_user)
    with bound_request_id(None) as generated:
        other = record_event("auth.token.create", actor=plain_user)

    assert (rid, event.request_id) == ("from-the-api", "from-the-api")
    assert re.fullmatch(r"[0-9a-f]{32}", generated) and other.request_id == generated
