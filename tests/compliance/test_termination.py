"""Termination (HIPAA 164.308(a)(3)(ii)(C), 等保 8.1.4.2): disabling a person through the service
ends their access — the running data plane refuses their token within a second, the API at once,
their sessions are gone — and `accounts.termination` passes; a person disabled past the service
(a direct ORM update) keeps a live token and session, and the check fails naming them; so does a
live token the disabled person issued for someone else, and a policy snapshot allowed to lag past
the limit.

Writes are committed (transactional_db) so that the data plane's LISTEN connection hears them.
Personas: sec (security officer), ana (analyst who leaves), bob (admin who owns a service account)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, digest_token
from apps.accounts.roles import ADMIN, ANALYST, SECURITY_OFFICER
from apps.accounts.services import (
    create_service_account,
    disable_dormant_accounts,
    issue_token,
    revoke_token,
    set_user_active,
    update_user,
)
from apps.core.errors import ServiceError
from apps.gateway.dataplane.snapshot import SnapshotHolder
from tests.compliance.conftest import check_of, evaluate
from tests.conftest import make_user
from tests.factories import token_for
from tests.gateway.dataplane import test_snapshot_invalidation as invalidation
from tests.gateway.dataplane.test_snapshot_invalidation import LIMIT, seconds_until

pytestmark = pytest.mark.django_db(transaction=True)

ME = "/api/v1/accounts/me/"


def termination(**options) -> dict:
    return check_of(evaluate("hipaa", "164.308(a)(3)(ii)(C)", **options)[1], "accounts.termination")


def api_status(plaintext: str) -> int:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {plaintext}").get(ME).status_code


def gateway(loop, holder: SnapshotHolder, plaintext: str) -> str:
    """What the running data plane's policy answers for the token now: "accepted" or the refusal."""
    try:
        loop.run(holder.authenticate(f"Bearer {plaintext}"))
    except ServiceError as err:
        return err.code
    return "accepted"


loop = invalidation.loop  # the running data plane's event loop and its policy holders (fixture)


@pytest.fixture
def sec(transactional_db):
    return make_user("sec", SECURITY_OFFICER)


@pytest.fixture
def ana(transactional_db):
    return make_user("ana", ANALYST)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_disabling_through_the_service_ends_access_within_a_second_and_passes(loop, sec, ana):
    plaintext = token_for(ana)
    logged_in(ana)
    holder = loop.start()
    assert gateway(loop, holder, plaintext) == "accepted" and api_status(plaintext) == 200
    assert termination()["status"] == "pass"

    set_user_active(user_id=ana.pk, active=False, actor=sec)

    took = seconds_until("token_revoked", lambda: gateway(loop, holder, plaintext))
    assert took < LIMIT
    assert api_status(plaintext) == 401
    check = termination()
    assert check["status"] == "pass", check
    assert check["inactive_accounts"] == 1 and check["live_tokens_of_inactive_accounts"] == []
    assert check["live_sessions_of_inactive_accounts"] == []
    assert check["worst_case_seconds_to_lose_access"] == 60.0


def test_disabled_past_the_service_keeps_a_token_and_a_session_and_fails(loop, ana):
    plaintext = token_for(ana)
    logged_in(ana)
    holder = loop.start()

    get_user_model().objects.filter(pk=ana.pk).update(is_active=False)  # no token revoked, no session ended

    check = termination()
    assert check["status"] == "fail"
    assert check["live_tokens_of_inactive_accounts"] == [f"ana: token {token_id(plaintext)} 'test'"]
    assert check["live_sessions_of_inactive_accounts"] == ["ana"]
    assert "ana" in check["summary"]
    # inert meanwhile (token_refusal refuses an inactive user), but revived by a reactivation
    holder_says = seconds_until("user_inactive", lambda: gateway(loop, holder, plaintext), deadline=10)
    assert holder_says <= holder.max_age + 1
    assert api_status(plaintext) == 401

    revoke_token(token_id=token_id(plaintext), actor=None)
    Session.objects.all().delete()
    assert termination()["status"] == "pass"


def test_a_token_the_leaver_issued_for_a_service_account_fails(sec):
    bob = make_user("bob", ADMIN)
    svc = create_service_account(name="svc-feed", owner_id=bob.pk, actor=bob)
    token, _ = issue_token(user=svc, name="feed", actor=bob, scopes=["invoke"], otp_verified_at=timezone.now())

    set_user_active(user_id=bob.pk, active=False, actor=sec)

    check = termination()
    assert check["status"] == "fail"
    assert check["live_tokens_issued_by_inactive_accounts"] == [f"bob issued token {token.pk} 'feed' of svc-feed"]
    revoke_token(token_id=token.pk, actor=sec)
    assert termination()["status"] == "pass"


def test_a_policy_snapshot_allowed_to_lag_fails(settings, ana):
    settings.POLICY_HARD_LIMIT = 300.0
    check = termination()
    assert check["status"] == "fail" and "300 s" in check["summary"]
    assert termination(max_seconds_to_lose_access=600)["status"] == "pass"
    settings.POLICY_HARD_LIMIT = 60.0
    assert termination()["status"] == "pass"


def test_disabling_in_the_admins_change_form_ends_access_too(sec, ana):
    """The admin's change form disables through update_user: it revoked nothing before, leaving a
    token and a session that a later reactivation would revive; the check found it."""
    plaintext = token_for(ana)
    logged_in(ana)

    update_user(user_id=ana.pk, changes={"is_active": False}, actor=sec)

    check = termination()
    assert check["status"] == "pass", check
    assert ApiToken.objects.get(digest=digest_token(plaintext)).revoked_at is not None
    update_user(user_id=ana.pk, changes={"is_active": True}, actor=sec)
    assert api_status(plaintext) == 401  # reactivated, the old token stays dead


def test_the_dormant_sweep_ends_sessions_and_tokens(settings, ana):
    token_for(ana)
    logged_in(ana)
    long_ago = timezone.now() - timedelta(days=400)  # the session stays live: only the account is old
    get_user_model().objects.filter(pk=ana.pk).update(date_joined=long_ago, last_login=long_ago)

    assert disable_dormant_accounts() == ["ana"]

    check = termination()
    assert check["status"] == "pass", check
    assert check["inactive_accounts"] == 1


def token_id(plaintext: str) -> int:
    return ApiToken.objects.get(digest=digest_token(plaintext)).pk
