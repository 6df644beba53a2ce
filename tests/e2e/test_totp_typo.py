"""Issue 17: one wrong one-time code must not make the next right one fail. In real Chromium, in
English and in Chinese, a privileged person types a wrong code on the second-factor page, is told it
is not valid, types the right one at once (no waiting) and reaches the admin; both tries are audited.
Screenshots: `totp-typo-<lang>-<step>.png` in $SOVEREIGN_ARTEFACT_DIR, else the test's tmp dir."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import SECURITY_OFFICER
from apps.audit.models import AuditEvent
from tests.conftest import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"
KEY = b"12345678901234567890"
NOT_VALID = {"en": "That code is not valid.", "zh": "验证码无效"}


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_a_wrong_code_then_the_right_one_at_once_reaches_the_admin(browser, live_server, tmp_path, locale):
    lang = locale[:2]
    folder = Path(os.environ.get("SOVEREIGN_ARTEFACT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    officer = make_user(f"sofia-{lang}", SECURITY_OFFICER)
    TOTPDevice.objects.create(user=officer, name="phone", key=KEY.hex(), confirmed=True)
    context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", officer.username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/accounts/2fa/verify/"))
        right = f"{totp(KEY):06d}"
        page.fill("#id_code", f"{(int(right) + 1) % 10**6:06d}")
        page.click("input[type=submit]")
        assert NOT_VALID[lang] in page.locator(".errorlist").inner_text()
        assert page.url.split("?")[0].endswith("/accounts/2fa/verify/")
        page.screenshot(path=str(folder / f"totp-typo-{lang}-1-wrong.png"), full_page=True)

        page.fill("#id_code", f"{totp(KEY):06d}")  # straight away, as a person correcting a typo
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/admin/$"))
        page.screenshot(path=str(folder / f"totp-typo-{lang}-2-admin.png"), full_page=True)
    finally:
        context.close()

    trail = list(AuditEvent.objects.filter(actor=officer, event_group="auth").values_list("event_type", flat=True))
    assert trail.count("auth.login.success") == 1 and trail.count("auth.2fa.failure") == 1
