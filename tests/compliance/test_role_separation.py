"""Separation of duties as it is, not as the group names say (等保 8.1.4.2 e, 8.1.5.1-3; GB/T 39786
8.6 b; HIPAA 164.308(a)(3)(ii)(A)): an active superuser holds every role; a role's own power held
through a direct permission, another group or a tampered role group counts as the role; so does a
break-glass grant written past the service. Each attack fails the check naming the person and the
path, and undoing it passes again.

Personas: sec (security officer, who disables accounts), root (superuser), mallory (admin who
collects a second role by the side door)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from apps.accounts.models import EmergencyAccess
from apps.accounts.roles import ADMIN, AUDITOR, SECURITY_OFFICER
from apps.accounts.selectors import effective_roles, exclusive_powers
from apps.accounts.services import set_user_active
from apps.compliance.checks import Context, run_check
from apps.demo.management.commands.bootstrap_demo import ensure_demo_accounts
from tests.compliance.conftest import check_of, evaluate
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def separation() -> dict:
    status, evidence, _ = evaluate("dengbao-l3", "8.1.5.1-3")
    return check_of(evidence, "accounts.role_separation")


def crypto():
    return run_check("accounts.crypto_role_separation", Context(profile="dengbao-l3", options={"guomi": True}))


def perm(dotted: str) -> Permission:
    app, code = dotted.split(".")
    return Permission.objects.get(content_type__app_label=app, codename=code)


@pytest.fixture
def sec():
    return make_user("sec", SECURITY_OFFICER)


def test_every_exclusive_role_has_powers_of_its_own():
    powers = exclusive_powers()
    assert "audit.view_auditevent" in powers[AUDITOR]
    assert "keys.rotate_keyencryptionkey" in powers[SECURITY_OFFICER]
    assert "auth.add_user" in powers[ADMIN]
    assert all(powers.values())


class TestSuperuser:
    def test_active_superuser_fails_both_checks_naming_it_and_disabled_passes(self, sec):
        assert separation()["status"] == "pass"
        root = get_user_model().objects.create_superuser("root", "root@example.org", "correct-horse-battery-9")

        check = separation()
        assert check["status"] == "fail"
        assert check["users_holding_two"] == ["root"] and check["active_superusers"] == ["root"]
        assert check["how_held"]["root"] == {r: ["superuser"] for r in (ADMIN, AUDITOR, SECURITY_OFFICER)}
        assert "root" in check["summary"]
        result = crypto()
        assert result.status == "fail" and "root" in result.summary

        set_user_active(user_id=root.pk, active=False, actor=sec)

        assert separation()["status"] == "pass"
        assert crypto().status == "pass"

    def test_the_superuser_check_agrees_an_inactive_superuser_is_no_one(self, sec):
        root = get_user_model().objects.create_superuser("root", "root@example.org", "correct-horse-battery-9")
        _, evidence, _ = evaluate("dengbao-l3", "8.1.4.2 a-f")
        assert check_of(evidence, "accounts.superuser_sealed")["active_superusers"] == ["root"]
        set_user_active(user_id=root.pk, active=False, actor=sec)
        _, evidence, _ = evaluate("dengbao-l3", "8.1.4.2 a-f")
        assert check_of(evidence, "accounts.superuser_sealed")["active_superusers"] == []
        assert check_of(evidence, "accounts.role_separation")["active_superusers"] == []

    def test_make_run_accounts_are_separated_and_create_no_superuser(self):
        ensure_demo_accounts()

        check = separation()

        assert check["status"] == "pass", check
        assert check["active_superusers"] == []
        assert not get_user_model().objects.filter(is_superuser=True).exists()


class TestSideDoors:
    """A second role collected without a second role group."""

    def test_a_power_through_a_second_group(self):
        mallory = make_user("mallory", ADMIN)
        helpers = Group.objects.create(name="helpers")
        helpers.permissions.add(perm("audit.view_auditevent"))
        mallory.groups.add(helpers)

        check = separation()

        assert check["status"] == "fail" and check["users_holding_two"] == ["mallory"]
        assert check["how_held"]["mallory"] == {
            ADMIN: ["group admin"],
            AUDITOR: ["group helpers: audit.view_auditevent"],
        }
        mallory.groups.remove(helpers)
        assert separation()["status"] == "pass"

    def test_a_power_as_a_direct_user_permission(self):
        mallory = make_user("mallory", AUDITOR)
        mallory.user_permissions.add(perm("keys.rotate_keyencryptionkey"))

        assert separation()["how_held"]["mallory"][SECURITY_OFFICER] == ["permission keys.rotate_keyencryptionkey"]
        result = crypto()
        assert result.status == "fail" and "mallory" in result.summary
        assert result.evidence["users_auditor_and_key_admin"] == ["mallory"]

        mallory.user_permissions.clear()
        assert crypto().status == "pass" and separation()["status"] == "pass"

    def test_a_role_group_given_another_roles_power(self):
        make_user("mallory", ADMIN)
        admins = Group.objects.get(name=ADMIN)
        admins.permissions.add(perm("audit.export_auditevent"))

        check = separation()

        assert check["how_held"]["mallory"][AUDITOR] == ["group admin: audit.export_auditevent"]
        admins.permissions.remove(perm("audit.export_auditevent"))
        assert separation()["status"] == "pass"

    def test_break_glass_written_past_the_service(self, sec):
        mallory = make_user("mallory", ADMIN)
        now = timezone.now()
        access = EmergencyAccess.objects.create(  # grant_emergency_access would refuse: two exclusive roles
            user=mallory, role=AUDITOR, reason="x", granted_by=sec, granted_at=now, expires_at=now + timedelta(hours=1)
        )

        assert separation()["how_held"]["mallory"][AUDITOR] == ["break-glass"]
        access.revoked_at = timezone.now()
        access.save()
        assert separation()["status"] == "pass"

    def test_matches_djangos_own_resolution(self):
        """The bulk resolution agrees with user.get_all_permissions() (RoleBackend: groups, direct
        permissions, break-glass; everything for a superuser) on who holds which role."""
        mallory = make_user("mallory", ADMIN)
        mallory.user_permissions.add(perm("audit.view_auditevent"))
        make_user("olivia", SECURITY_OFFICER)
        get_user_model().objects.create_superuser("root", "root@example.org", "correct-horse-battery-9")
        powers = exclusive_powers()
        held = effective_roles()
        for user in get_user_model().objects.filter(is_active=True):
            mine = get_user_model().objects.get(pk=user.pk).get_all_permissions()
            expected = {r for r, p in powers.items() if p & mine}
            assert set(held.get(user.username, {})) == expected, user.username


def test_a_privileged_power_outside_a_role_group_fails_the_second_factor_check():
    """The 2FA gate sees role groups, break-glass and the superuser flag; an analyst handed the
    auditor's power directly escapes it, enrolled or not, and access.privileged_2fa says so."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from apps.accounts.roles import ANALYST

    eve = make_user("eve", ANALYST)
    TOTPDevice.objects.create(user=eve, name="phone", confirmed=True)
    eve.user_permissions.add(perm("audit.view_auditevent"))

    status, evidence, _ = evaluate("hipaa", "164.312(d)")
    check = check_of(evidence, "access.privileged_2fa")
    assert status == "fail" and "eve" in check["summary"]
    assert check["privileged_powers_outside_role_groups"] == {"eve": ["permission audit.view_auditevent"]}

    eve.user_permissions.clear()
    assert evaluate("hipaa", "164.312(d)")[0] == "pass"
