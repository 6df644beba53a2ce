"""The console's look in both languages, in real Chromium (issue 17): the dashboard's tables keep their
column headings readable at 1400 and 1024 px (the first column no longer takes all the width while
"调/用/次/数" stacks one character per line), the Chinese admin index names every app and model in
Chinese, and axe-core finds nothing serious on the index and the main lists for the administrator,
the security officer and the auditor in English and in Chinese. Screenshots of every page go to the
artefact folder (tests/e2e/jobs.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from apps.accounts.roles import ADMIN, AUDITOR, SECURITY_OFFICER
from apps.audit.services import PendingEvent, Source
from apps.compliance.models import ControlResult, EvaluationRun
from apps.deployments.models import Deployment, DeploymentTransition, InferenceServer, Observed, ReplicaSet
from apps.observability.services import roll_up_calls
from apps.registry.models import Model, ModelVersion
from tests.e2e import jobs
from tests.e2e.jobs import LANGS, assert_language, axe_serious, dump, go, shot
from tests.observability.helpers import call, record_sealed

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

job_page = jobs.job_page  # the harness's fixture: a signed-in person of a role in a language
ROLES = (ADMIN, SECURITY_OFFICER, AUDITOR)
WIDTHS = (1400, 1024)
# The lists an operator opens every day (each role's index links to several of them).
MAIN_LISTS = (
    "/admin/auth/user/",
    "/admin/accounts/apitoken/",
    "/admin/registry/model/",
    "/admin/registry/modelversion/",
    "/admin/deployments/inferenceserver/",
    "/admin/deployments/deployment/",
    "/admin/audit/auditevent/",
    "/admin/compliance/compliancereport/",
    "/admin/keys/keyencryptionkey/",
    "/admin/axes/accessattempt/",
    "/admin/otp_totp/totpdevice/",
)
# ASCII words a Chinese page may show: names, acronyms and settings that are not translated.
ALLOWED_ASCII = {"Sovereign", "API", "TOTP", "KEK", "SM3", "Triton", "HSM", "LLM", "ID", "IP", "SOVEREIGN_ENV"}
ALLOWED_ASCII |= {"production", "DEBUG", "PKCS", "SHA", "CPU", "GPU", "NPU", "ONNX", "HTTP", "GET", "POST"}

# Every visible heading of the tables matched by `selector`: its text's rendered height against the
# line height of the cell (how many lines the heading takes), and its width.
MEASURE = """selector => [...document.querySelectorAll(selector)]
  .filter(th => th.offsetParent !== null && th.innerText.trim())
  .map(th => {
    const style = getComputedStyle(th);
    const lineHeight = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.2;
    const range = document.createRange();
    range.selectNodeContents(th);
    const height = range.getBoundingClientRect().height;
    return {text: th.innerText.trim(), height: height, lineHeight: lineHeight,
            lines: Math.round(height / lineHeight), width: th.getBoundingClientRect().width};
  })"""


@pytest.fixture
def fleet_and_traffic():
    """Rows in every table of the dashboard: calls for two model versions (one with a long name),
    a live version, a server that is down, a failed deployment with a long reason, two evaluations."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    llm = {"prompt_tokens": 10, "completion_tokens": 25}
    events = [call("radiology-report-summariser", 1, 5.0 + i, now - timedelta(minutes=i % 5)) for i in range(30)]
    events += [call("radiology-report-summariser", 1, 300.0, now, status=503, code="triton_unavailable")]
    events += [call("smollm2", 1, 120.0 + i, now - timedelta(minutes=i % 3), llm=llm) for i in range(5)]
    events += [
        PendingEvent(
            "auth.role.assign",
            actor_id=1,
            actor_name="officer-on-duty",
            actor_roles=["security_officer"],
            source=Source(ip="198.51.100.8", user_agent="Chromium"),
            request_id="req-role-assign",
            target_type="auth.user",
            target_id="2",
            target_display="a-clinician-with-a-rather-long-account-name@ward-7.hospital.example",
            outcome="denied",
            details={"role": "admin"},
            timestamp=now,
        )
    ]
    record_sealed(events)
    roll_up_calls()
    model = Model.objects.create(name="radiology-report-summariser", description="summaries")
    version = ModelVersion.objects.create(model=model, version=1, sha256="0" * 64, size_bytes=10, signature={})
    server = InferenceServer.objects.create(name="triton-ward-7", http_url="http://127.0.0.1:30499", state="down")
    replicas = ReplicaSet.objects.create(model=model, model_version=version, replicas=2, traffic_weight=100)
    failed = Deployment.objects.create(
        model=model, model_version=version, replica_set=replicas, server=server, observed_state=Observed.FAILED
    )
    DeploymentTransition.objects.create(
        deployment=failed,
        from_state=Observed.LOADING,
        to_state=Observed.FAILED,
        message="load failed: the server answered 400 (failed to load 'radiology-report-summariser--v1': "
        "unable to open the decrypted model in memory; the data key could not be unwrapped)",
    )
    for passed in (3, 4):
        run = EvaluationRun.objects.create(finished_at=datetime.now(UTC), passed=passed, failed=4 - passed)
        for i in range(4):
            status = "pass" if i < passed else "fail"
            ControlResult.objects.create(run=run, profile="hipaa", control_id=f"c{i}", family="f", status=status)


