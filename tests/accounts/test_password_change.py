"""Changing one's own password, on the portal page (/accounts/password/, everyone) and on the
admin's (admin:password_change, staff): each change is the audited event `auth.password.change`
(actor and target the person, no secret anywhere in it), written in the same transaction as the
new password — no event, no change.

Personas: alice (analyst, the portal page), ops (admin role, the admin's page, past 2FA)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Profile
from apps.accounts.services import reset_password
from apps.audit.models import AuditEvent, Outcome
from tests.conftest import otp_login
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

NEW = "k9#Vq2!mZp4x-new"


def form(old: str = PASSWORD, new: str = NEW) -> dict:
    return {"old_password": old, "new_password1": new, "new_password2": new}


@pytest.fixture(params=["portal", "admin"])
def page(request, plain_user, staff_user):
    """(client logged in, its user, the page's URL, where it leads after a change)."""
    client = Client(raise_request_exception=False)
    if request.param == "portal":
        client.force_login(plain_user)
        return client, plain_user, reverse("accounts:password-change"), reverse("accounts:password-change-done")
    otp_login(client, staff_user)
    return client, staff_user, reverse("admin:password_change"), reverse("admin:password_change_done")


def changes():
    return AuditEvent.objects.filter(event_type="auth.password.change")


def password_of(user) -> str:
    return get_user_model().objects.get(pk=user.pk).password


def test_a_change_is_audited_with_the_person_as_actor_and_no_secret(page):
    client, user, url, done = page
    old_hash = password_of(user)
    elsewhere = Client()  # another session of the same person, e.g. a forgotten laptop
    otp_login(elsewhere, user)
    assert elsewhere.get(done).status_code == 200

    resp = client.post(url, form(), REMOTE_ADDR="198.51.100.4")

    assert (resp.status_code, resp["Location"]) == (302, done)
    assert get_user_model().objects.get(pk=user.pk).check_password(NEW)
    event = changes().get()
    assert (event.actor, event.target_type, event.target_id) == (user, "auth.user", str(user.pk))
    assert (event.outcome, event.source_ip) == (Outcome.SUCCESS, "198.51.100.4")
    assert event.details == {"via": "admin" if "admin" in url else "portal", "expired": False}
    row = json.dumps(AuditEvent.objects.filter(pk=event.pk).values().get(), default=str)
    for secret in (PASSWORD, NEW, old_hash, password_of(user)):
        assert secret not in row
    # this session stays logged in (its auth hash follows the new password); the other one ends
    assert client.get(done).status_code == 200
    assert elsewhere.get(done).status_code == 302


def test_a_wrong_current_password_changes_nothing_and_writes_no_change(page):
    client, user, url, _ = page
    before = password_of(user)

    resp = client.post(url, form(old="not-my-password-1"))

    assert resp.status_code == 200  # the form again, with its error
    assert password_of(user) == before
    assert not changes().exists()


def test_no_audit_no_change(page):
    client, user, url, _ = page
    before = password_of(user)
    with connection.cursor() as cursor:  # every audit insert fails (rolled back with the test)
        cursor.execute(
            "CREATE FUNCTION refuse_audit_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit storage unavailable (test)'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_audit_insert BEFORE INSERT ON audit_auditevent "
            "FOR EACH ROW EXECUTE FUNCTION refuse_audit_insert()"
        )

    resp = client.post(url, form())

    assert resp.status_code == 503  # the form again, saying why
    assert b"could not be recorded in the audit log" in resp.content
    assert password_of(user) == before


def test_changing_a_reset_password_says_it_was_expired(plain_user, staff_user):
    reset_password(user_id=plain_user.pk, password="reset-horse-battery-3", actor=staff_user)
    client = Client()
    client.force_login(get_user_model().objects.get(pk=plain_user.pk))

    resp = client.post(reverse("accounts:password-change"), form(old="reset-horse-battery-3"))

    assert resp.status_code == 302
    assert changes().get().details == {"via": "portal", "expired": True}
    assert abs(Profile.objects.get(user=plain_user).password_changed_at - timezone.now()).total_seconds() < 60
