"""/api/v1/accounts/: token scopes, model restriction and expiry; a security officer's view of
everyone's tokens; users and /me/ with the caller's own gateway usage.

Personas: the analyst alice (owner), a second analyst mallory (outsider), the security officer
sofia and the admin-role user ops. tests/accounts/test_tokens_api.py covers the token shown once
and the owner's own list and revocation.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, digest_token
from apps.accounts.roles import ANALYST
from apps.audit.models import AuditEvent
from tests.conftest import grant, make_user, session_client
from tests.factories import ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/accounts/tokens/"
USERS = "/api/v1/accounts/users/"
ME = "/api/v1/accounts/me/"


def bearer(token: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")


def token_of(plaintext: str) -> ApiToken:
    return ApiToken.objects.get(digest=digest_token(plaintext))


@pytest.fixture
def mallory(db):
    return make_user("mallory", ANALYST)


@pytest.fixture
def alice(plain_user) -> APIClient:
    """alice logged in to the portal: tokens are issued from a session, never with a token."""
    return session_client(plain_user)


@pytest.fixture
def triage(db):
    return ModelVersionFactory(model_name="triage").model


class TestScopes:
    def test_read_only_token_reads_but_cannot_write(self, plain_user):
        plaintext = token_for(plain_user, scopes=["read"])
        client = bearer(plaintext)

        listing = client.get(TOKENS)
        create = client.post(TOKENS, {"name": "more"}, format="json")
        revoke = client.post(f"{TOKENS}{token_of(plaintext).pk}/revoke/")

        assert listing.status_code == 200
        # Whatever its scopes, a token neither mints nor revokes tokens (tests/security/test_tokens_policy.py).
        assert (create.status_code, create.json()["code"]) == (403, "token_cannot_issue_tokens")
        assert (revoke.status_code, revoke.json()["code"]) == (403, "token_not_allowed")
        assert ApiToken.objects.filter(user=plain_user).count() == 1
        assert token_of(plaintext).revoked_at is None

    def test_token_without_read_cannot_read(self, plain_user):
        resp = bearer(token_for(plain_user, scopes=["invoke"])).get(TOKENS)

        assert (resp.status_code, resp.json()["code"]) == (403, "insufficient_scope")

    def test_scopes_are_stored_and_shown(self, alice):
        resp = alice.post(TOKENS, {"name": "ci", "scopes": ["read", "invoke"]}, format="json")

        assert resp.status_code == 201
        assert resp.json()["scopes"] == ["invoke", "read"]
        assert token_of(resp.json()["token"]).scopes == ["invoke", "read"]

    def test_default_scopes_are_invoke_and_read(self, alice):
        resp = alice.post(TOKENS, {"name": "ci"}, format="json")

        assert resp.json()["scopes"] == ["invoke", "read"]

    @pytest.mark.parametrize("scopes", [[], ["admin"], ["read", "superuser"]])
    def test_unknown_or_empty_scopes_are_refused(self, alice, plain_user, scopes):
        resp = alice.post(TOKENS, {"name": "ci", "scopes": scopes}, format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("invalid_scope", "scopes")
        assert not ApiToken.objects.filter(name="ci").exists()


class TestModelRestriction:
    def test_restriction_is_stored_shown_and_audited(self, alice, triage):
        resp = alice.post(TOKENS, {"name": "ci", "models": [triage.pk]}, format="json")

        assert resp.status_code == 201, resp.json()
        assert resp.json()["models"] == ["triage"]
        token = token_of(resp.json()["token"])
        assert token.restricted
        assert list(token.allowed_models.all()) == [triage]
        assert alice.get(f"{TOKENS}{token.pk}/").json()["models"] == ["triage"]
        event = AuditEvent.objects.get(event_type="auth.token.create", target_id=str(token.pk))
        assert event.details["after"]["models"] == ["triage"]

    def test_unrestricted_token_shows_no_models(self, alice):
        resp = alice.post(TOKENS, {"name": "ci"}, format="json")

        assert resp.json()["models"] == []
        assert not token_of(resp.json()["token"]).restricted

    def test_unknown_model_is_404_and_saves_nothing(self, alice, triage):
        resp = alice.post(TOKENS, {"name": "ci", "models": [triage.pk, 999999]}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (404, "model_not_found")
        assert not ApiToken.objects.filter(name="ci").exists()
        assert not AuditEvent.objects.filter(event_type="auth.token.create", details__after__models=["triage"]).exists()


class TestExpiry:
    def test_default_expiry_is_ninety_days(self, alice):
        with time_machine.travel(timezone.now(), tick=False):
            resp = alice.post(TOKENS, {"name": "ci"}, format="json")

            assert parse_datetime(resp.json()["expires_at"]) == timezone.now() + timedelta(days=90)
        assert settings.TOKEN_DEFAULT_DAYS == 90

    def test_token_stops_working_at_expiry(self, plain_user):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            client = bearer(token_for(plain_user))
            clock.shift(timedelta(days=90) - timedelta(seconds=1))
            assert client.get(TOKENS).status_code == 200
            clock.shift(timedelta(seconds=1))

            resp = client.get(TOKENS)

        assert (resp.status_code, resp.json()["code"]) == (401, "token_expired")

    def test_maximum_is_configurable(self, alice, settings):
        settings.TOKEN_MAX_DAYS = 30

        at_max = alice.post(TOKENS, {"name": "max", "days": 30}, format="json")
        over = alice.post(TOKENS, {"name": "over", "days": 31}, format="json")

        assert at_max.status_code == 201
        assert (over.status_code, over.json()["code"]) == (400, "invalid_expiry")

    def test_default_never_exceeds_a_lower_maximum(self, alice, settings):
        settings.TOKEN_MAX_DAYS = 30

        with time_machine.travel(timezone.now(), tick=False):
            resp = alice.post(TOKENS, {"name": "ci"}, format="json")

            assert resp.status_code == 201, resp.json()
            assert parse_datetime(resp.json()["expires_at"]) == timezone.now() + timedelta(days=30)


class TestOthersTokens:
    @pytest.fixture
    def tokens(self, plain_user, mallory) -> dict[str, str]:
        return {"alice": token_for(plain_user, name="alice-ci"), "mallory": token_for(mallory, name="mallory-ci")}

    def test_security_officer_lists_everyones_tokens(self, officer_client, tokens):
        resp = officer_client.get(TOKENS)

        assert resp.status_code == 200
        assert {"alice", "mallory", "sofia"} <= {t["user"] for t in resp.json()["results"]}
        filtered = officer_client.get(TOKENS, {"user__username": "mallory"}).json()["results"]
        assert [t["name"] for t in filtered] == ["mallory-ci"]

    def test_analyst_lists_only_their_own(self, user_client, tokens):
        resp = user_client.get(TOKENS)

        assert {t["user"] for t in resp.json()["results"]} == {"alice"}
        assert user_client.get(f"{TOKENS}{token_of(tokens['mallory']).pk}/").status_code == 404

    def test_security_officer_revokes_anothers_token(self, officer_user, tokens):
        token = token_of(tokens["alice"])

        resp = session_client(officer_user).post(f"{TOKENS}{token.pk}/revoke/")

        assert resp.status_code == 200
        assert resp.json()["status"] == "revoked"
        event = AuditEvent.objects.get(event_type="auth.token.revoke")
        assert (event.actor, event.target_id, event.details) == (
            officer_user,
            str(token.pk),
            {"before": "active", "after": "revoked"},
        )
        refused = bearer(tokens["alice"]).get(TOKENS)
        assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")
        assert bearer(tokens["mallory"]).get(TOKENS).status_code == 200

    def test_security_officer_may_not_issue_for_another_user(self, officer_user, plain_user):
        # Issue 10: the officer revokes any token but issues none for others (it used to be 201).
        resp = session_client(officer_user).post(TOKENS, {"name": "for-alice", "user": plain_user.pk}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (404, "user_not_found")
        assert not ApiToken.objects.filter(user=plain_user).exists()

    @pytest.mark.parametrize("persona", ["staff_user", "auditor_user", "plain_user"])
    def test_others_may_not_revoke_or_issue_for_another(self, request, persona, tokens, mallory):
        client = session_client(request.getfixturevalue(persona))

        revoke = client.post(f"{TOKENS}{token_of(tokens['mallory']).pk}/revoke/")
        issue = client.post(TOKENS, {"name": "for-mallory", "user": mallory.pk}, format="json")

        assert revoke.status_code == 404
        assert (issue.status_code, issue.json()["code"]) == (404, "user_not_found")
        assert token_of(tokens["mallory"]).revoked_at is None
        assert ApiToken.objects.filter(user=mallory).count() == 1


class TestUsers:
    def test_admin_role_lists_and_filters_users(self, staff_client, plain_user, auditor_user):
        everyone = staff_client.get(USERS)
        auditors = staff_client.get(USERS, {"groups__name": "auditor"})

        assert everyone.status_code == 200
        assert {"ops", "alice", "audrey"} <= {u["username"] for u in everyone.json()["results"]}
        assert [(u["username"], u["roles"]) for u in auditors.json()["results"]] == [("audrey", ["auditor"])]

    @pytest.mark.parametrize("persona", ["user_client", "guest_client"])
    def test_analyst_and_guest_cannot_list_users(self, request, persona):
        resp = request.getfixturevalue(persona).get(USERS)

        assert (resp.status_code, resp.json()["code"]) == (403, "permission_denied")

    def test_disabling_a_user_is_audited_and_stops_their_token(self, staff_session, staff_user, plain_user):
        plaintext = token_for(plain_user)

        resp = staff_session.post(f"{USERS}{plain_user.pk}/active/", {"is_active": False}, format="json")

        assert resp.status_code == 200
        assert resp.json()["is_active"] is False
        event = AuditEvent.objects.get(event_type="auth.account.update")
        # made from ops's session (a token changes no account): no token issuer in the details
        assert (event.actor, event.details) == (
            staff_user,
            {"before": {"is_active": True}, "after": {"is_active": False}},
        )
        # disabling revokes the account's tokens in the same transaction (tests/security/test_tokens_policy.py)
        assert bearer(plaintext).get(ME).json()["code"] == "token_revoked"


class TestMe:
    def _call(self, user, model: str) -> int:
        client = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return client.post(f"/v2/models/{model}/infer", data="{}", content_type="application/json").status_code

    def test_shows_roles_and_only_own_gateway_usage(self, plain_user, mallory, triage):
        grant(plain_user, triage)
        grant(mallory, ModelVersionFactory(model_name="radiology").model)
        with time_machine.travel(timezone.now() - timedelta(days=31)):
            self._call(plain_user, "triage")  # outside the 30-day window
        assert self._call(plain_user, "triage") == 409  # granted, not deployed
        assert self._call(plain_user, "ghost") == 404
        assert self._call(mallory, "radiology") == 409
        assert self._call(mallory, "triage") == 404

        resp = bearer(token_for(plain_user)).get(ME)

        assert resp.status_code == 200
        body = resp.json()
        assert (body["username"], body["roles"], body["two_factor"]) == ("alice", ["analyst"], False)
        assert body["usage"] == {"ghost": {"denied": 1}, "triage": {"failure": 1}}

    def test_privileged_persona_sees_its_role(self, officer_client):
        resp = officer_client.get(ME)

        assert (resp.json()["username"], resp.json()["roles"], resp.json()["usage"]) == (
            "sofia",
            ["security_officer"],
            {},
        )

    def test_anonymous_is_401(self, anon_client):
        assert anon_client.get(ME).status_code == 401