def _open_dashboard(page) -> None:
    go(page, "/admin/")
    page.locator("#sovereign-dashboard[data-drawn='1']").wait_for(state="attached")


def _too_tall(headings: list[dict]) -> list[dict]:
    """Headings that take more than two lines (a squeezed column stacks them a character per line)."""
    return [h for h in headings if h["lines"] > 2]


@pytest.mark.parametrize("lang", LANGS)
def test_dashboard_headings_read_across_at_1400_and_1024_px(job_page, fleet_and_traffic, lang):
    page, _ = job_page(AUDITOR, lang)  # the auditor sees every table: fleet, compliance, privileged actions
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        _open_dashboard(page)
        assert_language(page, lang)
        assert page.locator("#sov-failed tbody tr").count() == 1 and page.locator("#sov-live tbody tr").count() == 1
        # the privileged action: its time in the reader's zone with seconds and the zone, its outcome in words
        action = page.locator("#sov-privileged tbody tr").first.inner_text()
        assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", action), action
        assert {"en": "Denied", "zh-hans": "已拒绝"}[lang] in action, action
        cells = page.locator("#sov-failed tbody td").all_inner_texts()
        assert cells[1] == "1" and "\n" not in cells[3], cells  # the version and the time on one line
        headings = page.evaluate(MEASURE, "#sovereign-dashboard thead th")
        assert len(headings) >= 25, dump(headings)  # versions 9, live 4, servers 4, failed 5, compliance 3…
        assert _too_tall(headings) == [], dump(_too_tall(headings))
        calls = next(h for h in headings if h["text"] in ("调用次数", "CALLS"))
        assert calls["lines"] == 1 and calls["width"] > 2 * calls["lineHeight"], calls
        # nothing pushes the page sideways: a table too wide for its card scrolls inside it
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
        shot(page, f"dashboard-{width}")


@pytest.mark.parametrize("lang", LANGS)
def test_main_lists_keep_their_headings_on_one_or_two_lines(job_page, fleet_and_traffic, lang):
    page, _ = job_page(AUDITOR, lang)  # the one role that reads the audit log
    page.set_viewport_size({"width": 1024, "height": 900})
    squeezed = {}
    for path in ("/admin/audit/auditevent/", "/admin/deployments/deployment/", "/admin/registry/modelversion/"):
        go(page, path)
        headings = page.evaluate(MEASURE, "#content thead th")
        assert headings, path
        if _too_tall(headings):
            squeezed[path] = _too_tall(headings)
        shot(page, f"list-1024-{path.strip('/').replace('/', '-')}")
    assert squeezed == {}, dump(squeezed)


