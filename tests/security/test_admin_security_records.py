"""The security records in the admin (role groups, TOTP devices, lockout records): read-only, never
showing a TOTP key, and the two writes they offer (remove a second factor, lift a lockout) are a
security officer's, never on their own account, and audited."""

from __future__ import annotations

import re

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.contrib.auth.models import Group
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import EnrolmentCode
from apps.accounts.roles import ADMIN, ANALYST, SECURITY_OFFICER
from apps.accounts.services import find_enrolment_code
from apps.accounts.services.devices import remove_second_factor
from apps.accounts.services.lockout import unlock_login
from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from tests.conftest import make_user, otp_login

pytestmark = pytest.mark.django_db

DEVICES = "/admin/otp_totp/totpdevice/"
ATTEMPTS = "/admin/axes/accessattempt/"


def browser(user) -> Client:
    client = Client()
    otp_login(client, user)
    return client


@pytest.fixture
def second_officer(db):
    return make_user("otto", SECURITY_OFFICER)


class TestSecondFactors:
    def test_no_admin_page_shows_a_totp_key(self, admin_user, officer_user, auditor_user, staff_user):
        victim = TOTPDevice.objects.create(user=staff_user, name="phone", confirmed=True)
        for user in (admin_user, officer_user, auditor_user):
            client = browser(user)
            for url in (DEVICES, f"{DEVICES}{victim.pk}/change/"):
                page = client.get(url)
                assert page.status_code == 200, (user, url)
                assert victim.key not in page.content.decode(), (user, url)
            # django-otp's configuration and QR-code pages (the key as a URL or an image) are gone.
            assert client.get(f"{DEVICES}{victim.pk}/config/").status_code == 302  # the catch-all redirect
            assert client.get(f"{DEVICES}{victim.pk}/qrcode/").status_code == 302

    def test_an_officer_removes_another_persons_second_factor(self, officer_user, staff_user):
        victim_session = browser(staff_user)
        assert victim_session.get("/admin/").status_code == 200
        victim = TOTPDevice.objects.get(user=staff_user)  # the device that session was verified with

        response = browser(officer_user).post(
            DEVICES, {"action": "remove_second_factor", "_selected_action": [victim.pk]}, follow=True
        )

        assert response.status_code == 200
        assert not TOTPDevice.objects.filter(pk=victim.pk).exists()
        event = AuditEvent.objects.get(event_type="auth.2fa.remove")
        assert (event.actor, event.target_id, event.details["alert"]) == (officer_user, str(staff_user.pk), True)
        assert event.details["deleted"] == {"otp_totp.totpdevice": [victim.pk]}
        # The session verified by the removed device is verified no more.
        assert victim_session.get("/admin/").status_code == 302
        # A privileged person re-enrols only with the enrolment code the officer was shown, once.
        code = EnrolmentCode.objects.get(user=staff_user)
        assert code.issued_by == officer_user
        shown = re.findall(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", response.content.decode())
        assert len(shown) == 1 and find_enrolment_code(staff_user, shown[0]) == code

    @pytest.mark.parametrize("actor_kind", ["staff_user", "auditor_user", "guest_user"])
    def test_only_an_officer_removes_second_factors(self, request, actor_kind, plain_user):
        actor = request.getfixturevalue(actor_kind)
        device = TOTPDevice.objects.create(user=plain_user, name="phone", confirmed=True)

        browser(actor).post(DEVICES, {"action": "remove_second_factor", "_selected_action": [device.pk]})
        with pytest.raises(ServiceError) as refused:
            remove_second_factor(device_id=device.pk, actor=actor)

        assert refused.value.code == "security_officer_required"
        assert TOTPDevice.objects.filter(pk=device.pk).exists()
        assert not AuditEvent.objects.filter(event_type="auth.2fa.remove").exists()

    def test_never_ones_own_nor_the_superusers(self, officer_user, admin_user):
        own = TOTPDevice.objects.create(user=officer_user, name="mine", confirmed=True)
        root = TOTPDevice.objects.create(user=admin_user, name="root", confirmed=True)
        client = browser(officer_user)

        response = client.post(DEVICES, {"action": "remove_second_factor", "_selected_action": [own.pk]}, follow=True)
        client.post(DEVICES, {"action": "remove_second_factor", "_selected_action": [root.pk]})

        assert "self_change_forbidden" in response.content.decode()
        assert TOTPDevice.objects.filter(pk__in=[own.pk, root.pk]).count() == 2
        with pytest.raises(ServiceError, match="on the host"):
            remove_second_factor(device_id=root.pk, actor=officer_user)

    def test_a_break_glass_officer_may_remove_one(self, second_officer, plain_user):
        from apps.accounts.services import grant_emergency_access

        emergency = make_user("erin", ANALYST)
        grant_emergency_access(user_id=emergency.pk, role=SECURITY_OFFICER, minutes=30, reason="night", actor=None)
        device = TOTPDevice.objects.create(user=plain_user, name="phone", confirmed=True)

        _, code = remove_second_factor(device_id=device.pk, actor=emergency)

        assert not TOTPDevice.objects.filter(pk=device.pk).exists()
        assert code is None  # an analyst enrols again without one


def _lock(username: str, ip: str = "192.0.2.1", failures: int = 5) -> None:
    common = dict(user_agent="t", ip_address=ip, username=username, http_accept="*/*", path_info="/admin/login/")
    AccessAttempt.objects.create(**common, get_data="", post_data="", failures_since_start=failures)
    for _ in range(failures):
        AccessFailureLog.objects.create(**common, locked_out=True)


class TestLockouts:
    def test_an_officer_unlocks_a_locked_account_which_can_then_log_in(self, officer_user, plain_user):
        officer = browser(officer_user)
        _lock(plain_user.username)
        attempt = AccessAttempt.objects.get(username=plain_user.username)
        login = {"username": plain_user.username, "password": "correct-horse-battery-9"}
        # The lockout holds the pair (user name, address): log in from the locked address.
        locked = Client(REMOTE_ADDR="192.0.2.1")
        assert locked.post("/api/v1/accounts/login/", login, content_type="application/json").status_code != 200

        officer.post(ATTEMPTS, {"action": "unlock", "_selected_action": [attempt.pk]})

        assert not AccessAttempt.objects.filter(username=plain_user.username).exists()
        assert not AccessFailureLog.objects.filter(username=plain_user.username).exists()
        event = AuditEvent.objects.get(event_type="auth.lockout.clear")
        assert (event.actor, event.target_id) == (officer_user, str(plain_user.pk))
        assert attempt.pk in event.details["deleted"]["axes.accessattempt"]
        assert locked.post("/api/v1/accounts/login/", login, content_type="application/json").status_code == 200

    def test_only_an_officer_and_never_for_themselves(self, officer_user, staff_user, auditor_user):
        clients = [browser(user) for user in (staff_user, auditor_user, officer_user)]
        _lock(officer_user.username)  # after the logins: a login clears its own user name's failures
        _lock("mallory", ip="192.0.2.66")
        own = AccessAttempt.objects.get(username=officer_user.username)
        other = AccessAttempt.objects.get(username="mallory")

        for client in clients[:2]:
            client.post(ATTEMPTS, {"action": "unlock", "_selected_action": [other.pk]})
        clients[2].post(ATTEMPTS, {"action": "unlock", "_selected_action": [own.pk]})

        assert AccessAttempt.objects.count() == 2
        assert AccessFailureLog.objects.count() == 10
        assert not AuditEvent.objects.filter(event_type="auth.lockout.clear").exists()
        with pytest.raises(ServiceError) as refused:
            unlock_login(username=officer_user.username, actor=officer_user)
        assert refused.value.code == "self_change_forbidden"

    def test_records_are_read_only_even_for_the_superuser(self, admin_user):
        client = browser(admin_user)
        _lock("mallory")
        attempt = AccessAttempt.objects.get()

        assert client.post(f"{ATTEMPTS}{attempt.pk}/delete/", {"post": "yes"}).status_code == 403
        client.post(ATTEMPTS, {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})

        assert AccessAttempt.objects.filter(pk=attempt.pk).exists()


class TestRoleGroups:
    def test_roles_are_read_only_even_for_the_superuser(self, admin_user, plain_user):
        client = browser(admin_user)
        role = Group.objects.get(name=ADMIN)

        added = client.post("/admin/auth/group/add/", {"name": "shadow-admins"})
        changed = client.post(f"/admin/auth/group/{role.pk}/change/", {"name": "admins2", "permissions": []})
        deleted = client.post(f"/admin/auth/group/{role.pk}/delete/", {"post": "yes"})

        assert (added.status_code, changed.status_code, deleted.status_code) == (403, 403, 403)
        assert Group.objects.filter(name=ADMIN, permissions__isnull=False).exists()
        assert not Group.objects.filter(name="shadow-admins").exists()
        page = client.get(f"/admin/auth/group/{role.pk}/change/").content.decode()
        assert "deployments.add_deployment" in page  # the role's permissions, shown read-only
