"""Lockout by (user name, address) and the global per-user-name throttle (issue 10, item 8):
an attacker typing wrong passwords for the security officer locks only themselves out; a spray
from many addresses is still bounded, and even then the officer's usual workstation gets in."""

from __future__ import annotations

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.roles import SECURITY_OFFICER
from apps.audit.models import AuditEvent
from tests.conftest import make_user
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/accounts/login/"
ATTACKER, OFFICE, ELSEWHERE = "203.0.113.66", "198.51.100.10", "192.0.2.44"


def login(addr: str, username: str, password: str = PASSWORD) -> int:
    """The API login's status (the attacker's tool: 401 wrong, 429 locked)."""
    return (
        APIClient(REMOTE_ADDR=addr).post(LOGIN, {"username": username, "password": password}, format="json").status_code
    )


def signs_in(addr: str, username: str = "officer") -> bool:
    """The admin login form with the right password: a session (the second factor comes next)."""
    client = Client(REMOTE_ADDR=addr)
    resp = client.post("/admin/login/", {"username": username, "password": PASSWORD, "next": "/admin/"})
    assert resp.status_code in (302, 429), (resp.status_code, resp.content[:300])
    return resp.status_code == 302 and "_auth_user_id" in client.session


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def officer(db):
    """The security officer, with an enrolled second factor."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = make_user("officer", SECURITY_OFFICER)
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return user


class TestPerAddress:
    def test_an_attacker_locks_only_their_own_address(self, officer):
        answers = [login(ATTACKER, "officer", "wrong-password-123") for _ in range(8)]

        assert answers[:4] == [401] * 4
        assert set(answers[4:]) == {429}  # locked at the fifth failure, for this address
        assert not signs_in(ATTACKER)  # even with the right password, from there
        assert signs_in(OFFICE)
        assert signs_in(ELSEWHERE)

    def test_the_lock_is_audited_and_hammering_it_does_not_extend_it(self, officer, clock, settings):
        for _ in range(5):
            login(ATTACKER, "officer", "wrong-password-123")
        clock.shift(settings.AXES_COOLOFF_TIME / 2)
        for _ in range(20):
            assert login(ATTACKER, "officer", "wrong-password-123") == 429

        clock.shift(settings.AXES_COOLOFF_TIME / 2 + timezone.timedelta(seconds=1))
        assert signs_in(ATTACKER)  # 15 min after the last real failure
        lockout = AuditEvent.objects.filter(event_type="auth.lockout").first()
        assert (lockout.target_display, lockout.source_ip) == ("officer", ATTACKER)

    def test_success_elsewhere_does_not_unlock_the_attacker(self, officer):
        for _ in range(5):
            login(ATTACKER, "officer", "wrong-password-123")
        assert signs_in(OFFICE)

        assert not signs_in(ATTACKER)


class TestGlobalThrottle:
    def spray(self, settings, per_address: int = 4) -> None:
        """Stay under the per-address limit, spread over enough addresses to reach the global one."""
        addresses = -(-settings.LOCKOUT_GLOBAL_FAILURES // per_address)
        for a in range(addresses):
            for _ in range(per_address):
                login(f"203.0.113.{a + 1}", "officer", "Spring2026!!x")

    def test_a_spray_from_many_addresses_is_bounded(self, officer, settings):
        settings.LOCKOUT_GLOBAL_FAILURES = 20
        self.spray(settings)

        assert not signs_in("203.0.113.200")  # a new address: refused
        assert login("203.0.113.201", "officer", "Summer2026!!x") == 429  # no more guesses checked

    def test_the_officers_own_address_still_gets_in(self, officer, settings):
        settings.LOCKOUT_GLOBAL_FAILURES = 20
        assert signs_in(OFFICE)  # the office, known from a past login
        self.spray(settings)

        assert signs_in(OFFICE)
        assert not signs_in(ELSEWHERE)

    def test_it_lifts_after_its_window(self, officer, settings, clock):
        settings.LOCKOUT_GLOBAL_FAILURES = 20
        self.spray(settings)
        assert not signs_in(ELSEWHERE)

        clock.shift(settings.LOCKOUT_GLOBAL_WINDOW + timezone.timedelta(seconds=1))
        assert signs_in(ELSEWHERE)

    def test_default_is_fifty_an_hour(self, settings):
        assert settings.LOCKOUT_GLOBAL_FAILURES == 50
        assert timezone.timedelta(hours=1) == settings.LOCKOUT_GLOBAL_WINDOW
