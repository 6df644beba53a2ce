"""The superuser is a sealed break-glass account (issue 10, item 1): its every login, the first
request of each of its sessions and every call with one of its tokens raise an alert event.

Personas: root (the host's createsuperuser account) and alice (an analyst, who raises none)."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from tests.conftest import otp_login
from tests.factories import PASSWORD, token_for
from tests.gateway.dataplane_client import DataPlaneClient

pytestmark = pytest.mark.django_db

ME = "/api/v1/accounts/me/"


def alerts():
    return AuditEvent.objects.filter(event_type="auth.superuser.use").order_by("id")


class TestSuperuserUseAlerts:
    def test_password_login_alerts(self, admin_user):
        resp = Client().post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})

        assert resp.status_code == 302
        alert = alerts().get()
        assert (alert.actor, alert.details["alert"], alert.details["via"]) == (admin_user, True, "login")

    def test_a_session_alerts_once_not_on_every_page(self, admin_user):
        client = Client()
        otp_login(client, admin_user)

        for _ in range(3):
            assert client.get(ME).status_code == 200

        assert alerts().count() == 1

    def test_a_session_that_skipped_the_login_alert_alerts_on_first_use(self, admin_user):
        client = Client()
        otp_login(client, admin_user)
        session = client.session
        session.pop("sv_superuser_noted")
        session.save()
        before = alerts().count()

        client.get(ME)
        client.get(ME)

        assert alerts().count() == before + 1
        assert alerts().last().details == {"alert": True, "via": "session", "path": ME}

    def test_every_token_call_alerts(self, admin_user):
        api = APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(admin_user)}")

        for _ in range(3):
            assert api.get(ME).status_code == 200

        assert [a.details["via"] for a in alerts()] == ["token"] * 3
        assert all(a.token_id is not None for a in alerts())

    def test_every_gateway_call_alerts_in_its_own_event(self, admin_user, plain_user):
        for user in (admin_user, plain_user):
            DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}").post(
                "/v2/models/ghost/infer", data="{}", content_type="application/json"
            )

        calls = {e.actor: e.details for e in AuditEvent.objects.filter(event_type="inference.infer")}
        assert calls[admin_user]["alert"] is True
        assert "alert" not in calls[plain_user]

    def test_an_analyst_raises_none(self, plain_user):
        client = Client()
        client.force_login(plain_user)
        client.get(ME)
        APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}").get(ME)

        assert not alerts().exists()
