"""audit.activity_review: an auditor's reads of the audit log, recorded by the log itself through
the real API and admin, within the review window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.compliance.checks import FAIL, PASS, Context, run_check
from tests.conftest import otp_login

pytestmark = pytest.mark.django_db


def check(now=None):
    return run_check("audit.activity_review", Context(profile="hipaa", now=now or timezone.now()))


def test_no_review_fails_then_an_auditor_search_passes(auditor_client):
    result = check()
    assert result.status == FAIL and "no auditor read the audit log in the last 30 days" in result.summary
    resp = auditor_client.get("/api/v1/audit/events/", {"event_group": "auth"})
    assert resp.status_code == 200
    result = check()
    assert result.status == PASS, result.summary
    assert result.evidence["auditors"] == ["audrey"] and result.evidence["last_review"]["type"] == "audit.search"


def test_export_and_verify_count_as_review(auditor_client):
    assert auditor_client.get("/api/v1/audit/export/jsonl/").status_code == 200
    assert check().evidence["last_review"]["type"] == "audit.export"
    assert auditor_client.get("/api/v1/audit/verify/").status_code == 200
    assert check().evidence["reads_by_auditors"] == 2


def test_reads_by_others_do_not_count(officer_client):
    assert officer_client.get("/api/v1/audit/events/").status_code == 200  # the officer reads key events
    result = check()
    assert result.status == FAIL and result.evidence["reads_by_non_auditors"] == ["sofia"]


def test_a_review_older_than_the_window_fails(auditor_client, settings):
    auditor_client.get("/api/v1/audit/events/")
    assert check().status == PASS
    assert check(now=timezone.now() + timedelta(days=31)).status == FAIL
    settings.AUDIT_REVIEW_DAYS = 7
    assert "7 days" in check(now=timezone.now() + timedelta(days=8)).summary


def test_opening_one_event_in_the_admin_is_recorded(auditor_user):
    client = Client()
    otp_login(client, auditor_user)
    event = AuditEvent.objects.order_by("-id").first()
    resp = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert resp.status_code == 200
    read = AuditEvent.objects.filter(event_type="audit.search", actor_name="audrey").latest("id")
    assert read.details == {"admin": True, "id": str(event.pk)}
    assert check().status == PASS
