"""Review of the console changes of 2026-12-01 as an attacker: sequences of two or three of a role's
own steps through them (audit names of targets, ISO date-time fields, the report download and its
API twin, the trained de-identifier tagger). The first tests are chains that worked before their
fix; the last ones chains that held, kept as guards."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from tests.conftest import otp_login
from tests.factories import token_for

pytestmark = pytest.mark.django_db


def session(user) -> Client:
    client = Client()
    otp_login(client, user)
    return client


def _finished_report(name: str = "r-review18.csv"):
    from apps.compliance.models import ComplianceReport, ReportState
    from apps.compliance.storage import directory

    folder = directory("reports")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("control,status\n")
    now = timezone.now()
    return ComplianceReport.objects.create(
        profile="hipaa",
        period_start=now - timedelta(days=1),
        period_end=now,
        language="en",
        state=ReportState.DONE,
        files={"csv": name},
    )


def test_another_site_cannot_make_a_browser_record_an_api_report_download(auditor_user):
    """Review 17 refused the admin's report download when another site's page asked for it; the API's
    download (GET /api/v1/compliance/reports/<id>/download/) takes the same browser session
    (SessionAuthentication) and still wrote `compliance.report.download`: (1) the auditor is logged in
    to the console, (2) a page on another site (or on a sibling host of the hospital's domain, which
    the session cookie's SameSite=Lax does not stop for subresources) points a link or an image at the
    API download, (3) the log records a download the auditor never asked for. A session request that a
    browser made for another site is refused now and records nothing; the same URL from the portal's
    own pages, a typed address, and an API client with its token still download."""
    report = _finished_report()
    url = reverse("compliance-report-download", args=[report.pk]) + "?file_format=csv"
    client = session(auditor_user)

    def downloads():
        return AuditEvent.objects.filter(event_type="compliance.report.download").count()

    for site in ("cross-site", "same-site"):
        response = client.get(url, HTTP_SEC_FETCH_SITE=site)
        assert response.status_code == 403, site
    assert downloads() == 0
    for site in ("same-origin", "none"):
        response = client.get(url, HTTP_SEC_FETCH_SITE=site, HTTP_SEC_FETCH_USER="?1")
        assert response.status_code == 200, site
        assert b"".join(response.streaming_content) == b"control,status\n"
    assert downloads() == 2
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(auditor_user, name='reports-ci')}")
    response = api.get(url)
    assert response.status_code == 200
    assert downloads() == 3


def test_another_site_cannot_make_a_browser_record_an_audit_export_or_search(auditor_user):
    """The same chain through the audit API's GETs, which are themselves audited: another site's page
    made the auditor's browser export the log (`audit.export`, the file landing in the auditor's
    downloads) or search it (`audit.search` with the other site's chosen filters) in the auditor's
    name. Refused now, nothing recorded."""
    client = session(auditor_user)
    before = AuditEvent.objects.filter(event_type__in=("audit.export", "audit.search")).count()
    for site in ("cross-site", "same-site"):
        assert client.get(reverse("audit-export", args=["csv"]), HTTP_SEC_FETCH_SITE=site).status_code == 403
        assert client.get("/api/v1/audit/events/?actor_name=sofia", HTTP_SEC_FETCH_SITE=site).status_code == 403
    assert AuditEvent.objects.filter(event_type__in=("audit.export", "audit.search")).count() == before
    assert client.get("/api/v1/audit/events/", HTTP_SEC_FETCH_SITE="same-origin").status_code == 200


@pytest.fixture
def with_tagger():
    from apps.gateway.deid import model

    was = model._enabled
    model.set_enabled(True)
    if not model.enabled():
        pytest.skip("python-crfsuite or the tagger's model file is missing")
    model.warm()
    yield model
    model.set_enabled(was)


def test_one_long_line_cannot_take_the_tagger_past_the_budget(with_tagger):
    """With SOVEREIGN_DEID_MODEL=1: (1) an analyst sends one line of 400,000 Han characters, no
    sentence end in it (under the 1 Mi-character limit), (2) the rules pass it inside the 2-second
    budget, which is checked once more before the tagger, (3) the tagger then read the whole line as
    one segment: every token's features built at once (about 2.5 KB a character: 1 GiB here, 2.6 GiB
    at the limit) and about 3 more CPU seconds before the budget was looked at again — a few such
    requests at once could exhaust a data-plane host's memory. Segments are cut at MAX_SEGMENT
    characters now and the budget is checked between them: the request stops within one segment of
    its budget."""
    from apps.gateway.deid import engine
    from apps.gateway.deid.engine import BudgetExceeded

    text = "张伟王芳李娜刘洋" * 50_000
    assert all(b - a <= with_tagger.MAX_SEGMENT for a, b in with_tagger.segments(text))
    budget = engine.Budget(2.0)
    with pytest.raises(BudgetExceeded):
        engine.detect(text, budget=budget)
    assert budget.spent < 2.0 + 0.5


@pytest.mark.parametrize(
    "zone,typed", [("America/New_York", "9999-12-31 23:59:59"), ("Asia/Shanghai", "0001-01-01 00:00:00")]
)
def test_a_date_at_the_calendars_edge_is_refused_beside_the_field(officer_user, zone, typed):
    """(1) The portal runs in a zone behind UTC (SOVEREIGN_TIME_ZONE), (2) an officer types the last
    second of year 9999 as a grant's expiry ("never, really"), (3) the ISO field accepted it and the
    page failed with a 500 (OverflowError: the instant is in year 10000 in UTC) — nothing granted,
    but no word beside the field either; year 1 in a zone ahead of UTC is the same at the other end.
    Refused now beside the field, in the page's language, like any bad date."""
    from django.test import override_settings

    from apps.accounts.models import ModelUserGrant
    from apps.accounts.roles import ANALYST
    from tests.conftest import make_user
    from tests.factories import ModelVersionFactory

    with override_settings(TIME_ZONE=zone):
        model = ModelVersionFactory(model_name="triage-edge").model
        person = make_user("pat", ANALYST)
        client = Client(raise_request_exception=False)
        otp_login(client, officer_user)
        url = reverse("admin:registry_model_grants", args=[model.pk])
        response = client.post(url, {"user": person.pk, "permission": "invoke_model", "expires_at": typed})
        assert response.status_code == 200
        assert "Enter the date and time as YYYY-MM-DD HH:MM:SS" in response.content.decode()
        assert not ModelUserGrant.objects.filter(user=person).exists()


