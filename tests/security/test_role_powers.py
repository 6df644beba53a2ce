"""Attacks on roles and break-glass (issue 10, first list): an admin making a security officer,
an officer escalating itself, separation of duties ignoring break-glass roles, self-changes.

Personas: sofia (security officer), ops (admin), alice (analyst), a second officer for what
only another officer may do."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apps.accounts.models import EmergencyAccess
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, GUEST, SECURITY_OFFICER
from apps.accounts.services import roles_of
from apps.audit.models import AuditEvent
from tests.conftest import make_user
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db

USERS = "/api/v1/accounts/users/"
BREAK_GLASS = "/api/v1/accounts/break-glass/"
REASON = "night incident on ward 4"


def roles_url(user, role: str | None = None) -> str:
    return f"{USERS}{user.pk}/roles/{role}/" if role else f"{USERS}{user.pk}/roles/"


def break_glass(api, user, role: str):
    return api.post(BREAK_GLASS, {"user": user.pk, "role": role, "minutes": 30, "reason": REASON}, format="json")


def code_of(resp) -> tuple[int, str]:
    return resp.status_code, resp.json().get("code")


class TestOfficerCannotEscalateItself:
    def test_no_self_break_glass_no_dropping_its_role_no_taking_admin(self, officer_user):
        api = session_api(officer_user)

        glass = break_glass(api, officer_user, ADMIN)
        drop = api.delete(roles_url(officer_user, SECURITY_OFFICER))
        take = api.post(roles_url(officer_user), {"role": ADMIN}, format="json")

        assert code_of(glass) == (403, "self_change_forbidden")
        assert code_of(drop) == (403, "self_change_forbidden")
        assert code_of(take) == (403, "self_change_forbidden")
        assert roles_of(officer_user) == {SECURITY_OFFICER}
        assert not EmergencyAccess.objects.exists()
        assert not AuditEvent.objects.filter(event_type__in=["auth.role.assign", "auth.role.remove"]).exists()

    def test_even_a_non_exclusive_role_or_break_glass_is_not_self_given(self, officer_user):
        api = session_api(officer_user)

        assert code_of(api.post(roles_url(officer_user), {"role": ANALYST}, format="json")) == (
            403,
            "self_change_forbidden",
        )
        assert code_of(break_glass(api, officer_user, ANALYST)) == (403, "self_change_forbidden")

    def test_revoking_its_own_break_glass_is_allowed(self, officer_user):
        colleague = make_user("olga", SECURITY_OFFICER)
        access_id = break_glass(session_api(colleague), officer_user, ANALYST).json()["id"]

        resp = session_api(officer_user).post(f"{BREAK_GLASS}{access_id}/revoke/")

        assert resp.status_code == 200
        assert EmergencyAccess.objects.get(pk=access_id).revoked_at is not None


class TestSeparationOfDutiesCountsBreakGlass:
    def test_standing_role_refused_while_a_break_glass_role_clashes(self, officer_user, plain_user):
        api = session_api(officer_user)
        assert break_glass(api, plain_user, ADMIN).status_code == 201

        resp = api.post(roles_url(plain_user), {"role": AUDITOR}, format="json")

        assert code_of(resp) == (409, "role_conflict")
        assert roles_of(plain_user, include_emergency=False) == {ANALYST}

    def test_break_glass_refused_while_a_standing_role_clashes(self, officer_user, staff_user):
        resp = break_glass(session_api(officer_user), staff_user, SECURITY_OFFICER)

        assert code_of(resp) == (409, "role_conflict")

    def test_another_officer_cannot_give_an_officer_admin_either(self, officer_user):
        colleague = make_user("olga", SECURITY_OFFICER)
        api = session_api(colleague)

        assert code_of(break_glass(api, officer_user, ADMIN)) == (409, "role_conflict")
        assert code_of(api.post(roles_url(officer_user), {"role": ADMIN}, format="json")) == (409, "role_conflict")
        assert roles_of(officer_user) == {SECURITY_OFFICER}


class TestAdminCannotMakePrivilegedPeople:
    @pytest.mark.parametrize("role", [SECURITY_OFFICER, AUDITOR, ADMIN])
    def test_admin_creating_a_user_with_a_privileged_role_is_refused(self, staff_user, role):
        resp = session_api(staff_user).post(
            USERS, {"username": "mallory", "password": "correct-horse-battery-9", "role": role}, format="json"
        )

        assert code_of(resp) == (403, "privileged_role_requires_officer")
        assert not get_user_model().objects.filter(username="mallory").exists()
        assert not AuditEvent.objects.filter(event_type="auth.account.create").exists()

    def test_admin_creates_an_analyst(self, staff_user):
        resp = session_api(staff_user).post(
            USERS, {"username": "mallory", "password": "correct-horse-battery-9", "role": ANALYST}, format="json"
        )

        assert resp.status_code == 201, resp.json()
        assert resp.json()["roles"] == [ANALYST]

    @pytest.mark.parametrize("role", [SECURITY_OFFICER, AUDITOR, ADMIN])
    def test_admin_assigning_a_privileged_role_is_refused(self, staff_user, plain_user, role):
        resp = session_api(staff_user).post(roles_url(plain_user), {"role": role}, format="json")

        assert code_of(resp) == (403, "privileged_role_requires_officer")
        assert roles_of(plain_user) == {ANALYST}

    def test_admin_cannot_remove_an_officer_role(self, staff_user, officer_user):
        resp = session_api(staff_user).delete(roles_url(officer_user, SECURITY_OFFICER))

        assert code_of(resp) == (403, "privileged_role_requires_officer")
        assert roles_of(officer_user) == {SECURITY_OFFICER}

    def test_nobody_changes_their_own_roles(self, staff_user, plain_user):
        own_admin = session_api(staff_user).delete(roles_url(staff_user, ADMIN))

        assert code_of(own_admin) == (403, "self_change_forbidden")
        assert roles_of(staff_user) == {ADMIN}

    def test_admin_gives_a_guest_the_analyst_role(self, staff_user, guest_user):
        resp = session_api(staff_user).post(roles_url(guest_user), {"role": ANALYST}, format="json")

        assert resp.status_code == 200
        assert roles_of(guest_user) == {ANALYST, GUEST}
