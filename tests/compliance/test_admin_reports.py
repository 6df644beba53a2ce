"""Generating a report from the admin: the auditor fills in profile and period, the same audited
service as the API queues it, and the list shows its progress; a bad period is refused in words."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.compliance.models import ComplianceReport
from apps.compliance.services import attach_profile, evaluate_now
from tests.conftest import otp_login

pytestmark = pytest.mark.django_db
ADD = "/admin/compliance/compliancereport/add/"


def _form(start, end, profile="hipaa"):
    fmt = "%Y-%m-%d %H:%M:%S"
    return {"report_profile": profile, "start": start.strftime(fmt), "end": end.strftime(fmt), "report_language": ""}


def test_auditor_queues_a_report_from_the_admin(auditor_user, officer_user):
    attach_profile(profile="hipaa", actor=None)
    evaluate_now(actor=officer_user)
    client = Client()
    otp_login(client, auditor_user)
    now = timezone.now()

    response = client.post(ADD, _form(now - timedelta(days=1), now + timedelta(minutes=1)))

    assert response.status_code == 302, response.content[:2000]
    report = ComplianceReport.objects.get()
    assert (report.profile, report.language, report.requested_by) == ("hipaa", "en", auditor_user)
    assert AuditEvent.objects.filter(event_type="compliance.report.request", actor=auditor_user).count() == 1
    listing = client.get("/admin/compliance/compliancereport/")
    assert b"<progress" in listing.content


def test_a_period_without_evaluations_is_refused_with_the_reason(auditor_user):
    client = Client()
    otp_login(client, auditor_user)
    now = timezone.now()

    response = client.post(ADD, _form(now - timedelta(days=2), now - timedelta(days=1)), follow=True)

    assert not ComplianceReport.objects.exists()
    assert b"empty_period" in response.content


@pytest.mark.parametrize(
    "lang, words", [("en", "No evaluation of hipaa in this period"), ("zh-hans", "此期间内没有 hipaa 的评估")]
)
def test_a_refused_period_is_said_in_the_page_language_on_the_form_as_typed(auditor_user, lang, words):
    """A newcomer's Chinese page answered an empty period in English, on the list, the form gone."""
    client = Client(HTTP_ACCEPT_LANGUAGE=lang)
    otp_login(client, auditor_user)
    now = timezone.now()
    form = _form(now - timedelta(days=2), now - timedelta(days=1))

    response = client.post(ADD, form)
    inverted = client.post(ADD, _form(now, now - timedelta(days=1)))

    page = response.content.decode()
    assert response.status_code == 200 and words in page and "(empty_period)" in page
    assert f'value="{form["start"]}"' in page  # what was typed is still there
    assert inverted.status_code == 200 and "(invalid_period)" in inverted.content.decode()
    assert not ComplianceReport.objects.exists()


def test_the_form_proposes_the_last_30_days_and_queues_as_shown(auditor_user, officer_user):
    """A newcomer pressed Save on the empty form and got two "required" errors; the period is now
    filled in (the last 30 days to now, in the person's time zone) and saving it as shown works."""
    import re

    attach_profile(profile="hipaa", actor=None)
    evaluate_now(actor=officer_user)
    client = Client()
    otp_login(client, auditor_user)

    page = client.get(ADD).content.decode()
    shown = {name: re.search(rf'name="{name}" value="([^"]+)"', page).group(1) for name in ("start", "end")}
    response = client.post(ADD, {"report_profile": "hipaa", "report_language": "", **shown})

    assert response.status_code == 302, response.content[:2000]
    report = ComplianceReport.objects.get()
    assert timedelta(days=30) <= report.period_end - report.period_start <= timedelta(days=31, minutes=1)
    assert report.period_start <= timezone.now() <= report.period_end
