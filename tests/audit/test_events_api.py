"""/api/v1/audit/events/: the log, read-only, for superusers, filterable."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from apps.core.context import bound_request_id
from tests.conftest import otp_login

pytestmark = pytest.mark.django_db

URL = "/api/v1/audit/events/"


@pytest.fixture
def events(plain_user):
    with bound_request_id("req-a"):
        created = record_event("auth.token.create", actor=plain_user)
    with bound_request_id("req-b"):
        denied = record_event("auth.token.denied", actor=None, outcome="denied", error_code="invalid_token")
    return created, denied


class TestAuditEventsApi:
    def test_superuser_lists_newest_first(self, admin_client_api, events):
        resp = admin_client_api.get(URL)

        assert resp.status_code == 200
        types = [e["event_type"] for e in resp.json()["results"]]
        # the superuser's own call alerts first (a sealed break-glass account: every use is recorded)
        assert types[:3] == ["auth.superuser.use", "auth.token.denied", "auth.token.create"]
        item = resp.json()["results"][1]
        assert {"actor_name", "request_id", "outcome", "error_code", "details", "source_ip"} <= set(item)

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"request_id": "req-a"}, ["auth.token.create"]),
            ({"outcome": "denied"}, ["auth.token.denied"]),
            ({"event_type": "auth.token.denied"}, ["auth.token.denied"]),
            ({"event_group": "auth", "request_id": "req-b"}, ["auth.token.denied"]),
            ({"actor_name": "alice"}, ["auth.token.create"]),
        ],
    )
    def test_filters(self, admin_client_api, events, params, expected):
        resp = admin_client_api.get(URL, params)

        assert [e["event_type"] for e in resp.json()["results"]] == expected

    def test_detail(self, admin_client_api, events):
        event = events[0]

        resp = admin_client_api.get(f"{URL}{event.pk}/")

        assert resp.status_code == 200
        assert resp.json()["request_id"] == "req-a"

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_read_only(self, admin_client_api, events, method):
        event = events[0]
        path = URL if method == "post" else f"{URL}{event.pk}/"

        resp = getattr(admin_client_api, method)(path, {}, format="json")

        assert resp.status_code == 405
        assert AuditEvent.objects.get(pk=event.pk).event_type == "auth.token.create"

    def test_non_superuser_cannot_read(self, staff_client, events):
        assert staff_client.get(URL).status_code == 403
        assert staff_client.get(f"{URL}{events[0].pk}/").status_code == 403


class TestAuditAdmin:
    def test_admin_is_view_only(self, admin_user, events):
        browser = Client()
        otp_login(browser, admin_user)
        event = events[0]

        assert browser.get("/admin/audit/auditevent/").status_code == 200
        assert browser.get(f"/admin/audit/auditevent/{event.pk}/change/").status_code == 200
        assert browser.get("/admin/audit/auditevent/add/").status_code == 403
        assert browser.get(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403
        browser.post(f"/admin/audit/auditevent/{event.pk}/change/", {"event_type": "auth.token.revoke"})
        assert AuditEvent.objects.get(pk=event.pk).event_type == "auth.token.create"