@pytest.mark.parametrize("role", ROLES)
def test_the_chinese_index_names_every_app_and_model_in_chinese(job_page, role):
    page, _ = job_page(role, "zh-hans")
    _open_dashboard(page)
    assert_language(page, "zh-hans")
    # the app list (captions, model rows, the headings a screen reader reads) and the development banner
    texts = page.eval_on_selector_all(
        "#content-main > .module:not(#sovereign-dashboard) caption, "
        "#content-main > .module:not(#sovereign-dashboard) th, .sovereign-dev-banner",
        "els => els.map(e => e.textContent.trim())",
    )
    assert len(texts) > 10 and "模型注册表" in " ".join(texts), texts
    english = {t: words for t in texts if (words := set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", t)) - ALLOWED_ASCII)}
    assert english == {}, dump(english)
    banner = page.locator(".sovereign-dev-banner").inner_text()
    assert "开发模式" in banner and "本地密钥文件" in banner
    shot(page, "index-labels")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("lang", LANGS)
def test_the_index_and_the_main_lists_have_no_serious_accessibility_violation(job_page, fleet_and_traffic, lang, role):
    """The index and the main lists the role's index links to. (Every list and add form the index
    links to was walked so for the three roles in both languages when this was written; it takes
    minutes, so the test keeps to the pages opened every day.)"""
    page, _ = job_page(role, lang)
    _open_dashboard(page)
    linked = set(page.eval_on_selector_all("#content-main a[href^='/admin/']", "as => as.map(a => a.pathname)"))
    pages = ["/admin/"] + [path for path in MAIN_LISTS if path in linked]
    assert len(pages) >= 6, pages  # every role reads at least users, models, versions, servers and more
    found = {}
    for path in pages:
        if path == "/admin/":
            _open_dashboard(page)
        else:
            go(page, path)
        assert_language(page, lang)
        if violations := axe_serious(page):
            found[path] = violations
        shot(page, "index" if path == "/admin/" else path.strip("/").replace("/", "-"))
    assert found == {}, dump(found)


# The page's own words (not its data): headings, labels, help, filters, breadcrumbs, buttons; a path, a
# token's name or a check's record (.sv-mono, code) is data and left out.
LABELS = """() => {
  const picked = [...document.querySelectorAll(
    "#content h1, #content h2, #content h3, #content th, #content label, #content caption, #content .help, " +
    "#changelist-filter, .breadcrumbs, .object-tools, .messagelist, #content input[type=submit]")];
  return picked.map(e => {
    if (e.tagName === "INPUT") return e.value;
    const copy = e.cloneNode(true);
    copy.querySelectorAll(".sv-mono, code, select").forEach(x => x.remove());
    return copy.textContent.replace(/\\s+/g, " ").trim();
  }).filter(t => t);
}"""
COMPLIANCE_WORDS = {"hipaa", "dengbao", "l3", "CST", "UTC", "YYYY", "MM", "DD", "HH", "SS", "PDF", "CSV", "JSON"}


@pytest.fixture
def compliance_pages():
    """An evaluation of 等保 level 3 as the checks store it (English families, summaries and remedies)
    and a report: the pages a newcomer found in English on a Chinese console."""
    from apps.compliance.catalog import get_profile
    from apps.compliance.models import ComplianceReport

    profile = get_profile("dengbao-l3")
    now = datetime.now(UTC)
    run = EvaluationRun.objects.create(started_at=now, finished_at=now, passed=3, failed=3)
    results = []
    for i, control in enumerate(profile.controls[:6]):
        failed = i % 2 == 1
        evidence = [
            {
                "check": name,
                "proof": "query",
                "status": "fail" if failed else "pass",
                "summary": "the audit chain verifies",
            }
            for name in control.checks
        ]
        results.append(
            ControlResult.objects.create(
                run=run,
                profile=profile.id,
                control_id=control.id,
                family=control.family["en"],
                status="fail" if failed else "pass",
                evidence=evidence,
                remedy=control.remedy["en"] if failed else "",
            )
        )
    report = ComplianceReport.objects.create(
        profile=profile.id, period_start=now - timedelta(days=1), period_end=now, language="zh-hans", state="done"
    )
    return run, results, report


@pytest.mark.parametrize("role", (SECURITY_OFFICER, AUDITOR))
def test_the_chinese_compliance_pages_have_no_english_label(job_page, compliance_pages, role):
    """The results list, an evaluation (its results), a result, the evaluate page (the officer's) and a
    report's page (the auditor's) in Chinese: no English word among the page's own words, the
    families and the signer named in Chinese."""
    run, results, report = compliance_pages
    page, _ = job_page(role, "zh-hans")
    paths = [
        "/admin/compliance/controlresult/",
        f"/admin/compliance/controlresult/?run__id__exact={run.pk}",
        f"/admin/compliance/controlresult/{results[1].pk}/change/",
    ]
    paths += ["/admin/compliance/controlresult/evaluate/"] if role == SECURITY_OFFICER else []
    paths += [f"/admin/compliance/compliancereport/{report.pk}/change/"] if role == AUDITOR else []
    english = {}
    for path in paths:
        assert go(page, path).status == 200, path
        assert_language(page, "zh-hans")
        texts = page.evaluate(LABELS)
        assert texts, path
        words = ALLOWED_ASCII | COMPLIANCE_WORDS
        if found := {t: w for t in texts if (w := set(re.findall(r"[A-Za-z][A-Za-z0-9_]+", t)) - words)}:
            english[path] = found
        shot(page, "zh-labels-" + path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-"))
    assert english == {}, dump(english)

    go(page, f"/admin/compliance/controlresult/?run__id__exact={run.pk}")
    cells = page.inner_text("#result_list")
    assert "身份鉴别" in cells or "安全区域边界" in cells, cells
    assert not any(r.family in cells for r in results), cells
