"""The compliance pages in the page's language (issue 17, found walking the console in Chinese): the
results' families, the checks' summaries and the remedy, the evaluations' names (local time with
seconds), the report page's signer line; and no English label on the results list, a result's page,
the evaluate page and the report page. What is stored (English, for the audit log and the JSON and
CSV reports) stays as it was."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.utils import timezone, translation

from apps.accounts.models import Profile
from apps.audit.models import AuditEvent
from apps.compliance.catalog import get_profile
from apps.compliance.evaluation import run_evaluation
from apps.compliance.models import ComplianceReport, ControlResult, EvaluationRun
from tests.conftest import otp_login

pytestmark = pytest.mark.django_db
RESULTS = "/admin/compliance/controlresult/"

# ASCII a Chinese page may show in a label: names, acronyms, formats (as tests/e2e/test_console_look.py)
ALLOWED_ASCII = {"Sovereign", "API", "TOTP", "KEK", "SM3", "HSM", "ID", "PKCS", "PDF", "CSV", "JSON", "SHA"}
ALLOWED_ASCII |= {"YYYY", "MM", "DD", "HH", "SS", "hipaa", "dengbao", "l3", "UTC", "CST", "Asia", "Shanghai"}


class _Labels(HTMLParser):
    """The texts a reader takes as the page's words, not its data: headings, table headings, labels,
    captions, buttons, the object tools, the filters, help texts, messages and the breadcrumbs
    (a path, a token's name or a check's record, in `sv-mono` or `code`, is data)."""

    LABEL_TAGS = {"h1", "h2", "h3", "th", "label", "caption", "button", "summary", "legend", "title"}
    LABEL_CLASSES = {"help", "messagelist", "object-tools", "breadcrumbs", "submit-row", "paginator"}
    VOID = {"input", "img", "br", "meta", "link", "hr", "col", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[bool, bool]] = []  # (a label, data inside)
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        label_above, data_above = self.stack[-1] if self.stack else (False, False)
        if tag in self.VOID:
            if tag == "input" and a.get("type") == "submit" and a.get("value"):
                self.texts.append(a["value"])
            for attr in ("placeholder", "aria-label", "alt", "data-busy-text"):
                if a.get(attr):
                    self.texts.append(a[attr])
            return
        classes = set((a.get("class") or "").split())
        label = tag in self.LABEL_TAGS or bool(classes & self.LABEL_CLASSES) or a.get("id") == "changelist-filter"
        data = tag in ("script", "style", "code", "select", "textarea") or "sv-mono" in classes
        self.stack.append((label or label_above, data or data_above))

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == (True, False) and data.strip():
            self.texts.append(data.strip())


def english_labels(html: str, allowed: set[str] = frozenset()) -> dict[str, set[str]]:
    parser = _Labels()
    parser.feed(html)
    words = ALLOWED_ASCII | set(allowed)
    return {t: found for t in parser.texts if (found := set(re.findall(r"[A-Za-z][A-Za-z0-9]+", t)) - words)}


def zh(user) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    otp_login(client, user)
    return client


@pytest.fixture
def run_with_results():
    """One evaluation of 等保 level 3 controls as the checks store them: English family, an English
    check summary the Chinese report translates, the catalogue's English remedy."""
    profile = get_profile("dengbao-l3")
    control = next(c for c in profile.controls if c.family["en"] == "Identification and authentication")
    run = EvaluationRun.objects.create(started_at=timezone.now(), finished_at=timezone.now(), failed=1)
    result = ControlResult.objects.create(
        run=run,
        profile="dengbao-l3",
        control_id=control.id,
        family=control.family["en"],
        status="fail",
        evidence=[
            {
                "check": "accounts.password_policy",
                "proof": "query",
                "status": "fail",
                "summary": "sessions end after 30 idle minutes",
                "minutes": 30,
            }
        ],
        remedy=control.remedy["en"],
    )
    return run, result, control


def test_the_results_list_names_families_in_chinese(officer_user, run_with_results):
    run, result, control = run_with_results
    page = zh(officer_user).get(RESULTS).content.decode()

    assert control.family["zh"] in page
    assert f">{control.family['en']}<" not in page  # not in a cell, not in the family filter
    assert english_labels(page) == {}


def test_a_result_page_shows_summaries_and_remedy_in_chinese(officer_user, run_with_results):
    run, result, control = run_with_results
    page = zh(officer_user).get(f"{RESULTS}{result.pk}/change/").content.decode()

    assert control.family["zh"] in page and control.remedy["zh"] in page and control.summary["zh"] in page
    assert "空闲 30 分钟后会话结束" in page  # the check's summary, as the Chinese report says it
    assert control.remedy["en"] not in page and "sessions end after" not in page
    assert english_labels(page) == {}
    result.refresh_from_db()
    assert result.family == control.family["en"] and result.remedy == control.remedy["en"]  # stored as was


