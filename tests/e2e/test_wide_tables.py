"""Issue 17: a wide admin table scrolls sideways inside its box instead of being cut off at the
window's edge (1400 px), and states are badges whose text says the state. Real Chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import ADMIN
from apps.deployments.models import InferenceServer
from tests.conftest import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"
KEY = b"12345678901234567890"


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_the_server_list_scrolls_sideways_and_shows_states_as_badges(browser, live_server, tmp_path, locale):
    lang = locale[:2]
    folder = Path(os.environ.get("SOVEREIGN_ARTEFACT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    admin = make_user(f"ops-{lang}", ADMIN)
    TOTPDevice.objects.create(user=admin, name="phone", key=KEY.hex(), confirmed=True)
    labels = {f"label-{i}": "a-rather-long-label-value-that-widens-the-table" for i in range(6)}
    InferenceServer.objects.create(
        name="triton-far-away",
        http_url="http://10.0.0.9:8000",
        state="down",
        last_error="connection refused",
        labels=labels,
    )
    context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        page.goto(f"{live_server.url}/admin/login/?next=/admin/deployments/inferenceserver/")
        page.fill("#id_username", admin.username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/accounts/2fa/verify/"))
        page.fill("#id_code", f"{totp(KEY):06d}")
        page.click("input[type=submit]")
        page.wait_for_url(re.compile(r"/admin/deployments/inferenceserver/$"))

        badge = page.locator("#result_list .sv-badge--down")
        # the text says it, in the reader's language; the colour repeats it
        assert badge.inner_text().strip().lower() == {"en": "down", "zh": "离线"}[lang]
        assert "connection refused" in page.locator("#result_list").inner_text()
        # the page itself does not overflow the window; the table's box scrolls to its last column
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        box = page.locator("#changelist .results")
        assert box.evaluate("e => e.scrollWidth > e.clientWidth && getComputedStyle(e).overflowX === 'auto'")
        box.evaluate("e => { e.scrollLeft = e.scrollWidth }")
        assert page.locator("#result_list th.column-last_seen_at").is_visible()
        page.screenshot(path=str(folder / f"wide-tables-{lang}-servers.png"), full_page=True)
    finally:
        context.close()
