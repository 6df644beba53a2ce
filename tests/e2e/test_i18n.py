"""The admin in Chinese and in English in real Chromium (issue 17): a browser set to zh-CN logs in
(password, then the TOTP code) and sees the admin in Chinese, one set to en-US in English; the person's
own setting (the header's language switch) wins over the browser's; axe-core finds no serious or
critical accessibility violation on the main admin pages. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import ADMIN
from apps.audit.models import AuditEvent
from apps.registry.models import Model
from tests.conftest import make_user
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1.min.js"
# The pages an administrator works in every day.
MAIN_PAGES = (
    "/admin/",
    "/admin/auth/user/",
    "/admin/auth/user/add/",
    "/admin/accounts/apitoken/",
    "/admin/registry/model/",
    "/admin/registry/modelversion/",
    "/accounts/preferences/",
)


def _person(name: str):
    user = make_user(name, ADMIN)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return user, device


def _log_in(page, base: str, user, device) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/accounts/2fa/verify/"))
    page.fill("#id_code", f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


def _context(browser, locale: str):
    context = browser.new_context(
        locale=locale,
        viewport={"width": 1400, "height": 900},
        bypass_csp=True,  # axe-core is injected as an inline script; the pages' own CSP forbids inline script
    )
    page = context.new_page()
    page.set_default_timeout(15000)
    return context, page


def test_a_chinese_browser_sees_the_admin_in_chinese_and_switches_to_english(browser, live_server, tmp_path):
    user, device = _person("ops")
    context, page = _context(browser, "zh-CN")
    try:
        page.goto(f"{live_server.url}/admin/login/")
        assert page.locator("html").get_attribute("lang") == "zh-hans"
        assert "用户名" in page.content()  # Django's own login page, in Chinese
        _log_in(page, live_server.url, user, device)
        assert page.locator("html").get_attribute("lang") == "zh-hans"
        header = page.locator("#user-tools").inner_text()
        assert "语言和时区" in header and "注销" in header
        body = page.locator("#content").inner_text()
        assert "治理门户" in page.content() and "推理服务器" in body and "部署" in body and "模型" in body
        page.screenshot(path=str(tmp_path / "admin-index-zh.png"), full_page=True)

        Model.objects.create(name="triage", description="a classifier")
        page.goto(f"{live_server.url}/admin/registry/model/")
        assert "创建时间" in page.locator("#result_list").inner_text()  # a field label, translated
        page.screenshot(path=str(tmp_path / "models-zh.png"), full_page=True)

        # the person's own setting: the header's switch, and it sticks against the browser's language
        page.select_option("#sv-language", "en")
        page.click("#language-form button[type=submit]")
        page.wait_for_url(re.compile(r"/admin/registry/model/$"))
        assert page.locator("html").get_attribute("lang") == "en"
        assert "created at" in page.locator("#result_list").inner_text().lower()  # headings are upper-cased by CSS
        page.goto(f"{live_server.url}/admin/")
        assert "Governance portal" in page.content() and "Language and time zone" in page.content()
        page.screenshot(path=str(tmp_path / "admin-index-en-by-setting.png"), full_page=True)
        event = wait_for(lambda: AuditEvent.objects.filter(event_type="auth.preferences.change").first())
        assert event.actor_id == user.pk and event.details["after"]["language"] == "en"
    finally:
        context.close()


def test_an_english_browser_sees_english_and_the_time_zone_page(browser, live_server, tmp_path):
    user, device = _person("eve")
    context, page = _context(browser, "en-US")
    try:
        _log_in(page, live_server.url, user, device)
        assert page.locator("html").get_attribute("lang") == "en"
        assert "Governance portal" in page.content()
        page.goto(f"{live_server.url}/accounts/preferences/?next=/admin/accounts/apitoken/")
        page.select_option("#id_time_zone", "Asia/Shanghai")
        page.click("#content input[type=submit]")
        page.wait_for_url(re.compile(r"/admin/accounts/apitoken/$"))
        user.profile.refresh_from_db()
        assert user.profile.time_zone == "Asia/Shanghai"
        page.screenshot(path=str(tmp_path / "preferences-saved-en.png"), full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_main_admin_pages_have_no_serious_accessibility_violations(browser, live_server, tmp_path, locale):
    user, device = _person("ada")
    context, page = _context(browser, locale)
    found = {}
    try:
        page.goto(f"{live_server.url}/admin/login/")
        found["/admin/login/"] = _axe(page)
        _log_in(page, live_server.url, user, device)
        for path in MAIN_PAGES:
            page.goto(f"{live_server.url}{path}")
            found[path] = _axe(page)
            page.screenshot(path=str(tmp_path / f"{path.strip('/').replace('/', '-')}-{locale}.png"), full_page=True)
    finally:
        context.close()
    serious = {path: v for path, v in found.items() if v}
    assert serious == {}, json.dumps(serious, indent=1, ensure_ascii=False)


def _axe(page) -> list[dict]:
    """axe-core's serious and critical violations on the page (rule, impact, the first few targets)."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"rule": v["id"], "impact": v["impact"], "help": v["help"], "targets": [n["target"] for n in v["nodes"][:5]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
