"""/api/v1/accounts/tokens/: the token is shown once, each user sees only their own, revoke works."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, digest_token
from apps.audit.models import AuditEvent
from tests.conftest import session_client
from tests.factories import UserFactory, token_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/accounts/tokens/"


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


class TestTokenApi:
    """Personas: the owner (alice, an analyst, in a portal session: tokens are issued from a
    session, never with a token) and an outsider with a token of their own."""

    @pytest.fixture
    def user_client(self, plain_user) -> APIClient:
        return session_client(plain_user)

    @pytest.fixture
    def outsider_token(self) -> ApiToken:
        outsider = UserFactory(username="mallory")
        token_for(outsider, name="mallory-ci")
        return ApiToken.objects.get(user=outsider)

    def test_create_returns_the_token_once(self, user_client, plain_user):
        resp = user_client.post(URL, {"name": "ci", "days": 7}, format="json")

        assert resp.status_code == 201, resp.json()
        body = resp.json()
        token = body["token"]
        assert token.startswith("svt_")
        stored = ApiToken.objects.get(pk=body["id"])
        assert stored.user == plain_user
        assert stored.digest == digest_token(token)
        assert body["status"] == "active"
        assert body["hint"] == token[:10]
        event = AuditEvent.objects.get(event_type="auth.token.create", target_id=str(stored.pk))
        assert event.actor == plain_user
        assert token not in str(event.details)

        listing = user_client.get(URL)
        detail = user_client.get(f"{URL}{stored.pk}/")
        assert listing.status_code == 200
        assert detail.status_code == 200
        assert stored.pk in [t["id"] for t in listing.json()["results"]]
        for item in [*listing.json()["results"], detail.json()]:
            assert "token" not in item
        for resp in (listing, detail):
            assert token not in resp.content.decode()

    def test_created_token_authenticates(self, user_client):
        token = user_client.post(URL, {"name": "ci"}, format="json").json()["token"]

        resp = bearer(token).get(URL)

        assert resp.status_code == 200

    def test_non_positive_expiry_refused(self, user_client):
        before = ApiToken.objects.count()

        resp = user_client.post(URL, {"name": "ci", "days": 0}, format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("invalid_expiry", "days")
        assert ApiToken.objects.count() == before

    def test_expiry_above_maximum_is_invalid_expiry(self, user_client, settings):
        settings.TOKEN_MAX_DAYS = 30

        resp = user_client.post(URL, {"name": "ci", "days": 31}, format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("invalid_expiry", "days")
        assert not ApiToken.objects.filter(name="ci").exists()

    def test_revoke_then_token_is_refused(self, user_client, plain_user):
        token = token_for(plain_user, name="short-lived", scopes=["read", "manage"])
        client = bearer(token)
        pk = ApiToken.objects.get(digest=digest_token(token)).pk

        resp = user_client.post(f"{URL}{pk}/revoke/")  # from the portal: a token revokes nothing

        assert resp.status_code == 200
        assert resp.json()["status"] == "revoked"
        assert ApiToken.objects.get(pk=pk).revoked_at is not None
        event = AuditEvent.objects.get(event_type="auth.token.revoke")
        assert (event.actor, event.target_id, event.details["after"]) == (plain_user, str(pk), "revoked")

        after = client.get(URL)
        assert after.status_code == 401
        assert after.json()["code"] == "token_revoked"

    def test_list_shows_only_own_tokens(self, user_client, plain_user, outsider_token):
        token_for(plain_user)
        resp = user_client.get(URL)

        assert resp.status_code == 200
        users = {t["user"] for t in resp.json()["results"]}
        assert users == {plain_user.username}
        assert outsider_token.pk not in [t["id"] for t in resp.json()["results"]]

    def test_another_users_token_is_404(self, user_client, outsider_token):
        detail = user_client.get(f"{URL}{outsider_token.pk}/")
        revoke = user_client.post(f"{URL}{outsider_token.pk}/revoke/")

        assert detail.status_code == 404
        assert revoke.status_code == 404
        assert detail.json()["code"] == revoke.json()["code"] == "not_found"
        outsider_token.refresh_from_db()
        assert outsider_token.revoked_at is None
        assert not AuditEvent.objects.filter(event_type="auth.token.revoke").exists()

    def test_anonymous_is_401(self, anon_client):
        for resp in (anon_client.get(URL), anon_client.post(URL, {"name": "x"}, format="json")):
            assert resp.status_code == 401
            assert resp.json()["code"] == "not_authenticated"
        assert not ApiToken.objects.exists()
