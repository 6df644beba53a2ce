"""Login security (issue 3): the second factor for privileged roles, the API login, lockout after
repeated failures, password strength and age, session idle and absolute lifetime, dormant accounts.

Time is moved with time_machine, never waited for. Every client here talks from 127.0.0.1, and
django-axes locks an address as well as a user name, so a test makes fewer than five failed
logins unless lockout is what it tests.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.conf import settings
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from apps.accounts import tasks
from apps.accounts.models import Profile
from apps.accounts.roles import ANALYST
from apps.accounts.services import create_service_account, issue_enrolment_code
from apps.audit.models import AuditEvent, Outcome
from tests.conftest import make_user, otp_login
from tests.factories import PASSWORD, token_for

pytestmark = pytest.mark.django_db

ADMIN_LOGIN = "/admin/login/"
API_LOGIN = "/api/v1/accounts/login/"
ME = "/api/v1/accounts/me/"
AUDIT = "/api/v1/audit/events/"
USERS = "/api/v1/accounts/users/"
SETUP = "/accounts/2fa/setup/"
VERIFY = "/accounts/2fa/verify/"
PRIVILEGED_PERSONAS = ["admin_user", "staff_user", "officer_user", "auditor_user"]


def code_of(device: TOTPDevice) -> str:
    """The code an authenticator app holding this device's key shows now."""
    value = totp(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{value:0{device.digits}d}"


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def events(event_type: str, **filters):
    return AuditEvent.objects.filter(event_type=event_type, **filters).order_by("id")


def redirect_of(resp) -> tuple[str, dict]:
    assert resp.status_code == 302, (resp.status_code, resp.content[:200])
    parts = urlsplit(resp["Location"])
    return parts.path, parse_qs(parts.query)


def admin_pages(user) -> list[str]:
    """Every admin page a privileged user could open: the index, each app, each registered
    model's list and add pages, a change page and the password change page."""
    pages = {reverse("admin:index"), reverse("admin:password_change")}
    pages.add(reverse("admin:auth_user_change", args=[user.pk]))
    for model in admin.site._registry:
        meta = model._meta
        pages.add(reverse("admin:app_list", kwargs={"app_label": meta.app_label}))
        pages.add(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        pages.add(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
    return sorted(pages)


def enrolled(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def give_enrolment_code(client: Client, user) -> TOTPDevice:
    """Pass the first step of a privileged enrolment with the code an officer issued; return the
    unconfirmed device whose secret the page then shows."""
    _, code = issue_enrolment_code(user=user, actor=None)
    resp = client.post(SETUP, {"enrolment_code": code, "next": "/admin/"})
    assert resp.status_code == 302, resp.content[:300]
    return TOTPDevice.objects.get(user=user, confirmed=False)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_login(client: APIClient, username: str, password: str = PASSWORD, **extra):
    return client.post(API_LOGIN, {"username": username, "password": password, **extra}, format="json")


@pytest.fixture
def clock():
    """Time stands still until the test moves it."""
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


class TestSecondFactorGate:
    """Privileged personas with a password session but no second factor, and an analyst."""

    @pytest.mark.parametrize("persona", PRIVILEGED_PERSONAS)
    def test_not_enrolled_is_sent_to_enrolment_from_every_admin_page(self, request, persona):
        user = request.getfixturevalue(persona)
        client = logged_in(user)

        for page in admin_pages(user):
            path, query = redirect_of(client.get(page))
            assert (path, query.get("next")) == (SETUP, [page]), page
        api = client.get(ME)
        assert api.status_code == 403
        assert api.json()["code"] == "otp_enrolment_required"
        assert client.get(SETUP).status_code == 200

    @pytest.mark.parametrize("persona", PRIVILEGED_PERSONAS)
    def test_enrolled_but_unverified_is_sent_to_verification(self, request, persona):
        user = request.getfixturevalue(persona)
        enrolled(user)
        client = logged_in(user)

        for page in admin_pages(user):
            path, query = redirect_of(client.get(page))
            assert (path, query.get("next")) == (VERIFY, [page]), page
        api = client.get(ME)
        assert api.status_code == 403
        assert api.json()["code"] == "otp_required"

    def test_enrolment_with_the_current_code_confirms_and_unlocks(self, officer_user):
        client = logged_in(officer_user)
        assert client.get(SETUP).status_code == 200
        device = give_enrolment_code(client, officer_user)
        assert not device.confirmed

        resp = client.post(SETUP, {"code": code_of(device), "next": "/admin/"})

        assert redirect_of(resp)[0] == "/admin/"
        device.refresh_from_db()
        assert device.confirmed
        event = events("auth.2fa.enrol").get()
        assert (event.actor, event.target_id, event.outcome) == (officer_user, str(officer_user.pk), Outcome.SUCCESS)
        assert event.source_ip == "127.0.0.1"
        assert client.get("/admin/").status_code == 200
        assert client.get(ME).status_code == 200

    def test_wrong_enrolment_code_is_recorded_and_changes_nothing(self, auditor_user):
        client = logged_in(auditor_user)
        device = give_enrolment_code(client, auditor_user)

        resp = client.post(SETUP, {"code": wrong(code_of(device)), "next": "/admin/"})

        assert resp.status_code == 200
        assert b"not valid" in resp.content
        device.refresh_from_db()
        assert not device.confirmed
        failure = events("auth.2fa.failure").get()
        assert (failure.actor, failure.outcome, failure.error_code) == (auditor_user, Outcome.FAILURE, "invalid_otp")
        assert not events("auth.2fa.enrol").exists()
        assert redirect_of(client.get("/admin/"))[0] == SETUP

    def test_verification_with_the_current_code_unlocks(self, staff_user):
        device = enrolled(staff_user)
        client = logged_in(staff_user)

        resp = client.post(VERIFY, {"code": code_of(device), "next": "/admin/"})

        assert redirect_of(resp)[0] == "/admin/"
        assert client.get("/admin/").status_code == 200
        assert client.get(ME).status_code == 200

    def test_wrong_verification_code_is_recorded_and_keeps_the_gate(self, admin_user):
        device = enrolled(admin_user)
        client = logged_in(admin_user)

        resp = client.post(VERIFY, {"code": wrong(code_of(device)), "next": "/admin/"})

        assert resp.status_code == 200
        assert events("auth.2fa.failure", actor=admin_user).count() == 1
        assert redirect_of(client.get("/admin/"))[0] == VERIFY

    def test_analyst_session_is_not_gated(self, plain_user):
        client = logged_in(plain_user)

        assert client.get(ME).status_code == 200
        # Not staff: the admin sends an analyst to its login page, never to 2FA.
        assert redirect_of(client.get("/admin/"))[0] == ADMIN_LOGIN
        assert not TOTPDevice.objects.filter(user=plain_user).exists()

    def test_admin_login_form_leads_a_privileged_user_to_enrolment(self, staff_user):
        client = Client()

        resp = client.post(ADMIN_LOGIN, {"username": "ops", "password": PASSWORD, "next": "/admin/"})

        assert redirect_of(resp)[0] == "/admin/"
        assert redirect_of(client.get("/admin/"))[0] == SETUP
        assert events("auth.login.success", actor=staff_user).count() == 1


class TestApiLogin:
    def test_analyst_with_the_right_password_gets_a_session(self, plain_user):
        client = APIClient()

        resp = api_login(client, "alice")

        assert resp.status_code == 200, resp.json()
        assert (resp.json()["username"], resp.json()["roles"]) == ("alice", ["analyst"])
        assert client.get(ME).json()["username"] == "alice"
        assert events("auth.login.success", actor=plain_user).count() == 1

    @pytest.mark.parametrize("otp", [None, "wrong"])
    def test_privileged_without_a_valid_code_is_refused(self, auditor_user, otp):
        device = enrolled(auditor_user)
        client = APIClient()
        extra = {} if otp is None else {"otp": wrong(code_of(device))}

        resp = api_login(client, "audrey", **extra)

        assert resp.status_code == 401
        assert (resp.json()["code"], resp.json()["field"]) == ("invalid_otp", "otp")
        assert client.get(ME).status_code == 401
        assert events("auth.2fa.failure", actor=auditor_user).count() == 1
        assert not events("auth.login.success").exists()

    def test_right_code_right_after_a_wrong_one_works(self, auditor_user, clock):
        """Issue 17: one typo no longer makes the right code typed straight after it fail (django-otp
        throttled from the first wrong code; the first THROTTLE_GRACE in a row now cost no wait)."""
        device = enrolled(auditor_user)
        assert api_login(APIClient(), "audrey", otp=wrong(code_of(device))).status_code == 401

        resp = api_login(APIClient(), "audrey", otp=code_of(device))

        assert resp.status_code == 200, resp.json()
        device.refresh_from_db()
        assert device.throttling_failure_count == 0  # a right code resets the count

    def test_after_the_grace_the_caller_is_told_to_wait_and_the_wait_doubles(self, auditor_user, clock):
        """Past THROTTLE_GRACE wrong codes in a row, every code waits (1 s, then 2, 4 ...): the caller
        is told to wait (429, Retry-After), the early try does not count as a failure, and after the
        wait the right code works."""
        from apps.accounts.otp import THROTTLE_GRACE

        device = enrolled(auditor_user)
        for _ in range(THROTTLE_GRACE):
            assert api_login(APIClient(), "audrey", otp=wrong(code_of(device))).status_code == 401
        assert api_login(APIClient(), "audrey", otp=wrong(code_of(device))).status_code == 401  # one past

        early = api_login(APIClient(), "audrey", otp=code_of(device))

        assert (early.status_code, early.json()["code"], early["Retry-After"]) == (429, "otp_throttled", "1")
        assert events("auth.2fa.failure", actor=auditor_user).count() == THROTTLE_GRACE + 1
        clock.shift(timedelta(seconds=1))
        assert api_login(APIClient(), "audrey", otp=wrong(code_of(device))).status_code == 401
        assert api_login(APIClient(), "audrey", otp=code_of(device))["Retry-After"] == "2"  # doubled
        clock.shift(timedelta(seconds=2))
        assert api_login(APIClient(), "audrey", otp=code_of(device)).status_code == 200

    def test_the_verify_page_accepts_the_right_code_after_a_wrong_one(self, auditor_user, clock):
        device = enrolled(auditor_user)
        client = logged_in(auditor_user)
        assert client.post(VERIFY, {"code": wrong(code_of(device)), "next": "/admin/"}).status_code == 200

        resp = client.post(VERIFY, {"code": code_of(device), "next": "/admin/"})

        assert redirect_of(resp)[0] == "/admin/"

    def test_privileged_not_enrolled_is_told_to_enrol(self, officer_user):
        client = APIClient()

        resp = api_login(client, "sofia", otp="123456")

        assert resp.status_code == 403
        assert resp.json()["code"] == "otp_enrolment_required"
        assert client.get(ME).status_code == 401

    def test_privileged_with_the_current_code_gets_a_verified_session(self, auditor_user):
        device = enrolled(auditor_user)
        client = APIClient()

        resp = api_login(client, "audrey", otp=code_of(device))

        assert resp.status_code == 200, resp.json()
        # Verified: the auditor reads the audit log with this session, no 2FA gate in between.
        assert client.get(AUDIT).status_code == 200


class TestLockout:
    def test_five_api_failures_lock_out_even_the_right_password(self, plain_user, clock):
        client = APIClient()
        statuses = [api_login(client, "alice", "not-the-password").status_code for _ in range(5)]

        locked = api_login(client, "alice")

        assert statuses[:4] == [401] * 4
        assert (locked.status_code, locked.json()["code"]) == (429, "locked_out")
        assert client.get(ME).status_code == 401
        lockout = events("auth.lockout").first()
        assert (lockout.target_display, lockout.outcome, lockout.details["alert"]) == ("alice", Outcome.DENIED, True)
        failures = events("auth.login.failure", target_display="alice")
        assert failures.count() == 6  # every refused attempt, the locked-out one included
        assert {(f.outcome, f.source_ip) for f in failures} == {(Outcome.FAILURE, "127.0.0.1")}

        clock.shift(settings.AXES_COOLOFF_TIME + timedelta(minutes=1))
        assert api_login(client, "alice").status_code == 200

    def test_five_admin_form_failures_lock_out_even_the_right_password(self, staff_user, clock):
        client = Client()
        for _ in range(5):
            client.post(ADMIN_LOGIN, {"username": "ops", "password": "not-the-password", "next": "/admin/"})

        locked = client.post(ADMIN_LOGIN, {"username": "ops", "password": PASSWORD, "next": "/admin/"})

        assert locked.status_code == 429
        assert b"Too many failed logins" in locked.content
        assert "_auth_user_id" not in client.session
        assert events("auth.lockout", target_display="ops").exists()

        clock.shift(timedelta(minutes=16))
        resp = client.post(ADMIN_LOGIN, {"username": "ops", "password": PASSWORD, "next": "/admin/"})
        assert redirect_of(resp)[0] == "/admin/"
        assert client.session["_auth_user_id"] == str(staff_user.pk)

    def test_the_lockout_page_speaks_the_page_language(self, staff_user):
        """nu18's first `make run`: every other word of the Chinese login page was Chinese, the lockout English."""
        client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
        for _ in range(6):
            locked = client.post(ADMIN_LOGIN, {"username": "ops", "password": "not-the-password", "next": "/admin/"})

        assert locked.status_code == 429
        assert "登录失败次数过多" in locked.content.decode()
        assert b"Too many failed logins" not in locked.content

    def test_failures_spread_beyond_the_window_do_not_lock(self, plain_user, clock):
        client = APIClient()
        for _ in range(4):
            assert api_login(client, "alice", "not-the-password").status_code == 401
        clock.shift(timedelta(minutes=16))
        for _ in range(4):
            assert api_login(client, "alice", "not-the-password").status_code == 401

        assert api_login(client, "alice").status_code == 200
        assert not events("auth.lockout").exists()

    def test_five_failures_spread_over_more_than_fifteen_minutes_do_not_lock(self, plain_user, clock):
        client = APIClient()
        for _ in range(5):
            api_login(client, "alice", "not-the-password")
            clock.shift(timedelta(minutes=4))

        assert api_login(client, "alice").status_code == 200

    def test_api_error_does_not_reveal_whether_the_user_exists(self, plain_user):
        make_user("ivan", is_active=False)
        client = APIClient()

        answers = [
            api_login(client, "nobody", "not-the-password"),
            api_login(client, "alice", "not-the-password"),
            api_login(client, "ivan"),  # inactive, right password
        ]

        assert len({(r.status_code, r.content) for r in answers}) == 1
        assert (answers[0].status_code, answers[0].json()["code"]) == (401, "invalid_credentials")
        assert [e.target_display for e in events("auth.login.failure")] == ["nobody", "alice", "ivan"]

    def test_admin_form_error_does_not_reveal_whether_the_user_exists(self, staff_user):
        client = Client()

        answers = [
            client.post(ADMIN_LOGIN, {"username": name, "password": "not-the-password"}) for name in ("nobody", "ops")
        ]

        notes = [re.findall(rb'<p class="errornote">\s*(.*?)\s*</p>', r.content, re.S) for r in answers]
        assert [r.status_code for r in answers] == [200, 200]
        assert notes[0] == notes[1] != []
        assert [e.target_display for e in events("auth.login.failure")] == ["nobody", "ops"]


class TestPasswordPolicy:
    """The admin role creates users through the API; weak passwords save nothing."""

    @pytest.mark.parametrize(
        ("username", "password", "reason"),
        [
            ("bob", "k9#Vq2!mZp4", "too short"),
            ("bob", "password1234", "too common"),
            ("margarethamilton", "Margarethamilton!", "too similar"),
        ],
    )
    def test_weak_password_is_refused_and_nothing_saved(self, staff_session, username, password, reason):
        resp = staff_session.post(USERS, {"username": username, "password": password, "role": "analyst"}, format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("weak_password", "password")
        assert reason in resp.json()["detail"]
        assert not Profile.objects.filter(user__username=username).exists()
        assert not events("auth.account.create").exists()
        assert not events("auth.role.assign").exists()

    def test_strong_password_creates_the_user(self, staff_session, staff_user):
        resp = staff_session.post(
            USERS, {"username": "bob", "password": "k9#Vq2!mZp4x", "role": "analyst"}, format="json"
        )

        assert resp.status_code == 201, resp.json()
        assert resp.json()["roles"] == ["analyst"]
        assert events("auth.account.create").get().actor == staff_user


class TestPasswordAge:
    def test_expired_password_forces_a_change_then_lifts(self, staff_user):
        with time_machine.travel(timezone.now() + settings.PASSWORD_MAX_AGE + timedelta(days=1), tick=False):
            client = Client()
            otp_login(client, staff_user)
            assert redirect_of(client.get("/admin/"))[0] == "/admin/password_change/"
            api = client.get(ME)
            assert (api.status_code, api.json()["code"]) == (403, "password_expired")

            resp = client.post(
                "/admin/password_change/",
                {"old_password": PASSWORD, "new_password1": "k9#Vq2!mZp4x-new", "new_password2": "k9#Vq2!mZp4x-new"},
            )

            assert redirect_of(resp)[0] == "/admin/password_change/done/"
            assert Profile.objects.get(user=staff_user).password_changed_at == timezone.now()
            assert client.get("/admin/").status_code == 200
            assert client.get(ME).status_code == 200

    def test_password_younger_than_the_maximum_is_not_blocked(self, staff_user):
        with time_machine.travel(timezone.now() + settings.PASSWORD_MAX_AGE - timedelta(days=1), tick=False):
            client = Client()
            otp_login(client, staff_user)

            assert client.get("/admin/").status_code == 200

    def test_expired_analyst_is_blocked_on_the_api(self, plain_user):
        with time_machine.travel(timezone.now() + timedelta(days=91), tick=False):
            api = logged_in(plain_user).get(ME)

        assert (api.status_code, api.json()["code"]) == (403, "password_expired")

    def test_expired_analyst_can_reach_a_password_change_page(self, plain_user):
        with time_machine.travel(timezone.now() + timedelta(days=91), tick=False):
            client = logged_in(plain_user)
            target = client.get("/admin/")["Location"]

            assert client.get(target).status_code == 200

    def test_analyst_changing_an_expired_password_lifts_the_block(self, plain_user):
        with time_machine.travel(timezone.now() + timedelta(days=91), tick=False):
            client = logged_in(plain_user)
            target = reverse("accounts:password-change")
            assert target in client.get(ME).json()["detail"]
            weak = client.post(target, {"old_password": PASSWORD, "new_password1": "alice", "new_password2": "alice"})
            assert weak.status_code == 200
            assert client.get(ME).status_code == 403

            resp = client.post(
                target,
                {"old_password": PASSWORD, "new_password1": "k9#Vq2!mZp4x-new", "new_password2": "k9#Vq2!mZp4x-new"},
            )

            assert resp.status_code == 302
            assert client.get(resp["Location"]).status_code == 200
            assert client.get(ME).status_code == 200
            assert Profile.objects.get(user=plain_user).password_changed_at == timezone.now()


class TestSessionLifetime:
    def _expired(self, event_user, reason: str) -> None:
        event = events("auth.session.expired").get()
        assert (event.actor, event.target_id, event.details) == (event_user, str(event_user.pk), {"reason": reason})

    def test_idle_admin_session_is_logged_out(self, staff_user, clock):
        client = Client()
        otp_login(client, staff_user)
        assert client.get("/admin/").status_code == 200

        clock.shift(settings.SESSION_IDLE_TIMEOUT + timedelta(minutes=1))
        path, query = redirect_of(client.get("/admin/"))

        assert (path, query["next"]) == (settings.LOGIN_URL, ["/admin/"])  # everyone's login; staff get back to /admin/
        self._expired(staff_user, "idle")
        assert "_auth_user_id" not in client.session
        assert redirect_of(client.get("/admin/"))[0] == ADMIN_LOGIN

    def test_idle_api_session_is_logged_out(self, plain_user, clock):
        client = logged_in(plain_user)
        assert client.get(ME).status_code == 200

        clock.shift(timedelta(minutes=16))
        resp = client.get(ME)

        assert (resp.status_code, resp.json()["code"]) == (401, "session_expired")
        self._expired(plain_user, "idle")
        assert client.get(ME).json()["code"] == "not_authenticated"

    def test_activity_within_the_window_keeps_the_session(self, plain_user, clock):
        client = logged_in(plain_user)
        for _ in range(4):
            clock.shift(timedelta(minutes=14))
            assert client.get(ME).status_code == 200

        assert not events("auth.session.expired").exists()

    def test_absolute_lifetime_ends_an_active_session(self, plain_user, clock):
        client = logged_in(plain_user)
        elapsed = timedelta(0)
        while elapsed + timedelta(minutes=14) < settings.SESSION_ABSOLUTE_TIMEOUT:
            clock.shift(timedelta(minutes=14))
            elapsed += timedelta(minutes=14)
            assert client.get(ME).status_code == 200, elapsed

        clock.shift(settings.SESSION_ABSOLUTE_TIMEOUT - elapsed + timedelta(minutes=1))
        resp = client.get(ME)

        assert timedelta(hours=12) == settings.SESSION_ABSOLUTE_TIMEOUT
        assert (resp.status_code, resp.json()["code"]) == (401, "session_expired")
        self._expired(plain_user, "absolute")


class TestDormantAccounts:
    """Personas created on day 0: an idle person, a person who logs in on day 80, a service
    account whose token is used on day 85 and one whose token is never used."""

    @pytest.fixture
    def people(self, clock):
        owner = make_user("owen", ANALYST)
        people = {
            "idle": make_user("dora", ANALYST),
            "recent": make_user("lena", ANALYST),
            "svc_used": create_service_account(name="svc-etl", owner_id=owner.pk, actor=None),
            "svc_idle": create_service_account(name="svc-old", owner_id=owner.pk, actor=None),
        }
        tokens = {key: token_for(user, days=365) for key, user in people.items()}
        clock.shift(timedelta(days=80))
        logged_in(people["recent"])
        clock.shift(timedelta(days=5))
        assert APIClient(HTTP_AUTHORIZATION=f"Bearer {tokens['svc_used']}").get(ME).status_code == 200
        clock.shift(timedelta(days=6))  # day 91
        return people, tokens

    def test_unused_accounts_are_disabled_and_recorded(self, people):
        people, _ = people

        disabled = tasks.disable_dormant_accounts()

        assert {"dora", "svc-old"} <= set(disabled)
        assert not {"lena", "svc-etl"} & set(disabled)
        for key, active in {"idle": False, "svc_idle": False, "recent": True, "svc_used": True}.items():
            people[key].refresh_from_db()
            assert people[key].is_active is active, key
        event = events("auth.account.disabled", target_id=str(people["idle"].pk)).get()
        assert (event.actor, event.details["reason"], event.details["last_used"]) == (None, "dormant", None)
        assert Profile.objects.get(user=people["idle"]).disabled_reason == "dormant"

    def test_disabled_users_token_is_refused(self, people):
        people, tokens = people
        tasks.disable_dormant_accounts()

        resp = APIClient(HTTP_AUTHORIZATION=f"Bearer {tokens['idle']}").get(ME)

        # The sweep revoked the token with the account (tests/security/test_tokens_policy.py).
        assert (resp.status_code, resp.json()["code"]) == (401, "token_revoked")
        assert events("auth.token.denied", error_code="token_revoked").exists()

    def test_nothing_is_disabled_before_the_dormancy_age(self, clock):
        make_user("dora", ANALYST)
        clock.shift(timedelta(days=89))

        assert tasks.disable_dormant_accounts() == []
        assert not events("auth.account.disabled").exists()
        clock.shift(timedelta(days=2))
        assert tasks.disable_dormant_accounts() == ["dora"]

    def test_the_sweep_is_scheduled(self):
        scheduled = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()]

        assert tasks.disable_dormant_accounts.name in scheduled