def test_the_same_page_in_english_is_unchanged(officer_user, run_with_results):
    run, result, control = run_with_results
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    otp_login(client, officer_user)
    page = client.get(f"{RESULTS}{result.pk}/change/").content.decode()

    assert control.family["en"] in page and control.remedy["en"] in page
    assert "sessions end after 30 idle minutes" in page


def test_an_evaluation_is_named_in_chinese_at_local_time_with_seconds(officer_user, run_with_results):
    run, _, _ = run_with_results
    Profile.objects.update_or_create(user=officer_user, defaults={"time_zone": "Asia/Shanghai"})
    page = zh(officer_user).get(f"{RESULTS}?run__id__exact={run.pk}").content.decode()

    local = timezone.localtime(run.started_at, timezone=_zone("Asia/Shanghai"))
    assert f"评估 #{run.pk}（{local:%Y-%m-%d %H:%M:%S} CST）" in page, re.findall(r"评估 #\d+[^<]*", page)
    assert f"evaluation #{run.pk}" not in page


def _zone(name):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def test_the_audit_log_names_the_run_as_it_always_did():
    """The event of an evaluation keeps its English, UTC target name whatever the page's language."""
    with translation.override("zh-hans"), timezone.override(_zone("Asia/Shanghai")):
        run = run_evaluation(trigger="api")
    event = AuditEvent.objects.get(event_type="compliance.evaluate", target_id=str(run.pk))
    assert event.target_display == f"evaluation #{run.pk} at {run.started_at.astimezone(_zone('UTC')):%Y-%m-%d %H:%M}"


def test_the_evaluate_page_says_it_is_working_and_has_no_english_label(officer_user):
    page = zh(officer_user).get(f"{RESULTS}evaluate/").content.decode()

    assert 'data-busy-text="评估中…"' in page and 'data-busy-note="sv-evaluating"' in page
    assert 'id="sv-evaluating" role="status" hidden' in page and "portal/busy.js" in page
    assert english_labels(page) == {}


def test_the_report_page_names_its_signer_in_chinese(auditor_user):
    now = timezone.now()
    report = ComplianceReport.objects.create(
        profile="hipaa",
        period_start=now - timedelta(days=1),
        period_end=now,
        language="zh-hans",
        state="done",
        progress=100,
    )
    page = zh(auditor_user).get(f"/admin/compliance/compliancereport/{report.pk}/change/").content.decode()

    signing = page[page.index('id="report-signing"') :]
    assert "本地密钥文件" in signing and "不在密码模块中" in signing and "不在 HSM 中" in signing
    assert "local key file" not in signing and "not in an HSM" not in signing
    assert english_labels(page) == {}


def test_rows_are_named_in_the_page_language_and_the_audit_log_keeps_their_names():
    """A report's and an attachment's names follow the page; the events about them keep the English,
    UTC names they always had, whatever the language of the request that writes them."""
    from apps.audit.services import record_event
    from apps.compliance.models import ProfileAttachment

    start = timezone.now().replace(hour=1) - timedelta(days=2)
    report = ComplianceReport.objects.create(profile="hipaa", period_start=start, period_end=start + timedelta(days=1))
    attachment = ProfileAttachment.objects.create(profile="hipaa")
    with translation.override("zh-hans"):
        assert "报告" in str(report) and "排队中" in str(report), str(report)
        assert str(attachment) == "hipaa 附加于 整个安装", str(attachment)
        for target in (report, attachment):
            record_event("compliance.report.request", actor=None, target=target)
    names = set(AuditEvent.objects.values_list("target_display", flat=True))
    day = "%Y-%m-%d"
    end = start + timedelta(days=1)
    assert names == {f"hipaa report {start:{day}}..{end:{day}} (queued)", "hipaa on the installation"}, names


def test_an_audit_event_is_named_at_local_time_with_its_outcome_in_words():
    """The audit event page's heading and breadcrumbs said `… auth.login.success success` in UTC."""
    from apps.audit.services import record_event

    event = record_event("compliance.evaluate", actor=None)
    with translation.override("zh-hans"), timezone.override(_zone("Asia/Shanghai")):
        name = str(event)
    local = timezone.localtime(event.timestamp, _zone("Asia/Shanghai"))
    assert name == f"{local:%Y-%m-%d %H:%M:%S} CST - compliance.evaluate 成功", name
    assert event.audit_display().endswith(" compliance.evaluate success")


def test_a_report_names_its_language_not_its_code(auditor_user):
    """nu18's first `make run`: the Chinese report list and page said "语言: zh-hans"."""
    now = timezone.now()
    report = ComplianceReport.objects.create(
        profile="hipaa", period_start=now - timedelta(days=1), period_end=now, language="zh-hans", state="done"
    )
    client = zh(auditor_user)

    for path in ("/admin/compliance/compliancereport/", f"/admin/compliance/compliancereport/{report.pk}/change/"):
        page = client.get(path).content.decode()
        assert "简体中文" in page, path
        assert not re.search(r">\s*zh-hans\s*<", page), path
