"""Enable / disable and password reset under the policy of powers: an admin acts on
non-privileged persons and service accounts only, a security officer on anyone, nobody on
themselves; a reset forces a change at the next login, ends the sessions and revokes the tokens.

Personas: ops (admin), sofia (officer), alice (analyst), audrey (auditor), svc-etl (alice's)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken
from apps.accounts.services import create_service_account
from apps.audit.models import AuditEvent
from tests.factories import PASSWORD, token_for
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db

USERS = "/api/v1/accounts/users/"
ME = "/api/v1/accounts/me/"
NEW_PASSWORD = "another-horse-battery-7"


def set_active(api, user, active: bool):
    return api.post(f"{USERS}{user.pk}/active/", {"is_active": active}, format="json")


def reset(api, user, password: str = NEW_PASSWORD):
    return api.post(f"{USERS}{user.pk}/password/", {"password": password}, format="json")


def code_of(resp) -> tuple[int, str]:
    return resp.status_code, resp.json().get("code")


def is_active(user) -> bool:
    return get_user_model().objects.get(pk=user.pk).is_active


@pytest.fixture
def svc(plain_user):
    return create_service_account(name="svc-etl", owner_id=plain_user.pk, actor=None)


class TestEnableDisable:
    def test_admin_disables_an_analyst_and_a_service_account(self, staff_user, plain_user, svc):
        api = session_api(staff_user)

        assert set_active(api, plain_user, False).status_code == 200
        assert set_active(api, svc, False).status_code == 200
        assert not is_active(plain_user) and not is_active(svc)

    @pytest.mark.parametrize("persona", ["officer_user", "auditor_user", "admin_user"])
    def test_admin_cannot_disable_a_privileged_person(self, request, staff_user, persona):
        target = request.getfixturevalue(persona)

        resp = set_active(session_api(staff_user), target, False)

        assert code_of(resp) == (403, "privileged_account_requires_officer")
        assert is_active(target)
        assert not AuditEvent.objects.filter(event_type="auth.account.update").exists()

    def test_officer_disables_an_admin(self, officer_user, staff_user):
        resp = set_active(session_api(officer_user), staff_user, False)

        assert resp.status_code == 200
        assert not is_active(staff_user)

    @pytest.mark.parametrize("persona", ["officer_user", "staff_user"])
    def test_nobody_disables_themselves(self, request, persona):
        user = request.getfixturevalue(persona)

        assert code_of(set_active(session_api(user), user, False)) == (403, "self_change_forbidden")
        assert is_active(user)

    @pytest.mark.parametrize("persona", ["auditor_user", "plain_user"])
    def test_others_do_not_even_learn_which_ids_exist(self, request, persona, guest_user):
        api = session_api(request.getfixturevalue(persona))

        assert code_of(set_active(api, guest_user, False)) == (403, "permission_denied")
        assert code_of(api.post(f"{USERS}999999/active/", {"is_active": False}, format="json")) == (
            403,
            "permission_denied",
        )


class TestPasswordReset:
    def test_reset_forces_a_change_ends_sessions_revokes_tokens_and_alerts(self, staff_user, plain_user):
        browser = Client()
        browser.force_login(plain_user)
        assert browser.get(ME).status_code == 200
        plaintext = token_for(plain_user)

        resp = reset(session_api(staff_user), plain_user)

        assert resp.status_code == 200, resp.json()
        assert browser.get(ME).status_code in (401, 403)  # the old session is gone
        assert not [s for s in Session.objects.all() if s.get_decoded().get("_auth_user_id") == str(plain_user.pk)]
        assert ApiToken.objects.get(user=plain_user).revoked_at is not None
        assert APIClient(HTTP_AUTHORIZATION=f"Bearer {plaintext}").get(ME).json()["code"] == "token_revoked"
        fresh = APIClient()
        login = fresh.post("/api/v1/accounts/login/", {"username": "alice", "password": NEW_PASSWORD}, format="json")
        assert login.status_code == 200, login.json()
        assert fresh.get(ME).json()["code"] == "password_expired"  # changed at the next login
        event = AuditEvent.objects.get(event_type="auth.password.reset")
        assert (event.actor, event.target_id) == (staff_user, str(plain_user.pk))
        assert event.details["alert"] is True
        assert (event.details["sessions_ended"], event.details["tokens_revoked"]) == (1, 1)
        assert NEW_PASSWORD not in str(event.details)

    @pytest.mark.parametrize("persona", ["officer_user", "auditor_user", "admin_user"])
    def test_never_a_privileged_persons_password(self, request, staff_user, persona):
        target = request.getfixturevalue(persona)

        resp = reset(session_api(staff_user), target)

        assert code_of(resp) == (403, "privileged_password_reset_forbidden")
        assert get_user_model().objects.get(pk=target.pk).check_password(PASSWORD)

    def test_never_a_service_account(self, staff_user, svc):
        resp = reset(session_api(staff_user), svc)

        assert code_of(resp) == (403, "service_account_no_password")
        assert not get_user_model().objects.get(pk=svc.pk).has_usable_password()

    def test_never_oneself(self, staff_user):
        assert code_of(reset(session_api(staff_user), staff_user)) == (403, "self_change_forbidden")

    def test_weak_password_is_refused_and_changes_nothing(self, staff_user, plain_user):
        resp = reset(session_api(staff_user), plain_user, "short")

        assert code_of(resp) == (400, "weak_password")
        assert get_user_model().objects.get(pk=plain_user.pk).check_password(PASSWORD)
        assert not AuditEvent.objects.filter(event_type="auth.password.reset").exists()

    def test_only_admins_reset(self, officer_user, plain_user):
        assert code_of(reset(session_api(officer_user), plain_user)) == (403, "permission_denied")
