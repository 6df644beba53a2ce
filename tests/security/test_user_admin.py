"""Django admin user edits go through the audited services (issue 10, first list): rename,
deactivate, e-mail and password set each leave an event naming the actor with before and after;
dates and privileges are read-only; nobody deletes a user; a service account never gets a
password, and could not log in with one anyway.

Personas: ops (admin, in the admin site with 2FA), alice (analyst), svc-etl (alice's)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.roles import ANALYST
from apps.accounts.services import create_service_account, find_enrolment_code, roles_of
from apps.audit.models import AuditEvent
from tests.conftest import otp_login
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "another-horse-battery-7"


def change_url(user) -> str:
    return f"/admin/auth/user/{user.pk}/change/"


def form_of(user, **overrides) -> dict:
    """What the change form posts for `user` (a checkbox is sent only when ticked)."""
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on" if user.is_active else "",
        **overrides,
    }
    return {k: v for k, v in data.items() if v != ""}


def updates():
    return AuditEvent.objects.filter(event_type="auth.account.update").order_by("id")


def fresh(user):
    return get_user_model().objects.get(pk=user.pk)


@pytest.fixture
def browser(staff_user) -> Client:
    client = Client()
    otp_login(client, staff_user)
    return client


@pytest.fixture
def svc(plain_user):
    return create_service_account(name="svc-etl", owner_id=plain_user.pk, actor=None)


class TestChangeForm:
    def test_rename_is_audited_with_before_and_after(self, browser, staff_user, plain_user):
        resp = browser.post(change_url(plain_user), form_of(plain_user, username="alice.w"))

        assert resp.status_code == 302, resp.content[:500]
        assert fresh(plain_user).username == "alice.w"
        event = updates().get()
        assert (event.actor, event.target_id) == (staff_user, str(plain_user.pk))
        assert (event.details["before"], event.details["after"]) == ({"username": "alice"}, {"username": "alice.w"})

    def test_deactivation_is_audited(self, browser, staff_user, plain_user):
        resp = browser.post(change_url(plain_user), form_of(plain_user, is_active=""))

        assert resp.status_code == 302
        assert not fresh(plain_user).is_active
        event = updates().get()
        assert event.actor == staff_user
        assert (event.details["before"], event.details["after"]) == ({"is_active": True}, {"is_active": False})

    def test_email_change_is_audited(self, browser, plain_user):
        browser.post(change_url(plain_user), form_of(plain_user, email="alice@hospital.example"))

        assert fresh(plain_user).email == "alice@hospital.example"
        assert updates().get().details["after"] == {"email": "alice@hospital.example"}

    def test_dates_and_privileges_are_read_only(self, browser, plain_user):
        joined = fresh(plain_user).date_joined
        resp = browser.post(
            change_url(plain_user),
            form_of(
                plain_user,
                date_joined_0="2001-01-01",
                date_joined_1="00:00:00",
                last_login_0="2001-01-01",
                last_login_1="00:00:00",
                is_superuser="on",
                is_staff="on",
            ),
        )

        assert resp.status_code == 302
        user = fresh(plain_user)
        assert (user.date_joined, user.last_login, user.is_superuser, user.is_staff) == (joined, None, False, False)
        assert roles_of(user) == {ANALYST}
        assert not updates().exists()  # nothing changed, nothing to record

    def test_deactivating_a_privileged_person_is_refused_and_saves_nothing(self, browser, officer_user):
        resp = browser.post(change_url(officer_user), form_of(officer_user, is_active="", username="x"), follow=True)

        assert "privileged_account_requires_officer" in resp.content.decode()
        user = fresh(officer_user)
        assert (user.is_active, user.username) == (True, "sofia")
        assert not updates().exists()

    def test_add_goes_through_the_service(self, browser, staff_user):
        resp = browser.post(
            "/admin/auth/user/add/",
            {"username": "bob", "email": "bob@example.org", "password1": PASSWORD, "password2": PASSWORD},
        )

        assert resp.status_code == 302, resp.content[:800]
        event = AuditEvent.objects.get(event_type="auth.account.create")
        assert (event.actor, event.details["after"]["username"]) == (staff_user, "bob")

    def test_nobody_deletes_a_user(self, browser, plain_user):
        assert browser.get(f"/admin/auth/user/{plain_user.pk}/delete/").status_code == 403
        resp = browser.post(
            "/admin/auth/user/", {"action": "delete_selected", "_selected_action": [plain_user.pk], "post": "yes"}
        )
        assert resp.status_code in (200, 302)
        assert get_user_model().objects.filter(pk=plain_user.pk).exists()


class TestPasswordSet:
    def test_admin_password_set_is_an_audited_reset(self, browser, staff_user, plain_user):
        resp = browser.post(
            f"/admin/auth/user/{plain_user.pk}/password/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
        )

        assert resp.status_code == 302, resp.content[:800]
        assert fresh(plain_user).check_password(NEW_PASSWORD)
        event = AuditEvent.objects.get(event_type="auth.password.reset")
        assert (event.actor, event.target_id, event.details["alert"]) == (staff_user, str(plain_user.pk), True)

    def test_admin_cannot_set_a_privileged_persons_password(self, browser, officer_user):
        browser.post(
            f"/admin/auth/user/{officer_user.pk}/password/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
        )

        assert fresh(officer_user).check_password(PASSWORD)
        assert not AuditEvent.objects.filter(event_type="auth.password.reset").exists()


class TestServiceAccountPassword:
    def test_admin_cannot_set_one(self, browser, svc):
        get = browser.get(f"/admin/auth/user/{svc.pk}/password/")
        post = browser.post(
            f"/admin/auth/user/{svc.pk}/password/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
        )

        assert (get.status_code, post.status_code) == (403, 403)
        assert not fresh(svc).has_usable_password()

    def test_password_login_is_refused_even_with_a_hash(self, svc):
        account = fresh(svc)
        account.set_password(NEW_PASSWORD)  # as if someone wrote a hash into the database
        account.save(update_fields=["password"])

        api = APIClient().post(
            "/api/v1/accounts/login/", {"username": "svc-etl", "password": NEW_PASSWORD}, format="json"
        )
        browser = Client()
        admin = browser.post("/admin/login/", {"username": "svc-etl", "password": NEW_PASSWORD})

        assert (api.status_code, api.json()["code"]) == (401, "invalid_credentials")
        assert admin.status_code == 200  # the form again, with its error
        assert "_auth_user_id" not in browser.session

    def test_a_session_of_a_service_account_is_not_honoured(self, svc):
        client = Client()
        client.force_login(svc)

        assert client.get("/api/v1/accounts/me/").status_code in (401, 403)


class TestRoleActions:
    def test_officer_gives_a_privileged_role_and_sees_the_enrolment_code_once(self, officer_user, plain_user):
        browser = Client()
        otp_login(browser, officer_user)

        resp = browser.post(
            "/admin/auth/user/",
            {"action": "assign_auditor", "_selected_action": [plain_user.pk]},
            follow=True,
        )

        assert resp.status_code == 200
        assert roles_of(plain_user) == {ANALYST, "auditor"}
        text = resp.content.decode()
        code = text.split("Enrolment code for alice: ", 1)[1].split(" ", 1)[0]
        assert find_enrolment_code(plain_user, code) is not None
        assert code not in browser.get("/admin/auth/user/").content.decode()  # shown once
        event = AuditEvent.objects.get(event_type="auth.role.assign")
        assert (event.actor, event.details["role"]) == (officer_user, "auditor")

    def test_admin_action_for_a_privileged_role_is_refused_with_its_code(self, browser, plain_user):
        resp = browser.post(
            "/admin/auth/user/", {"action": "assign_security_officer", "_selected_action": [plain_user.pk]}, follow=True
        )

        assert "privileged_role_requires_officer" in resp.content.decode()
        assert roles_of(plain_user) == {ANALYST}
