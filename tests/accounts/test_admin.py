"""Token admin: issuing goes through the service and shows the token once; revoking is audited."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from apps.accounts.models import ApiToken, digest_token
from apps.accounts.otp import OTP_AT
from apps.audit.models import AuditEvent
from tests.conftest import otp_login
from tests.factories import token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(admin_user) -> Client:
    client = Client()
    otp_login(client, admin_user)
    return client


class TestTokenAdmin:
    def test_add_issues_a_token_shown_once(self, admin_browser, admin_user):
        resp = admin_browser.post(
            "/admin/accounts/apitoken/add/", {"user": admin_user.pk, "name": "batch-job", "days": 5}, follow=True
        )

        assert resp.redirect_chain == [("/admin/accounts/apitoken/", 302)]
        token = ApiToken.objects.get(user=admin_user)
        assert token.created_by == admin_user
        plaintexts = re.findall(r"svt_[A-Za-z0-9_-]{40,}", resp.content.decode())
        assert len(plaintexts) == 1
        assert digest_token(plaintexts[0]) == token.digest
        event = AuditEvent.objects.get(event_type="auth.token.create")
        assert event.actor == admin_user
        assert LogEntry.objects.get(object_id=str(token.pk)).object_repr == str(token)

        detail = admin_browser.get(f"/admin/accounts/apitoken/{token.pk}/change/")
        assert detail.status_code == 200
        assert plaintexts[0] not in detail.content.decode()
        assert token.digest not in detail.content.decode()

    def test_add_for_someone_else_is_refused(self, admin_browser, plain_user):
        # The admin form obeys the service: nobody, the superuser included, issues for another person.
        resp = admin_browser.post(
            "/admin/accounts/apitoken/add/", {"user": plain_user.pk, "name": "batch-job", "days": 5}, follow=True
        )

        assert "user_not_found" in resp.content.decode()
        assert not ApiToken.objects.filter(user=plain_user).exists()
        assert not AuditEvent.objects.filter(event_type="auth.token.create").exists()

    def test_add_without_a_fresh_second_factor_is_refused(self, admin_browser, admin_user, settings):
        session = admin_browser.session
        session[OTP_AT] -= settings.TOKEN_OTP_FRESH.total_seconds() + 1
        session.save()

        resp = admin_browser.post(
            "/admin/accounts/apitoken/add/", {"user": admin_user.pk, "name": "batch-job", "days": 5}, follow=True
        )

        assert "fresh_otp_required" in resp.content.decode()
        assert not ApiToken.objects.exists()

    def test_revoke_action(self, admin_browser, admin_user, plain_user):
        token_for(plain_user)
        token = ApiToken.objects.get(user=plain_user)

        resp = admin_browser.post(
            "/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
        )

        assert resp.status_code == 200
        token.refresh_from_db()
        assert token.status == "revoked"
        assert AuditEvent.objects.get(event_type="auth.token.revoke").actor == admin_user
