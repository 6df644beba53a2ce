"""Issue 17, the model's jobs in the admin, in real Chromium, in English and in Chinese: an
administrator logs in (password, then the authenticator's code), uploads a file that is not a model
(the form comes back with what was typed and a plain error), uploads the demo model, deploys it on
the real tritonserver with the version list's Deploy action, follows the message's link to the
deployment, sees it go live (the reconcile runs in the real Celery worker), and opens the model page:
the live version, its replica on the server (state up), the history. axe-core finds no serious or
critical violation on these pages. Screenshots: `<job>-<lang>-<step>.png` in $SOVEREIGN_ARTEFACT_DIR,
else the test's tmp dir."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import ADMIN, AUDITOR
from apps.audit.models import AuditEvent
from apps.deployments import services
from apps.deployments.models import Deployment, Observed
from apps.registry.models import ModelVersion
from inference_backend.demo_model import build_demo_onnx
from tests.conftest import make_user
from tests.e2e.conftest import browser  # noqa: F401 - the real Chromium, as tests/e2e launch it
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(600),
]

PASSWORD = "correct-horse-battery-9"
KEY = b"12345678901234567890"
AXE = Path(__file__).parents[1] / "e2e" / "vendor" / "axe-core-4.14.1.min.js"
LANG = {"en-US": "en", "zh-CN": "zh"}
# What the pages say, in each language (the Chinese from locale/zh_Hans).
SAYS = {
    "en": {"not_onnx": "This file is not an ONNX model", "requested": "Deployment requested", "live": "Live:"},
    "zh": {"not_onnx": "此文件不是 ONNX 模型", "requested": "已请求部署", "live": "在线："},
}


def _artefacts(tmp_path) -> Path:
    folder = Path(os.environ.get("SOVEREIGN_ARTEFACT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _axe(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"rule": v["id"], "impact": v["impact"], "targets": [n["target"] for n in v["nodes"][:5]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def _log_in(page, base: str, user) -> None:
    """Password, then the authenticator's current code on the second-factor page."""
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/accounts/2fa/verify/"))
    page.fill("#id_code", f"{totp(KEY):06d}")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_an_administrator_uploads_deploys_and_reads_the_model_page(
    browser,  # noqa: F811 - the fixture imported above
    settings,
    triton,
    celery_worker,
    live_server,
    tmp_path,
    locale,
):
    lang = LANG[locale]
    says = SAYS[lang]
    model_name = f"triage-{lang}"
    folder = _artefacts(tmp_path)
    admin = make_user(f"ops-{lang}", ADMIN)
    TOTPDevice.objects.create(user=admin, name="phone", key=KEY.hex(), confirmed=True)
    server = services.register_server(name=f"triton-{lang}", http_url=triton.http_url, hardware="cpu", actor=admin)
    context = browser.new_context(
        locale=locale,
        viewport={"width": 1400, "height": 900},
        bypass_csp=True,  # axe-core is injected as an inline script; the pages' own CSP forbids inline script
    )
    page = context.new_page()
    page.set_default_timeout(20000)
    base = live_server.url
    violations: dict[str, list] = {}

    def shot(step: str) -> None:
        page.screenshot(path=str(folder / f"model-deploy-{lang}-{step}.png"), full_page=True)

    def check(step: str) -> None:
        shot(step)
        found = _axe(page)
        if found:
            violations[step] = found

    try:
        _log_in(page, base, admin)
        assert page.locator("html").get_attribute("lang") == ("zh-hans" if lang == "zh" else "en")

        # 1. a file that is not a model: the form comes back, as typed, with a plain error on the file
        bad = tmp_path / "notes.onnx"
        bad.write_bytes(b"these are my notes, not a model")
        page.goto(f"{base}/admin/registry/modelversion/add/")
        page.fill("#id_model_name", model_name)
        page.fill("#id_description", "triage classifier")
        page.set_input_files("#id_upload", str(bad))
        page.click("input[name=_save]")
        page.locator(".errorlist").first.wait_for()
        assert re.search(r"/admin/registry/modelversion/add/$", page.url)
        assert page.input_value("#id_model_name") == model_name
        assert page.input_value("#id_description") == "triage classifier"
        assert says["not_onnx"] in page.locator(".field-upload .errorlist").inner_text()
        check("1-upload-refused")
        assert not ModelVersion.objects.filter(model__name=model_name).exists()

        # 2. the demo model: registered
        good = tmp_path / "triage.onnx"
        good.write_bytes(build_demo_onnx())
        page.set_input_files("#id_upload", str(good))
        page.click("input[name=_save]")
        page.locator(".messagelist .success").wait_for()
        mv = ModelVersion.objects.get(model__name=model_name)
        check("2-uploaded")

        # 3. Deploy from the version list; the message links to the deployment
        page.goto(f"{base}/admin/registry/modelversion/?model__id__exact={mv.model_id}")
        page.check(f"input[name=_selected_action][value='{mv.pk}']")
        page.select_option("select[name=action]", "deploy")
        page.click("button[name=index]")
        page.select_option("#id_server", str(server.pk))
        check("3-deploy-form")
        page.click("input[name=apply]")
        message = page.locator(".messagelist .success")
        message.wait_for()
        assert says["requested"] in message.inner_text()
        check("4-deploy-requested")
        dep = Deployment.objects.get(model_version=mv)
        page.click(f".messagelist a[href$='/admin/deployments/deployment/{dep.pk}/change/']")
        page.wait_for_url(re.compile(rf"/admin/deployments/deployment/{dep.pk}/change/$"))
        live = wait_for(
            lambda: (d := Deployment.objects.get(pk=dep.pk)).observed_state in (Observed.ACTIVE, Observed.FAILED) and d,
            180,
            "the deployment to load",
        )
        assert live.observed_state == Observed.ACTIVE, live.last_error
        page.reload()
        assert page.locator(".field-server_health .sv-badge--up").count() == 1
        check("5-deployment")

        # 4. the model page: the live version, its replica on the server, the history
        page.goto(f"{base}/admin/registry/model/{mv.model_id}/change/")
        assert says["live"] in page.locator("#live-versions").inner_text()
        assert page.locator("#live-versions a").inner_text() == str(mv)
        row = page.locator("#model-deployment-rows tbody tr").first
        assert server.name in row.inner_text() and row.locator(".sv-badge--active").count() == 1
        assert row.locator(".sv-badge--up").count() == 1
        assert page.locator("#model-history").count() == 0  # an administrator does not read the audit log
        check("6-model-page")
    finally:
        context.close()

    # 5. an auditor reads the same page, with its history (a read of the audit log, itself recorded)
    auditor = make_user(f"audrey-{lang}", AUDITOR)
    TOTPDevice.objects.create(user=auditor, name="phone", key=KEY.hex(), confirmed=True)
    context = browser.new_context(
        locale=locale,
        viewport={"width": 1400, "height": 900},
        bypass_csp=True,  # axe-core is injected as an inline script; the pages' own CSP forbids inline script
    )
    page = context.new_page()
    page.set_default_timeout(20000)
    try:
        _log_in(page, base, auditor)
        page.goto(f"{base}/admin/registry/model/{mv.model_id}/change/")
        history = page.locator("#model-history").inner_text()
        assert "registry.version.create" in history
        check("7-model-page-auditor")
    finally:
        context.close()

    assert violations == {}, json.dumps(violations, indent=1, ensure_ascii=False)
    trail = AuditEvent.objects.filter(actor=admin).values_list("event_type", flat=True)
    assert {"registry.version.rejected", "registry.version.create", "deployment.request"} <= set(trail)
