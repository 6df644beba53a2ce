# ruff: noqa: F401, F811 - job_page is the harness fixture from tests/e2e/jobs.py, used by name
"""Issue 17, the compliance, audit and key jobs in real Chromium, in English and in Chinese, each done
by the role that may do it, through the admin's pages (clicks and forms), with its effect checked in
the database and in the audit log, and the role that may not shown no button and a 403:

- the security officer attaches a compliance profile to a model from the model's page and detaches
  it there (the auditor reads);
- the security officer evaluates now and reads the run's results (the auditor has no button);
- the auditor downloads a finished report's PDF and signature (the admin role has no report pages),
  the page saying which provider really signs (here: a local key file, not an HSM);
- the auditor exports the audit log with filters, the officer its key events (the admin role: 403);
- the security officer starts a KEK rotation and watches re-wrapped / total reach the end as the
  worker re-wraps (the auditor has no button), every key page naming the local key file as such.

Screenshots of every page: <artefacts>/<lang>/<role>/compliance-*.png (tests/e2e/jobs.py)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.roles import ADMIN, AUDITOR, SECURITY_OFFICER
from apps.audit.models import AuditEvent
from apps.compliance import services as compliance
from apps.compliance.catalog import get_profile, pick
from apps.compliance.models import ControlResult, EvaluationRun, ProfileAttachment, ReportState
from apps.keys.models import KekRotation, RotationState
from apps.keys.tasks import rewrap_task
from portal.celery import app as celery_app
from tests.e2e.jobs import LANGS, assert_language, axe_serious, dump, go, job_page, shot
from tests.factories import ModelVersionFactory
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

# What the pages say in each language (the Chinese from the .po files): proof that a zh-hans page
# is really in Chinese, not English with lang="zh-hans".
SAYS = {
    "en": {
        "installation": "the whole installation",
        "evaluate": "Evaluate now",
        "download": "Download",
        "signed_by": "Signed by",
        "local_file": "a local key file on this server — not an HSM (development)",
        "export": "Export the audit log",
        "key_only": "key-management events only",
        "custody": "Local key file on this server — not an HSM (development)",
        "rewrapped": "data keys re-wrapped",
        "evaluating": "Evaluating…",
        "key_file": "local key file",
    },
    "zh-hans": {
        "installation": "整个安装",
        "evaluate": "立即评估",
        "download": "下载",
        "signed_by": "签名者",
        "local_file": "本服务器上的本地密钥文件——不是 HSM（开发模式）",
        "export": "导出审计日志",
        "key_only": "只能读取密钥管理事件",
        "custody": "本服务器上的本地密钥文件——不是 HSM（开发模式）",
        "rewrapped": "个数据密钥",
        "evaluating": "评估中…",
        "key_file": "本地密钥文件",
    },
}
# Watches the evaluate form from inside the page: once its button changes on submit, records the
# button's state, whether the note shows and what a second submit does (the page's handler drops it:
# defaultPrevented), in sessionStorage, which outlives the navigation to the results.
BUSY_WATCH = """() => {
  const form = document.getElementById("evaluate-form");
  const button = form.querySelector("input[name=evaluate]");
  new MutationObserver(() => {
    if (!button.disabled || sessionStorage.getItem("sv-busy")) return;
    let again = "sent";
    form.addEventListener("submit", event => { again = event.defaultPrevented ? "dropped" : "sent"; });
    form.requestSubmit();
    sessionStorage.setItem("sv-busy", JSON.stringify({disabled: button.disabled, value: button.value,
      note: !document.getElementById("sv-evaluating").hidden, again: again}));
  }).observe(button, {attributes: true});
}"""


@pytest.fixture
def compliance_dir(settings, tmp_path):
    settings.COMPLIANCE_DIR = tmp_path / "compliance"
    return settings.COMPLIANCE_DIR


@pytest.fixture
def eager():
    """Celery tasks run where they are queued (the report's generation, in the test's own setup)."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def _event(event_type: str, user, **details):
    """The newest successful event of `event_type` by `user` whose details hold `details`."""

    def found():
        rows = AuditEvent.objects.filter(event_type=event_type, actor_id=user.pk, outcome="success")
        return next((e for e in rows.order_by("-id") if all(e.details.get(k) == v for k, v in details.items())), None)

    return wait_for(found, 10, what=f"a {event_type} event by {user}")


