"""Role membership through /api/v1/accounts/users/{id}/roles/: separation of duties between
admin, security_officer and auditor, is_staff following the privileged roles, audit events with
before and after, and who may change roles at all.

Personas: the security officer (token client) who changes roles, the users whose roles change,
and an admin-role user who may manage users but not their roles.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from apps.accounts.models import EnrolmentCode
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, EXCLUSIVE, GUEST, PERMISSIONS, ROLES, SECURITY_OFFICER
from apps.accounts.services import create_service_account, roles_of
from apps.audit.models import AuditEvent
from tests.conftest import make_user
from tests.factories import token_for

pytestmark = pytest.mark.django_db


def roles_url(user, role: str | None = None) -> str:
    base = f"/api/v1/accounts/users/{user.pk}/roles/"
    return f"{base}{role}/" if role else base


def assign(client, user, role: str):
    return client.post(roles_url(user), {"role": role}, format="json")


def role_events():
    return AuditEvent.objects.filter(event_group="auth", event_type__startswith="auth.role.")


class TestRoleGroups:
    def test_each_role_is_a_group_with_exactly_its_permissions(self):
        for role in ROLES:
            group = Group.objects.get(name=role)
            perms = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
            assert perms == set(PERMISSIONS[role]), role

    def test_admin_cannot_read_the_audit_log_or_manage_keys_and_officer_cannot_deploy(self):
        assert not {"audit.view_auditevent", "audit.export_auditevent"} & set(PERMISSIONS[ADMIN])
        assert not [p for p in PERMISSIONS[ADMIN] if p.startswith("keys.")]
        assert not [p for p in PERMISSIONS[SECURITY_OFFICER] if p.startswith("deployments.")]
        assert not [p for p in PERMISSIONS[AUDITOR] if not p.split(".")[1].startswith(("view_", "export_"))]
        assert PERMISSIONS[GUEST] == ("registry.view_catalogue",)


class TestAssignRole:
    @pytest.mark.parametrize(
        ("standing", "wanted"), [(a, b) for a in sorted(EXCLUSIVE) for b in sorted(EXCLUSIVE) if a != b]
    )
    def test_second_exclusive_role_is_a_conflict_and_saves_nothing(self, officer_session, standing, wanted):
        user = make_user("pat", standing)
        staff_before = user.is_staff

        resp = assign(officer_session, user, wanted)

        assert resp.status_code == 409
        assert (resp.json()["code"], resp.json()["field"]) == ("role_conflict", "role")
        assert "separation of duties" in resp.json()["detail"]
        user.refresh_from_db()
        assert roles_of(user) == {standing}
        assert user.is_staff == staff_before
        assert not role_events().exists()

    def test_unknown_role_is_refused(self, officer_session, plain_user):
        resp = assign(officer_session, plain_user, "root")

        assert resp.status_code == 400
        assert resp.json()["field"] == "role"
        assert roles_of(plain_user) == {ANALYST}
        assert not role_events().exists()

    def test_admin_role_makes_staff_and_is_recorded(self, officer_session, officer_user, plain_user):
        assert not plain_user.is_staff

        resp = assign(officer_session, plain_user, ADMIN)

        assert resp.status_code == 200, resp.json()
        assert resp.json()["roles"] == [ADMIN, ANALYST]
        assert resp.json()["enrolment_code"]  # a privileged role comes with a one-time enrolment code
        plain_user.refresh_from_db()
        assert plain_user.is_staff
        event = role_events().get()
        assert (event.event_type, event.actor, event.target_id) == (
            "auth.role.assign",
            officer_user,
            str(plain_user.pk),
        )
        code = EnrolmentCode.objects.get(user=plain_user)
        assert event.details == {
            "role": ADMIN,
            "before": [ANALYST],
            "after": [ADMIN, ANALYST],
            "totp_devices_voided": 0,
            "enrolment_code": code.pk,
        }
        assert event.token_id is None  # made from sofia's session: tokens change no roles

    def test_non_privileged_role_comes_without_enrolment_code(self, officer_session, guest_user):
        resp = assign(officer_session, guest_user, ANALYST)

        assert resp.status_code == 200, resp.json()
        assert resp.json()["enrolment_code"] is None
        assert not EnrolmentCode.objects.exists()

    def test_removing_admin_clears_staff_and_is_recorded(self, officer_session, officer_user, staff_user):
        assert staff_user.is_staff

        resp = officer_session.delete(roles_url(staff_user, ADMIN))

        assert resp.status_code == 200, resp.json()
        assert resp.json()["roles"] == []
        staff_user.refresh_from_db()
        assert not staff_user.is_staff
        event = role_events().get()
        assert (event.event_type, event.actor) == ("auth.role.remove", officer_user)
        assert event.details == {
            "role": ADMIN,
            "before": [ADMIN],
            "after": [],
        }

    def test_removed_exclusive_role_frees_the_way_for_another(self, officer_session, staff_user):
        officer_session.delete(roles_url(staff_user, ADMIN))

        resp = assign(officer_session, staff_user, AUDITOR)

        assert resp.status_code == 200
        assert roles_of(staff_user) == {AUDITOR}

    def test_removing_an_unknown_role_is_refused(self, officer_session, plain_user):
        resp = officer_session.delete(roles_url(plain_user, "root"))

        assert resp.status_code == 400
        assert resp.json()["code"] == "unknown_role"
        assert not role_events().exists()

    def test_unknown_user_is_404(self, officer_session):
        resp = officer_session.post("/api/v1/accounts/users/999999/roles/", {"role": ANALYST}, format="json")

        assert resp.status_code == 404
        assert not role_events().exists()

    @pytest.mark.parametrize("role", sorted(EXCLUSIVE))
    def test_service_account_cannot_hold_a_privileged_role(self, officer_session, plain_user, role):
        svc = create_service_account(name="svc-etl", owner_id=plain_user.pk, actor=None)

        resp = assign(officer_session, svc, role)

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("service_account_role", "role")
        assert roles_of(svc) == {ANALYST}
        svc.refresh_from_db()
        assert not svc.is_staff


class TestWhoMayChangeRoles:
    @pytest.mark.parametrize("persona", ["auditor_session", "user_session", "guest_session"])
    def test_neither_auditor_analyst_nor_guest_changes_roles(self, request, persona):
        target = make_user("pat", GUEST)

        add = assign(request.getfixturevalue(persona), target, ANALYST)
        remove = request.getfixturevalue(persona).delete(roles_url(target, GUEST))

        assert (add.status_code, add.json()["code"]) == (403, "permission_denied")
        assert (remove.status_code, remove.json()["code"]) == (403, "permission_denied")
        assert roles_of(target) == {GUEST}
        assert not role_events().exists()

    def test_admin_gives_and_takes_analyst_and_guest(self, staff_session, staff_user):
        target = make_user("pat", GUEST)

        add = assign(staff_session, target, ANALYST)
        remove = staff_session.delete(roles_url(target, GUEST))

        assert (add.status_code, remove.status_code) == (200, 200)
        assert roles_of(target) == {ANALYST}
        assert [e.actor for e in role_events()] == [staff_user, staff_user]

    @pytest.mark.parametrize("role", sorted(EXCLUSIVE))
    def test_admin_cannot_give_or_take_a_privileged_role(self, staff_session, auditor_user, role):
        target = make_user("pat", ANALYST)

        add = assign(staff_session, target, role)
        remove = staff_session.delete(roles_url(auditor_user, "auditor"))

        assert (add.status_code, add.json()["code"]) == (403, "privileged_role_requires_officer")
        assert (remove.status_code, remove.json()["code"]) == (403, "privileged_role_requires_officer")
        assert roles_of(target) == {ANALYST}
        assert roles_of(auditor_user) == {AUDITOR}
        assert not role_events().exists()

    def test_admin_role_cannot_make_itself_security_officer(self, staff_session, staff_user):
        resp = assign(staff_session, staff_user, SECURITY_OFFICER)

        assert (resp.status_code, resp.json()["code"]) == (403, "self_change_forbidden")
        assert roles_of(staff_user) == {ADMIN}

    @pytest.mark.parametrize("scopes", [["read"], ["invoke", "read", "manage"]])
    def test_no_token_of_an_officer_changes_roles(self, officer_user, plain_user, scopes):
        client = APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(officer_user, scopes=scopes)}")

        resp = assign(client, plain_user, GUEST)

        # whatever its scopes: roles change from a session (tests/security/test_token_accounts_writes.py)
        assert (resp.status_code, resp.json()["code"]) == (403, "token_not_allowed")
        assert roles_of(plain_user) == {ANALYST}

    def test_anonymous_is_401(self, anon_client, plain_user):
        assert assign(anon_client, plain_user, GUEST).status_code == 401


@pytest.mark.django_db
def test_roles_for_audit_agrees_with_roles_of_including_break_glass(plain_user, time_machine):
    from apps.accounts.services import grant_emergency_access, roles_of
    from apps.accounts.services.roles import roles_for_audit

    assert roles_for_audit(plain_user) == sorted(roles_of(plain_user)) == ["analyst"]
    access = grant_emergency_access(user_id=plain_user.pk, role="auditor", minutes=30, reason="incident", actor=None)
    assert roles_for_audit(plain_user) == sorted(roles_of(plain_user)) == ["analyst", "auditor"]
    time_machine.move_to(access.expires_at, tick=False)
    assert roles_for_audit(plain_user) == sorted(roles_of(plain_user)) == ["analyst"]
    assert roles_for_audit(None) == []
