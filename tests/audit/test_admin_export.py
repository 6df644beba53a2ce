"""Exporting the audit log from the admin (issue 17): a form of the API's filters whose POST
downloads the same export (JSON Lines or CSV), recorded as `audit.export` with the filters; the
officer's export holds key events only; the admin role has no page."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from tests.conftest import otp_login

pytestmark = pytest.mark.django_db
EXPORT = "/admin/audit/auditevent/export/"


def _client(user) -> Client:
    client = Client()
    otp_login(client, user)
    return client


def _lines(response) -> list[dict]:
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_auditor_exports_a_filtered_selection(auditor_user, officer_user):
    record_event("auth.login.success", actor=officer_user, details={})
    record_event("auth.login.success", actor=auditor_user, details={})
    client = _client(auditor_user)
    assert b"Export" in client.get("/admin/audit/auditevent/").content
    since = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")

    response = client.post(
        EXPORT,
        {"since": since, "actor": officer_user.username, "event_type": "auth.login.success", "file_format": "jsonl"},
    )

    assert response.status_code == 200 and response["Content-Disposition"].endswith('audit-export.jsonl"')
    events = [line for line in _lines(response) if line["type"] in ("event", "pending")]
    assert [e["actor_name"] for e in events] == [officer_user.username]
    export = AuditEvent.objects.filter(event_type="audit.export").latest("id")
    assert export.actor_id == auditor_user.pk
    assert export.details["filters"]["actor"] == officer_user.username and export.details["rows"] == 1


def test_officer_exports_key_events_only_and_admin_is_refused(officer_user, auditor_user, staff_user):
    record_event("auth.login.success", actor=auditor_user, details={})
    client = _client(officer_user)
    page = client.get(EXPORT)
    assert page.status_code == 200 and b"key-management events only" in page.content

    response = client.post(EXPORT, {"file_format": "csv"})

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    assert "auth.login.success" not in body
    assert _client(staff_user).get(EXPORT).status_code == 403
    assert _client(staff_user).post(EXPORT, {"file_format": "csv"}).status_code == 403


def test_a_bad_filter_is_refused_in_words(auditor_user):
    response = _client(auditor_user).post(EXPORT, {"source_ip": "not-an-address", "file_format": "jsonl"}, follow=True)
    assert response.status_code == 200 and b"not an IPv4 or IPv6 address" in response.content
    assert not AuditEvent.objects.filter(event_type="audit.export").exists()