def _no_serious_axe(page):
    problems = axe_serious(page)
    assert not problems, dump(problems)


@pytest.mark.parametrize("lang", LANGS)
def test_officer_attaches_and_detaches_a_profile(job_page, lang, compliance_dir):
    model = ModelVersionFactory(model_name=f"triage-{lang}").model
    page, officer = job_page(SECURITY_OFFICER, lang)

    go(page, f"/admin/registry/model/{model.pk}/change/")
    assert_language(page, lang)
    page.click("#model-compliance a.sv-attach")
    page.wait_for_url(re.compile(rf"/profileattachment/add/\?model={model.pk}$"))
    assert SAYS[lang]["installation"] in page.content()
    page.select_option("#id_attach_profile", "hipaa")
    assert page.input_value("#id_attach_model") == str(model.pk)
    shot(page, "compliance-attach-form")
    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r"/admin/compliance/profileattachment/(\d+/change/)?$"))
    shot(page, "compliance-attached")

    attachment = ProfileAttachment.objects.get(profile="hipaa", model=model)
    assert attachment.attached_by == officer
    assert _event("compliance.profile.attach", officer, model=model.name).target_id == str(attachment.pk)

    go(page, f"/admin/registry/model/{model.pk}/change/")
    assert "hipaa" in page.inner_text("#model-compliance")
    shot(page, "compliance-model-page")
    page.click(f"#model-compliance a.deletelink[href*='/{attachment.pk}/delete/']")
    page.wait_for_url(re.compile(rf"/profileattachment/{attachment.pk}/delete/$"))
    shot(page, "compliance-detach-confirm")
    page.click("#content form input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/compliance/profileattachment/$"))
    shot(page, "compliance-detached")
    assert not ProfileAttachment.objects.filter(pk=attachment.pk).exists()
    assert _event("compliance.profile.detach", officer, model=model.name).target_id == str(attachment.pk)

    auditor, _ = job_page(AUDITOR, lang)
    go(auditor, "/admin/compliance/profileattachment/")
    assert auditor.locator(".object-tools a.addlink").count() == 0  # reads, cannot attach
    shot(auditor, "compliance-attachments-read-only")
    assert go(auditor, "/admin/compliance/profileattachment/add/").status == 403


