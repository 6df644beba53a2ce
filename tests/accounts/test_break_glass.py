"""Break-glass (HIPAA 164.312(a)(2)(ii)): a security officer grants a role for a limited time with
a reason; the grant and its first use in each session raise alert events; the role's
permissions end at expiry or revocation.

Personas: the security officer who grants, an analyst who receives the auditor role (reading the
audit log is what the emergency allows), and callers who may not grant.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from apps.accounts.models import EmergencyAccess
from apps.accounts.roles import ANALYST, AUDITOR
from apps.accounts.services import grant_emergency_access, roles_of
from apps.audit.models import AuditEvent
from tests.conftest import otp_login
from tests.factories import token_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/accounts/break-glass/"
AUDIT = "/api/v1/audit/events/"
REASON = "ward 4 incident: reconstruct who called triage overnight"


def request_body(user, **overrides) -> dict:
    return {"user": user.pk, "role": AUDITOR, "minutes": 30, "reason": REASON, **overrides}


def events(event_type: str):
    return AuditEvent.objects.filter(event_type=event_type).order_by("id")


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def analyst_api(plain_user) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")


class TestGrant:
    def test_grant_gives_the_role_until_expiry_and_alerts(
        self, clock, officer_session, officer_user, plain_user, analyst_api
    ):
        assert analyst_api.get(AUDIT).status_code == 403

        resp = officer_session.post(URL, request_body(plain_user), format="json")

        assert resp.status_code == 201, resp.json()
        body = resp.json()
        assert (body["user"], body["role"], body["granted_by"], body["active"]) == ("alice", AUDITOR, "sofia", True)
        assert parse_datetime(body["expires_at"]) == timezone.now() + timedelta(minutes=30)
        access = EmergencyAccess.objects.get(pk=body["id"])
        assert (access.user, access.reason) == (plain_user, REASON)
        event = events("auth.breakglass.grant").get()
        assert (event.actor, event.target_id) == (officer_user, str(plain_user.pk))
        assert event.details["alert"] is True
        assert (event.details["role"], event.details["reason"]) == (AUDITOR, REASON)
        # The emergency role is not a standing one.
        assert roles_of(plain_user, include_emergency=False) == {ANALYST}
        assert roles_of(plain_user) == {ANALYST, AUDITOR}

        assert analyst_api.get(AUDIT).status_code == 200
        # Privileged now, so the token obeys the idle timeout (SESSION_IDLE_TIMEOUT): keep it in use.
        clock.shift(timedelta(minutes=14))
        assert analyst_api.get(AUDIT).status_code == 200
        clock.shift(timedelta(minutes=15))
        assert analyst_api.get(AUDIT).status_code == 200
        clock.shift(timedelta(minutes=2))
        resp = analyst_api.get(AUDIT)
        assert (resp.status_code, resp.json()["code"]) == (403, "permission_denied")
        assert roles_of(plain_user) == {ANALYST}

    def test_revocation_ends_the_role_at_once(self, officer_session, plain_user, analyst_api):
        access_id = officer_session.post(URL, request_body(plain_user), format="json").json()["id"]
        assert analyst_api.get(AUDIT).status_code == 200

        resp = officer_session.post(f"{URL}{access_id}/revoke/")

        assert resp.status_code == 200
        assert resp.json()["active"] is False
        assert analyst_api.get(AUDIT).status_code == 403
        # made from sofia's session (a token changes no account): no token issuer in the details
        assert events("auth.breakglass.revoke").get().details == {"role": AUDITOR, "access_id": access_id}

    def test_auditor_sees_the_grants(self, auditor_client, plain_user, officer_user):
        grant_emergency_access(user_id=plain_user.pk, role=AUDITOR, minutes=5, reason=REASON, actor=officer_user)

        resp = auditor_client.get(URL)

        assert resp.status_code == 200
        assert [(g["user"], g["role"]) for g in resp.json()["results"]] == [("alice", AUDITOR)]


class TestUse:
    @pytest.fixture
    def access(self, plain_user, officer_user) -> EmergencyAccess:
        return grant_emergency_access(
            user_id=plain_user.pk, role=AUDITOR, minutes=60, reason=REASON, actor=officer_user
        )

    def test_first_use_in_each_session_alerts_once(self, access, plain_user):
        first, second = Client(), Client()
        otp_login(first, plain_user)
        otp_login(second, plain_user)

        assert [first.get(AUDIT).status_code for _ in range(3)] == [200, 200, 200]
        assert events("auth.breakglass.use").count() == 1
        assert second.get(AUDIT).status_code == 200

        uses = events("auth.breakglass.use")
        assert uses.count() == 2
        for use in uses:
            assert (use.actor, use.outcome) == (plain_user, "success")
            assert use.details == {"alert": True, "role": AUDITOR, "access_id": access.pk, "path": AUDIT}

    def test_no_alert_without_an_active_grant(self, plain_user):
        client = Client()
        client.force_login(plain_user)

        assert client.get("/api/v1/accounts/me/").status_code == 200
        assert not events("auth.breakglass.use").exists()

    def test_privileged_emergency_role_needs_the_second_factor(self, access, plain_user):
        client = Client()
        client.force_login(plain_user)

        resp = client.get(AUDIT)

        assert (resp.status_code, resp.json()["code"]) == (403, "otp_enrolment_required")

    def test_token_use_alerts(self, access, analyst_api):
        assert analyst_api.get(AUDIT).status_code == 200

        assert events("auth.breakglass.use").count() == 1


class TestRefused:
    @pytest.mark.parametrize("reason", [None, "", "   "])
    def test_reason_is_required(self, officer_session, plain_user, reason):
        body = request_body(plain_user, reason=reason)
        if reason is None:
            del body["reason"]

        resp = officer_session.post(URL, body, format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("reason_required", "reason")
        self._nothing_saved()

    @pytest.mark.parametrize("over", [timedelta(minutes=1), timedelta(hours=1)])
    def test_longer_than_the_maximum_is_invalid(self, officer_session, plain_user, over):
        minutes = int((settings.BREAK_GLASS_MAX + over).total_seconds() // 60)

        resp = officer_session.post(URL, request_body(plain_user, minutes=minutes), format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("invalid_duration", "minutes")
        self._nothing_saved()

    @pytest.mark.parametrize("minutes", [0, -5])
    def test_non_positive_duration_is_invalid(self, officer_session, plain_user, minutes):
        resp = officer_session.post(URL, request_body(plain_user, minutes=minutes), format="json")

        assert resp.json()["code"] == "invalid_duration"
        self._nothing_saved()

    def test_the_maximum_itself_is_allowed(self, officer_session, plain_user):
        minutes = int(settings.BREAK_GLASS_MAX.total_seconds() // 60)

        resp = officer_session.post(URL, request_body(plain_user, minutes=minutes), format="json")

        assert resp.status_code == 201
        assert timedelta(hours=8) == settings.BREAK_GLASS_MAX

    def test_conflict_with_a_standing_exclusive_role(self, officer_session, staff_user):
        resp = officer_session.post(URL, request_body(staff_user), format="json")

        assert resp.status_code == 409
        assert resp.json()["code"] == "role_conflict"
        self._nothing_saved()

    def test_conflict_with_an_active_emergency_role(self, officer_session, plain_user):
        officer_session.post(URL, request_body(plain_user), format="json")

        resp = officer_session.post(URL, request_body(plain_user, role="admin"), format="json")

        assert (resp.status_code, resp.json()["code"]) == (409, "role_conflict")
        assert EmergencyAccess.objects.count() == 1

    @pytest.mark.parametrize("persona", ["staff_session", "auditor_session", "user_session", "guest_session"])
    def test_only_a_security_officer_grants(self, request, persona, plain_user):
        resp = request.getfixturevalue(persona).post(URL, request_body(plain_user), format="json")

        assert (resp.status_code, resp.json()["code"]) == (403, "permission_denied")
        self._nothing_saved()

    def test_unknown_user_is_404(self, officer_session, plain_user):
        body = {**request_body(plain_user), "user": 999999}

        resp = officer_session.post(URL, body, format="json")

        assert (resp.status_code, resp.json()["code"]) == (404, "user_not_found")
        self._nothing_saved()

    @staticmethod
    def _nothing_saved() -> None:
        assert not EmergencyAccess.objects.exists()
        assert not events("auth.breakglass.grant").exists()
