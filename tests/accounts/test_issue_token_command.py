"""`manage.py issue_token`: prints a working token once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def issue(*args: str) -> str:
    out = StringIO()
    call_command("issue_token", *args, stdout=out)
    return out.getvalue().strip()


class TestIssueTokenCommand:
    def test_prints_a_token_that_authenticates(self, plain_user):
        token = issue("--user", plain_user.username, "--name", "laptop")

        assert token.startswith("svt_")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        resp = client.get("/api/v1/accounts/tokens/")
        assert resp.status_code == 200
        assert [t["name"] for t in resp.json()["results"]] == ["laptop"]

    def test_stores_only_the_digest(self, plain_user):
        token = issue("--user", plain_user.username)

        row = ApiToken.objects.get(user=plain_user)
        assert row.digest == hashlib.sha256(token.encode()).hexdigest()
        for field in ApiToken._meta.concrete_fields:
            assert token not in str(getattr(row, field.attname)), f"plaintext token stored in {field.name}"
        event = AuditEvent.objects.get(event_type="auth.token.create")
        assert token not in str(event.details) + event.target_display

    def test_days_sets_expiry(self, plain_user):
        issue("--user", plain_user.username, "--days", "2")

        row = ApiToken.objects.get(user=plain_user)
        assert 2 * 86400 - 60 < (row.expires_at - row.created_at).total_seconds() <= 2 * 86400 + 60

    def test_unknown_user(self):
        with pytest.raises(CommandError, match="user_not_found"):
            issue("--user", "nobody")
        assert not ApiToken.objects.exists()

    def test_invalid_expiry(self, plain_user):
        with pytest.raises(CommandError, match="invalid_expiry"):
            issue("--user", plain_user.username, "--days", "0")
        assert not ApiToken.objects.exists()