@pytest.mark.parametrize("lang", LANGS)
def test_officer_evaluates_now_and_reads_the_results(job_page, lang, compliance_dir):
    compliance.attach_profile(profile="hipaa", actor=None)
    page, officer = job_page(SECURITY_OFFICER, lang)

    go(page, "/admin/compliance/controlresult/")
    assert_language(page, lang)
    page.click("a.sv-evaluate")
    page.wait_for_url(re.compile(r"/controlresult/evaluate/$"))
    assert SAYS[lang]["evaluate"] in page.content()
    shot(page, "compliance-evaluate")
    _no_serious_axe(page)
    # while the evaluation runs: the button is disabled and says so, the note shows, and a second
    # submit is dropped (seen by the page itself, kept in the tab's sessionStorage across the navigation)
    page.evaluate(BUSY_WATCH)
    page.click("input[name=evaluate]")
    page.wait_for_url(re.compile(r"\?run__id__exact=\d+$"), timeout=60000)

    run = EvaluationRun.objects.get(requested_by=officer, trigger="api")  # one run: no double submission
    summary = page.inner_text("#sv-run-summary")
    assert f"#{run.pk}" in summary and str(run.passed) in summary
    assert page.locator("#result_list tbody tr").count() == ControlResult.objects.filter(run=run).count() > 0
    assert _event("compliance.evaluate", officer, trigger="api").target_id == str(run.pk)
    assert _event("compliance.evaluate", officer, trigger="api").target_display == run.audit_display()
    # the families and the run's name in the page's language (the families stay stored in English)
    results = page.inner_text("#result_list")
    hipaa = get_profile("hipaa")
    rows = ControlResult.objects.filter(run=run)
    stored = {r.family for r in rows}
    shown = {pick(hipaa.control(r.control_id).family, lang) for r in rows}
    assert shown <= set(re.split(r"[\t\n]", results)), (shown, results)
    if lang == "zh-hans":
        assert not {f for f in stored if f in results}, results
        assert f"评估 #{run.pk}（" in results and "evaluation #" not in results
    busy = json.loads(page.evaluate("sessionStorage.getItem('sv-busy') || '{}'"))
    assert busy == {"disabled": True, "value": SAYS[lang]["evaluating"], "note": True, "again": "dropped"}, busy
    shot(page, "compliance-evaluation-results")
    failed = ControlResult.objects.filter(run=run, status="fail").exclude(remedy="").first()
    go(page, f"/admin/compliance/controlresult/{failed.pk}/change/")
    control = hipaa.control(failed.control_id)
    assert pick(control.family, lang) in page.inner_text("#content")
    assert pick(control.summary, lang) in page.inner_text("#content")
    shot(page, "compliance-result")

    auditor, _ = job_page(AUDITOR, lang)
    go(auditor, "/admin/compliance/controlresult/")
    assert auditor.locator("a.sv-evaluate").count() == 0
    assert go(auditor, "/admin/compliance/controlresult/evaluate/").status == 403


@pytest.mark.parametrize("lang", LANGS)
def test_auditor_downloads_a_report_that_names_its_signer(job_page, lang, compliance_dir, eager, tmp_path):
    compliance.attach_profile(profile="hipaa", actor=None)
    compliance.evaluate_now(actor=None)
    now = timezone.now()
    report = compliance.request_report(
        profile="hipaa", period_start=now - timedelta(hours=1), period_end=now + timedelta(hours=1), actor=None
    )
    report.refresh_from_db()
    assert report.state == ReportState.DONE, report.error
    page, auditor = job_page(AUDITOR, lang)

    go(page, "/admin/compliance/compliancereport/")
    page.click(f"#result_list a[href$='/compliancereport/{report.pk}/change/']")
    assert_language(page, lang)
    panel = page.inner_text("#report-signing")
    assert SAYS[lang]["signed_by"] in panel and SAYS[lang]["local_file"] in panel
    assert SAYS[lang]["key_file"] in panel  # the provider's own words, in the page's language: a file
    if lang == "zh-hans":
        assert "local key file" not in panel and "not in an HSM" not in panel, panel
    assert SAYS[lang]["download"] in page.inner_text("#report-downloads")
    shot(page, "compliance-report")
    _no_serious_axe(page)

    for fmt, magic in (("pdf", b"%PDF"), ("pdf.sig", b"{")):
        with page.expect_download() as info:
            page.click(f"#report-downloads a[href$='file_format={fmt}']")
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        assert saved.name == report.files[fmt] and saved.read_bytes().startswith(magic)
        assert _event("compliance.report.download", auditor, format=fmt).target_id == str(report.pk)

    admin, _ = job_page(ADMIN, lang)
    assert go(admin, f"/admin/compliance/compliancereport/{report.pk}/change/").status == 403
    assert go(admin, f"/admin/compliance/compliancereport/{report.pk}/download/?file_format=pdf").status == 403


