"""Everyone's login, `/accounts/login/` (settings.LOGIN_URL): the admin's own login takes staff only,
so before it an analyst sent to log in from /accounts/tokens/ met a form that could never let them in.
Every guard of the admin's login holds here too: django-axes lockout, the audit events, CSRF, the
second factor for privileged people, service and disabled accounts."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.services import create_service_account
from apps.audit.models import AuditEvent
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


LOGIN = "/accounts/login/"
TOKENS = "/accounts/tokens/"


def log_in(client, username, password=PASSWORD, **extra):
    return client.post(LOGIN, {"username": username, "password": password, **extra})


def test_login_url_is_everyones_login():
    assert settings.LOGIN_URL == LOGIN == reverse("accounts:login")


def test_an_analyst_sent_to_log_in_from_their_tokens_gets_in_and_issues_one(plain_user):
    client = Client()
    sent = client.get(TOKENS)
    assert sent.status_code == 302 and sent["Location"] == f"{LOGIN}?next=/accounts/tokens/"

    form = client.get(sent["Location"])
    assert form.status_code == 200 and b'name="password"' in form.content

    resp = log_in(client, "alice", next=TOKENS)
    assert resp.status_code == 302 and resp["Location"] == TOKENS
    assert client.get(TOKENS).status_code == 200
    issued = client.post(TOKENS, {"name": "notebook", "days": 30, "scopes": ["invoke"]})
    assert issued.status_code == 200
    assert ApiToken.objects.filter(user=plain_user, name="notebook").exists()
    assert AuditEvent.objects.filter(event_type="auth.login.success", actor_id=plain_user.pk).exists()


def test_the_admins_login_still_refuses_an_analyst(plain_user):
    resp = Client().post("/admin/login/", {"username": "alice", "password": PASSWORD, "next": "/admin/"})
    assert resp.status_code == 200 and b"staff account" in resp.content


def test_without_next_staff_land_on_the_admin_and_others_on_their_tokens(plain_user, staff_user):
    assert log_in(Client(), "alice")["Location"] == TOKENS
    assert log_in(Client(), "alice", next="https://evil.example/")["Location"] == TOKENS  # an unsafe next
    assert log_in(Client(), "ops")["Location"] == "/admin/"


def test_a_signed_in_person_opening_the_login_is_sent_on(plain_user):
    client = Client()
    log_in(client, "alice")
    resp = client.get(LOGIN)
    assert resp.status_code == 302 and resp["Location"] == TOKENS


def test_wrong_password_is_refused_audited_and_counted_until_lockout(plain_user, clock):
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    answers = [log_in(client, "alice", "not-the-password").status_code for _ in range(limit)]
    assert answers == [200] * (limit - 1) + [429]  # the form again, then locked at the limit
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(event_type="auth.login.failure").count() == limit

    locked = log_in(client, "alice")  # the right password, locked out
    assert locked.status_code == 429 and b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(event_type="auth.lockout", target_display="alice").exists()

    clock.shift(settings.AXES_COOLOFF_TIME + timedelta(minutes=1))
    assert log_in(client, "alice")["Location"] == TOKENS


def test_the_form_needs_its_csrf_token(plain_user):
    client = Client(enforce_csrf_checks=True)
    assert log_in(client, "alice").status_code == 403
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("persona", ["officer_user", "auditor_user", "staff_user", "admin_user"])
def test_a_privileged_person_is_sent_to_the_second_factor_before_any_page(persona, request):
    user = request.getfixturevalue(persona)
    client = Client()
    resp = log_in(client, user.username, next=TOKENS)
    assert resp.status_code == 302
    for page in (TOKENS, "/admin/", "/accounts/preferences/"):
        reached = client.get(page)
        assert reached.status_code == 302 and reached["Location"].startswith("/accounts/2fa/setup/"), page
    docs = client.get("/api/docs/")  # under /api/: the gate answers in JSON
    assert (docs.status_code, docs.json()["code"]) == (403, "otp_enrolment_required")


def test_service_and_disabled_accounts_cannot_log_in(plain_user):
    svc = create_service_account(name="svc-etl", owner_id=plain_user.pk, actor=None)
    svc.set_password(PASSWORD)  # even with a hash set behind the portal's back
    svc.save()
    client = Client()
    assert log_in(client, "svc-etl").status_code == 200
    assert "_auth_user_id" not in client.session

    plain_user.is_active = False
    plain_user.save()
    assert log_in(client, "alice").status_code == 200
    assert "_auth_user_id" not in client.session


def test_logout_is_post_only_and_ends_the_session(plain_user):
    client = Client()
    log_in(client, "alice")
    assert client.get("/accounts/logout/").status_code == 405
    resp = client.post("/accounts/logout/")
    assert resp.status_code == 302 and resp["Location"] == LOGIN
    assert client.get(TOKENS)["Location"].startswith(LOGIN)
