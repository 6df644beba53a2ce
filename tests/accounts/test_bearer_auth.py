"""Bearer authentication on the API: each refusal has its own code and an `auth.token.denied` event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, digest_token
from apps.audit.models import AuditEvent, Outcome
from tests.factories import token_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/accounts/tokens/"


def get_with(header: str):
    return APIClient().get(URL, HTTP_AUTHORIZATION=header, REMOTE_ADDR="198.51.100.7")


def assert_denied(resp, code: str) -> None:
    assert resp.status_code == 401, resp.content
    assert resp.json()["code"] == code
    assert resp.json()["detail"]
    assert resp["WWW-Authenticate"].startswith("Bearer")
    event = AuditEvent.objects.get(event_type="auth.token.denied")
    assert event.outcome == Outcome.DENIED
    assert event.error_code == code
    assert event.actor is None
    assert event.source_ip == "198.51.100.7"
    assert event.details["path"] == URL


class TestBearerAuthentication:
    def test_valid_token_authenticates_and_records_last_use(self, plain_user):
        token = token_for(plain_user)

        resp = get_with(f"Bearer {token}")

        assert resp.status_code == 200
        stored = ApiToken.objects.get(digest=digest_token(token))
        assert stored.last_used_at is not None
        assert stored.last_used_ip == "198.51.100.7"
        assert not AuditEvent.objects.filter(event_type="auth.token.denied").exists()

    def test_last_use_is_written_at_most_once_a_minute_whatever_the_address(self, plain_user):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from apps.accounts.services import authenticate_bearer

        token = token_for(plain_user)
        authenticate_bearer(f"Bearer {token}", "198.51.100.7")
        with CaptureQueriesContext(connection) as queries:
            authenticate_bearer(f"Bearer {token}", "203.0.113.9")  # another host, within the minute

        assert len(queries) == 1  # the lookup only, no UPDATE
        assert ApiToken.objects.get(digest=digest_token(token)).last_used_ip == "198.51.100.7"

    def test_scheme_is_case_insensitive(self, plain_user):
        assert get_with(f"bearer {token_for(plain_user)}").status_code == 200

    @pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a b", "Token svt_x"])
    def test_malformed_header(self, header):
        assert_denied(get_with(header), "malformed_authorization")

    def test_unknown_token(self):
        assert_denied(get_with("Bearer svt_doesnotexist"), "invalid_token")

    def test_revoked_token(self, plain_user):
        token = token_for(plain_user)
        ApiToken.objects.filter(digest=digest_token(token)).update(revoked_at=timezone.now())

        assert_denied(get_with(f"Bearer {token}"), "token_revoked")

    def test_expired_token(self, plain_user):
        token = token_for(plain_user)
        ApiToken.objects.filter(digest=digest_token(token)).update(expires_at=timezone.now() - timedelta(seconds=1))

        assert_denied(get_with(f"Bearer {token}"), "token_expired")

    def test_inactive_user(self, plain_user):
        token = token_for(plain_user)
        plain_user.is_active = False
        plain_user.save()

        assert_denied(get_with(f"Bearer {token}"), "user_inactive")

    def test_denied_token_is_not_marked_used(self, plain_user):
        token = token_for(plain_user)
        ApiToken.objects.filter(digest=digest_token(token)).update(revoked_at=timezone.now())

        get_with(f"Bearer {token}")

        assert ApiToken.objects.get(digest=digest_token(token)).last_used_at is None