@pytest.mark.parametrize("lang", LANGS)
def test_auditor_and_officer_export_the_audit_log_with_filters(job_page, lang, tmp_path):
    page, auditor = job_page(AUDITOR, lang)
    officer_page, officer = job_page(SECURITY_OFFICER, lang)
    go(officer_page, "/admin/keys/keyencryptionkey/")  # the officer reads the key list: a keys event

    go(page, "/admin/audit/auditevent/")
    page.click("a.sv-export")
    page.wait_for_url(re.compile(r"/auditevent/export/$"))
    assert_language(page, lang)
    assert SAYS[lang]["export"] in page.content()
    since = timezone.localtime(timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page.fill("#id_since", since)
    page.fill("#id_actor", officer.username)
    page.select_option("#id_event_group", "auth")
    page.check("input[name=file_format][value=jsonl]")
    shot(page, "audit-export-form")
    _no_serious_axe(page)
    with page.expect_download() as info:
        page.click("input[name=export]")
    saved = tmp_path / "auditor.jsonl"
    info.value.save_as(saved)
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    events = [line for line in lines if line["type"] in ("event", "pending")]
    assert lines[0]["type"] == "header" and lines[-1]["type"] == "footer"
    assert events and {e["actor_name"] for e in events} == {officer.username}
    assert {e["event_type"].split(".")[0] for e in events} == {"auth"}
    export = _event("audit.export", auditor, format="jsonl")
    assert export.details["filters"]["actor"] == officer.username and export.details["rows"] == len(events)

    go(officer_page, "/admin/audit/auditevent/export/")
    assert SAYS[lang]["key_only"] in officer_page.content()
    officer_page.check("input[name=file_format][value=csv]")
    shot(officer_page, "audit-export-key-events")
    with officer_page.expect_download() as info:
        officer_page.click("input[name=export]")
    csv_file = tmp_path / "officer.csv"
    info.value.save_as(csv_file)
    rows = csv_file.read_text().splitlines()
    assert rows[0].startswith("type,") and not any(",auth.login" in r for r in rows)
    assert _event("audit.export", officer, format="csv")

    admin, _ = job_page(ADMIN, lang)
    assert go(admin, "/admin/audit/auditevent/export/").status == 403


@pytest.mark.parametrize("lang", LANGS)
def test_officer_starts_a_key_rotation_and_watches_it(job_page, lang):
    for n in range(2):
        ModelVersionFactory(model_name=f"rot-{lang}-{n}")  # data keys to re-wrap
    page, officer = job_page(SECURITY_OFFICER, lang)

    go(page, "/admin/keys/keyencryptionkey/")
    assert_language(page, lang)
    assert SAYS[lang]["custody"] in page.inner_text("#sv-custody")
    cells = page.locator("#result_list td.field-custody").all_inner_texts()
    assert cells and set(cells) == {SAYS[lang]["custody"]}  # each version: where it really is
    shot(page, "keys-inventory")
    page.click("a.sv-rotate")
    page.wait_for_url(re.compile(r"/kekrotation/start/$"))
    assert SAYS[lang]["custody"] in page.inner_text("#sv-custody")
    page.fill("#id_reason", f"yearly rotation ({lang})")
    shot(page, "keys-rotation-start")
    _no_serious_axe(page)
    page.click("input[name=rotate]")
    page.wait_for_url(re.compile(r"/kekrotation/\d+/change/$"))

    rotation = KekRotation.objects.get(reason=f"yearly rotation ({lang})")
    assert rotation.requested_by == officer and rotation.total >= 2
    assert page.locator("#rotation-progress").get_attribute("data-state") == RotationState.RUNNING
    assert SAYS[lang]["rewrapped"] in page.inner_text("#rotation-count")
    shot(page, "keys-rotation-running")
    assert _event("keys.kek.rotate", officer, reason=f"yearly rotation ({lang})").target_id == str(rotation.pk)

    rewrap_task.apply(args=[rotation.pk])  # the worker takes the queued re-wrap

    page.wait_for_selector("#rotation-progress[data-state=done]", timeout=20000)  # the page reloads itself
    rotation.refresh_from_db()
    count = page.inner_text("#rotation-count")
    assert rotation.state == RotationState.DONE and f"{rotation.total}" in count and "100%" in count
    shot(page, "keys-rotation-done")

    auditor, _ = job_page(AUDITOR, lang)
    go(auditor, "/admin/keys/kekrotation/")
    assert auditor.locator("a.sv-rotate").count() == 0
    assert go(auditor, "/admin/keys/kekrotation/start/").status == 403
