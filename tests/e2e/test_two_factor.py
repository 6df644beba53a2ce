"""A privileged user's first login in a real browser: password, the one-time enrolment code the
security officer received with the role (the password alone enrols nothing), forced TOTP
enrolment with a code computed from the key the page then shows, then the admin."""

import base64
import re

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import ADMIN, ANALYST, SECURITY_OFFICER
from apps.accounts.services import assign_role
from apps.audit.models import AuditEvent
from tests.conftest import make_user
from tests.waiting import wait_for as wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-9"


def _login(page, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_first_login_enrols_totp_then_reaches_the_admin(page, live_server):
    officer = make_user("sofia", SECURITY_OFFICER)
    user = make_user("ops", ANALYST)
    code = assign_role(user_id=user.pk, role=ADMIN, actor=officer).enrolment_code
    _login(page, live_server.url, "ops")
    page.wait_for_url(re.compile(r"/accounts/2fa/setup/"))
    assert page.locator("code").count() == 0  # no key before the enrolment code

    page.goto(f"{live_server.url}/admin/deployments/deployment/")  # nothing else is reachable yet
    page.wait_for_url(re.compile(r"/accounts/2fa/setup/"))
    page.fill("#id_enrolment_code", "AAAA-BBBB-CCCC-DDDD")
    page.click("input[type=submit]")
    assert "wrong, spent or expired" in page.content()
    page.fill("#id_enrolment_code", code)
    page.click("input[type=submit]")
    page.locator("code").wait_for()
    assert page.locator("svg").count() >= 1  # the QR code

    key = page.locator("code").inner_text().strip()
    page.fill("#id_code", "000000" if totp(base64.b32decode(key)) != 0 else "111111")
    page.click("input[type=submit]")
    assert "not valid" in page.content()
    # django-otp makes the next try wait (1 s after one failure): wait for that, as a user would.
    device = TOTPDevice.objects.get(user=user)
    wait_until(lambda: device.refresh_from_db() or device.verify_is_allowed()[0])
    page.fill("#id_code", f"{totp(base64.b32decode(key)):06d}")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/deployments/deployment/$"))
    assert page.locator("#site-name").inner_text().strip() == "Sovereign"

    trail = AuditEvent.objects.filter(actor=user, event_group="auth").order_by("id")
    assert list(trail.values_list("event_type", flat=True)) == [
        "auth.login.success",
        "auth.2fa.failure",  # the wrong enrolment code
        "auth.2fa.failure",  # the wrong TOTP code
        "auth.enrolment.use",
        "auth.2fa.enrol",
    ]
    assert [e.error_code for e in trail.filter(event_type="auth.2fa.failure")] == [
        "enrolment_code_invalid",
        "invalid_otp",
    ]