def test_evaluate_now_runs_once_at_a_time_on_the_server(officer_user):
    """Evaluate now takes about 20 s in the request. busy.js drops a second submit in the page, but
    the server ran every POST it got: (1) the officer (or a script on their token, or a second tab)
    posts Evaluate now several times at once, (2) each held a web worker for its 20 s of checks — a
    handful of posts and the console answered no one — and (3) the runs each compared with the same
    previous run, so one control's regression was recorded and alerted once per run. While an
    evaluation asked for by a person is running, another is refused (409 `evaluation_running`) and
    nothing is recorded; the scheduled run is left alone."""
    from django.db import connections

    from apps.compliance.models import EvaluationRun
    from apps.compliance.services import EVALUATION_LOCK

    client = session(officer_user)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(officer_user, name='eval-ci', scopes=['read', 'manage'])}")
    other = connections.create_connection("default")  # the first evaluation's request, elsewhere
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [EVALUATION_LOCK])
        response = client.post(reverse("admin:compliance_controlresult_evaluate"), follow=True)
        assert any("evaluation_running" in str(m) for m in response.context["messages"])
        refused = api.post("/api/v1/compliance/evaluate/")
        assert refused.status_code == 409, refused.content
        assert not EvaluationRun.objects.exists()
        assert not AuditEvent.objects.filter(event_type="compliance.evaluate").exists()
    finally:
        other.close()
    assert api.post("/api/v1/compliance/evaluate/").status_code == 201  # the lock went with its session
    assert EvaluationRun.objects.count() == 1


# --- Chains that held, kept as guards ---------------------------------------------------------


def test_a_readers_language_and_zone_do_not_change_how_the_log_names_a_target(auditor_user):
    """record_event names a target by its audit_display() (English, UTC), not by the page's __str__
    (the reader's language and zone): an auditor on a Chinese page in Shanghai downloads a report and
    the event reads as it would from anyone else, so the log's text of one report does not depend on
    who touched it (a search for it finds every event)."""
    from django.test import override_settings

    report = _finished_report("r-review18-zh.csv")
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    otp_login(client, auditor_user)
    url = reverse("admin:compliance_compliancereport_download", args=[report.pk]) + "?file_format=csv"
    with override_settings(TIME_ZONE="Asia/Shanghai"):
        response = client.get(url, HTTP_SEC_FETCH_SITE="same-origin", HTTP_SEC_FETCH_USER="?1")
    assert response.status_code == 200
    event = AuditEvent.objects.get(event_type="compliance.report.download")
    assert event.target_display == report.audit_display()
    assert event.target_display.isascii() and "报告" not in event.target_display
