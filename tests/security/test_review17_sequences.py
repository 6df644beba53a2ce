"""Review of issue 17's operator console as an attacker: sequences of two or three of a role's own
steps through the new pages (roles section, grants, own tokens, break-glass, exports, quotas). The
first tests are chains that worked before their fix; the last ones chains that held, kept as guards."""

from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import ApiToken, EmergencyAccess, EnrolmentCode
from apps.accounts.roles import ANALYST, AUDITOR
from apps.accounts.services import issue_enrolment_code
from apps.audit.models import AuditEvent
from apps.audit.services import Source, record_event
from apps.gateway.models import LLMUsage, Quota
from apps.gateway.services import record_usage
from tests.conftest import make_user, otp_login
from tests.factories import ModelVersionFactory, token_for

pytestmark = pytest.mark.django_db


def session(user) -> Client:
    client = Client()
    otp_login(client, user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_a_role_on_the_superuser_leaves_its_second_factor_to_the_host(officer_user, admin_user):
    """An officer gave the superuser a privileged role on its user page (one click): the sealed
    account's authenticator was voided, the host's unspent enrolment code replaced, and the officer
    was shown a fresh enrolment code for the superuser — half of taking the sealed account over
    (its password is the other half). The superuser's second factor comes from the host only
    (`manage.py enrolment_code`, docs/access-control.md), as break-glass and "Remove second factor"
    already kept it."""
    TOTPDevice.objects.create(user=admin_user, name="root's authenticator", confirmed=True)
    host_code, _ = issue_enrolment_code(user=admin_user, actor=None)
    client = session(officer_user)

    response = client.post(
        reverse("admin:auth_user_roles", args=[admin_user.pk]), {"role": AUDITOR, "op": "assign"}, follow=True
    )

    assert admin_user.groups.filter(name=AUDITOR).exists()  # the role itself is the officer's to give
    assert not any("Enrolment code" in m for m in messages_of(response))
    assert TOTPDevice.objects.filter(user=admin_user, name="root's authenticator").exists()
    host_code.refresh_from_db()
    assert host_code.voided_at is None
    assert not EnrolmentCode.objects.filter(user=admin_user, issued_by=officer_user).exists()
    event = AuditEvent.objects.get(event_type="auth.role.assign", target_id=str(admin_user.pk))
    assert "enrolment_code" not in event.details and not event.details.get("totp_devices_voided")


def test_the_admin_reads_usage_without_the_token_inventory(staff_user, officer_user):
    """The admin role reads all usage but not the token inventory (no `accounts.view_apitoken`; the
    quota form names others' tokens by name and owner only): the usage row's page showed the
    officer's token as `name (svt_xxxxxx…)`, the first characters of its secret."""
    token_for(officer_user, name="officer-ci")
    token = ApiToken.objects.get(user=officer_user)
    version = ModelVersionFactory(model_name="chat-u", actor=staff_user)
    record_usage(
        request_id="r17-usage",
        user_id=officer_user.pk,
        username=officer_user.username,
        token_id=token.pk,
        model_id=version.model.pk,
        model_name="chat-u",
        model_version=1,
        prompt_tokens=1,
        completion_tokens=1,
        ttft_ms=1.0,
        duration_ms=1.0,
        finish_reason="stop",
    )
    row = LLMUsage.objects.get(request_id="r17-usage")

    page = session(staff_user).get(reverse("admin:gateway_llmusage_change", args=[row.pk]))

    assert page.status_code == 200
    assert b"officer-ci (sofia)" in page.content
    assert token.hint.encode() not in page.content


# What a browser sends (Fetch Metadata): a person's click or typed address carries `Sec-Fetch-User: ?1`;
# a page's own polling fetch or timed reload does not.
POLL = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
RELOAD = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
CLICK = {**RELOAD, "Sec-Fetch-User": "?1"}


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def test_an_unattended_dashboard_still_logs_out(staff_user, clock):
    """The console is meant to stay open all day: the dashboard polls its figures every 15 s and the
    live pages reload themselves every few seconds. Each of those requests counted as the person's
    activity, so a privileged session left open on an unattended screen never reached the idle
    timeout (HIPAA 164.312(a)(2)(iii) automatic logoff, 等保 session timeout) while the compliance
    check `settings.idle_timeout` reported it enforced."""
    client = session(staff_user)
    data = reverse("admin:dashboard-data")
    live = reverse("admin:deployments_inferenceserver_changelist")
    assert client.get(reverse("admin:index"), headers=CLICK).status_code == 200

    # 14 minutes of the page refreshing itself (every request past the minute that would touch the
    # session), nobody at the keyboard
    for _ in range(7):
        clock.shift(timedelta(minutes=1, seconds=1))
        assert client.get(data, headers=POLL).status_code == 200
        clock.shift(timedelta(seconds=59))
        assert client.get(live, headers=RELOAD).status_code == 200
    clock.shift(timedelta(minutes=2))  # 16 minutes since the person last did anything

    response = client.get(data, headers=POLL)

    assert response.status_code == 302 and response["Location"].startswith(settings.LOGIN_URL)
    assert AuditEvent.objects.filter(
        event_type="auth.session.expired", actor_id=staff_user.pk, details__reason="idle"
    ).exists()


def test_a_person_at_the_keyboard_keeps_the_session(staff_user, clock):
    client = session(staff_user)
    data = reverse("admin:dashboard-data")
    for _ in range(4):  # an hour of clicks 14 minutes apart, the page polling in between
        clock.shift(timedelta(minutes=7))
        assert client.get(data, headers=POLL).status_code == 200
        clock.shift(timedelta(minutes=7))
        assert client.get(reverse("admin:index"), headers=CLICK).status_code == 200
    assert client.get(data).status_code == 200  # a client without fetch metadata counts as the person
    assert not AuditEvent.objects.filter(event_type="auth.session.expired").exists()


# --- Chains the review tried that held: kept as guards --------------------------------------------


def _body(response) -> str:
    return b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()


@pytest.mark.parametrize(
    "narrowing", [{}, {"event_group": "auth"}, {"event_type": "auth.login.success"}, {"q": "needle"}, {"actor": "pat"}]
)
def test_the_officers_export_holds_key_events_whatever_the_filters(officer_user, narrowing):
    pat = make_user("pat", ANALYST)
    record_event("auth.login.success", actor=pat, source=Source(ip="192.0.2.7"), details={"x": "needle"})

    response = session(officer_user).post(
        reverse("admin:audit_auditevent_export"), {"file_format": "jsonl", **narrowing}
    )

    records = [json.loads(line) for line in _body(response).splitlines()]
    shown = [r for r in records if r["type"] in ("event", "pending")]
    assert all(r["event_group"] == "keys" for r in shown), shown


def test_the_export_fails_closed(auditor_user):
    client = session(auditor_user)
    failing = mock.patch("apps.audit.services.record_event", side_effect=RuntimeError("audit down"))
    with failing, pytest.raises(RuntimeError):  # no answer, so no byte of the log, without its event
        client.post(reverse("admin:audit_auditevent_export"), {"file_format": "csv"})


def test_names_and_reasons_are_text_on_the_new_pages(officer_user, staff_user):
    evil = "<script>alert(1)</script>"
    model = ModelVersionFactory(model_name="m-x", actor=staff_user).model
    pat = make_user("pat", ANALYST)
    token_for(pat, name=evil)
    token = ApiToken.objects.get(user=pat)
    client = session(officer_user)
    client.post(
        reverse("admin:accounts_emergencyaccess_add"), {"user": pat.pk, "role": "guest", "minutes": 5, "reason": evil}
    )
    client.post(reverse("admin:gateway_quota_add"), {"scope": "token", "token": token.pk, "tokens_per_day": 5})
    assert EmergencyAccess.objects.filter(user=pat).exists() and Quota.objects.filter(token=token).exists()

    for url in (
        reverse("admin:accounts_emergencyaccess_changelist"),
        reverse("admin:gateway_quota_changelist"),
        reverse("admin:accounts_apitoken_changelist"),
        reverse("admin:registry_model_grants", args=[model.pk]),
        reverse("admin:auth_user_change", args=[pat.pk]),
        reverse("admin:audit_auditevent_export") + "?q=" + evil,
    ):
        assert evil.encode() not in client.get(url).content, url


def test_a_quota_is_set_and_removed_only_by_who_may_manage_quotas(plain_user, officer_user):
    """set_quota and delete_quota trusted their callers (the API and the admin) to have checked
    `gateway.manage_quota`: any other caller (a view, a command, a task added later) wrote quotas on its
    actor's say-so. The services check the actor themselves now; nothing is written when they refuse."""
    from apps.core.errors import ServiceError
    from apps.gateway.services import delete_quota, set_quota

    events = AuditEvent.objects.count()
    with pytest.raises(ServiceError) as refused:
        set_quota(scope="user", subject_id=plain_user.pk, actor=plain_user, tokens_per_day=10**6)
    assert refused.value.code == "permission_denied"
    assert not Quota.objects.exists() and AuditEvent.objects.count() == events

    quota = set_quota(scope="user", subject_id=plain_user.pk, actor=officer_user, tokens_per_day=5)
    with pytest.raises(ServiceError) as refused:
        delete_quota(quota_id=quota.pk, actor=plain_user)
    assert refused.value.code == "permission_denied"
    assert Quota.objects.filter(pk=quota.pk).exists()
    delete_quota(quota_id=quota.pk, actor=officer_user)
    assert not Quota.objects.exists()


def test_an_enrolment_code_waits_for_its_page_in_the_session_not_in_a_cookie(officer_user, plain_user):
    """A privileged role's enrolment code is shown once, as a message on the next page. With Django's
    default storage it travelled in the `messages` cookie — signed, not encrypted: readable by anything
    that sees the browser's cookies. It waits in the server-side session now."""
    from django.conf import settings

    client = session(officer_user)
    response = client.post(reverse("admin:auth_user_roles", args=[plain_user.pk]), {"op": "assign", "role": AUDITOR})
    assert response.status_code == 302
    assert settings.MESSAGE_STORAGE.endswith("SessionStorage")
    assert "messages" not in response.cookies or not response.cookies["messages"].value
    assert EnrolmentCode.objects.filter(user=plain_user, used_at=None).count() == 1
    shown = " ".join(messages_of(client.get(response["Location"])))
    assert "enrol" in shown.lower() or "注册" in shown, shown  # the next page shows the code, once
    assert not messages_of(client.get(response["Location"]))


def test_another_site_cannot_make_a_browser_record_a_report_download(auditor_user):
    """The report download is a GET that writes `compliance.report.download`: an image tag on another
    site, loaded by an auditor's browser, made the portal record a download the auditor never asked
    for (nothing leaked: the other site cannot read the answer, but the record was false). A browser's
    request made for another site (Sec-Fetch-Site cross-site or same-site) is refused now and
    records nothing; the auditor's own click (same-origin) or typed address (none) downloads."""
    from apps.compliance.models import ComplianceReport, ReportState
    from apps.compliance.storage import directory

    folder = directory("reports")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r-review.csv").write_text("control,status\n")
    now = timezone.now()
    report = ComplianceReport.objects.create(
        profile="hipaa",
        period_start=now - timedelta(days=1),
        period_end=now,
        language="en",
        state=ReportState.DONE,
        files={"csv": "r-review.csv"},
    )
    url = reverse("admin:compliance_compliancereport_download", args=[report.pk]) + "?file_format=csv"
    client = session(auditor_user)

    def downloads():
        return AuditEvent.objects.filter(event_type="compliance.report.download").count()

    for site in ("cross-site", "same-site"):
        assert client.get(url, HTTP_SEC_FETCH_SITE=site).status_code == 403
    assert downloads() == 0
    for site in ("same-origin", "none"):
        response = client.get(url, HTTP_SEC_FETCH_SITE=site, HTTP_SEC_FETCH_USER="?1")
        assert response.status_code == 200, site
        assert b"".join(response.streaming_content) == b"control,status\n"
    assert downloads() == 2
