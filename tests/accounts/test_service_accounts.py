"""Service accounts: non-human users named svc-*, owned by a person, without a usable password,
reached only through tokens that their owner issues.

Personas: the admin-role user ops who creates service accounts through the API, the analyst alice
who owns svc-etl, and the analyst mallory who owns svc-other.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, Profile, digest_token
from apps.accounts.roles import ANALYST
from apps.accounts.services import create_service_account
from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from tests.conftest import make_user, session_client
from tests.factories import PASSWORD, token_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/accounts/service-accounts/"
TOKENS = "/api/v1/accounts/tokens/"
ME = "/api/v1/accounts/me/"


def bearer(token: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def svc_etl(plain_user):
    return create_service_account(name="svc-etl", owner_id=plain_user.pk, actor=None)


@pytest.fixture
def svc_other(db):
    return create_service_account(name="svc-other", owner_id=make_user("mallory", ANALYST).pk, actor=None)


class TestCreate:
    def test_admin_role_creates_an_owned_account_without_password(self, staff_session, staff_user):
        resp = staff_session.post(URL, {"name": "svc-nightly-report"}, format="json")

        assert resp.status_code == 201, resp.json()
        body = resp.json()
        assert (body["username"], body["is_service_account"], body["owner"], body["roles"]) == (
            "svc-nightly-report",
            True,
            "ops",
            [ANALYST],
        )
        account = get_user_model().objects.get(username="svc-nightly-report")
        assert not account.has_usable_password()
        assert not account.is_staff
        assert Profile.objects.get(user=account).owner == staff_user
        event = AuditEvent.objects.get(event_type="auth.service_account.create")
        assert (event.actor, event.target_id) == (staff_user, str(account.pk))
        assert event.details == {
            "after": {"name": "svc-nightly-report", "owner": "ops", "role": ANALYST},
        }  # made from ops's session: no token, so no token issuer

    def test_guest_role_may_be_chosen(self, staff_session):
        resp = staff_session.post(URL, {"name": "svc-catalogue", "role": "guest"}, format="json")

        assert resp.status_code == 201
        assert resp.json()["roles"] == ["guest"]

    @pytest.mark.parametrize("name", ["etl", "svc-", "SVC-etl", "svc-Etl", "svc-etl job", "xsvc-etl"])
    def test_name_must_look_like_svc_name(self, staff_session, name):
        resp = staff_session.post(URL, {"name": name}, format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("invalid_name", "name")
        self._nothing_saved()

    @pytest.mark.parametrize("role", ["admin", "security_officer", "auditor"])
    def test_privileged_role_is_refused(self, staff_session, role):
        resp = staff_session.post(URL, {"name": "svc-etl", "role": role}, format="json")

        assert resp.status_code == 400
        assert resp.json()["field"] == "role"
        self._nothing_saved()

    def test_duplicate_name_is_a_conflict(self, staff_session, svc_etl):
        resp = staff_session.post(URL, {"name": "svc-etl"}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (409, "duplicate_user")
        assert AuditEvent.objects.filter(event_type="auth.service_account.create").count() == 1

    @pytest.mark.parametrize("persona", ["user_session", "guest_session", "officer_session", "auditor_session"])
    def test_only_the_admin_role_creates(self, request, persona):
        resp = request.getfixturevalue(persona).post(URL, {"name": "svc-etl"}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (403, "permission_denied")
        self._nothing_saved()

    def test_a_service_account_cannot_own_another(self, svc_etl):
        with pytest.raises(ServiceError) as err:
            create_service_account(name="svc-child", owner_id=svc_etl.pk, actor=None)

        assert err.value.code == "invalid_owner"
        assert not get_user_model().objects.filter(username="svc-child").exists()

    @staticmethod
    def _nothing_saved() -> None:
        assert not Profile.objects.filter(is_service_account=True).exists()
        assert not AuditEvent.objects.filter(event_type="auth.service_account.create").exists()


class TestNoPassword:
    @pytest.mark.parametrize("password", ["!", "x", PASSWORD])
    def test_cannot_log_in_through_the_api(self, svc_etl, password):
        resp = APIClient().post("/api/v1/accounts/login/", {"username": "svc-etl", "password": password}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (401, "invalid_credentials")

    def test_cannot_log_in_through_the_admin(self, svc_etl):
        client = Client()

        client.post("/admin/login/", {"username": "svc-etl", "password": PASSWORD})

        assert "_auth_user_id" not in client.session


class TestOwnerTokens:
    """alice works from a portal session: tokens are issued from a session, never with a token."""

    @pytest.fixture
    def alice(self, plain_user) -> APIClient:
        return session_client(plain_user)

    def test_owner_issues_a_token_for_their_service_account(self, alice, plain_user, svc_etl):
        resp = alice.post(TOKENS, {"name": "etl", "user": svc_etl.pk, "scopes": ["invoke"]}, format="json")

        assert resp.status_code == 201, resp.json()
        assert resp.json()["user"] == "svc-etl"
        token = ApiToken.objects.get(digest=digest_token(resp.json()["token"]))
        assert (token.user, token.created_by) == (svc_etl, plain_user)
        event = AuditEvent.objects.get(event_type="auth.token.create", target_id=str(token.pk))
        assert (event.actor, event.details["after"]["user"]) == (plain_user, "svc-etl")

    def test_service_account_token_authenticates_as_it(self, svc_etl):
        me = bearer(token_for(svc_etl)).get(ME)

        assert me.status_code == 200
        assert (me.json()["username"], me.json()["is_service_account"], me.json()["owner"]) == (
            "svc-etl",
            True,
            "alice",
        )

    def test_not_for_someone_elses_service_account_or_person(self, alice, svc_other):
        mallory = get_user_model().objects.get(username="mallory")

        answers = [
            alice.post(TOKENS, {"name": "x", "user": target}, format="json")
            for target in (svc_other.pk, mallory.pk, 999999)
        ]

        assert [(r.status_code, r.json()["code"]) for r in answers] == [(404, "user_not_found")] * 3
        assert not ApiToken.objects.filter(user__in=[svc_other, mallory]).exists()

    def test_owner_lists_and_revokes_the_service_accounts_tokens(self, alice, svc_etl, svc_other):
        mine, theirs = token_for(svc_etl, name="etl"), token_for(svc_other, name="other")
        pk = ApiToken.objects.get(digest=digest_token(mine)).pk

        listed = {t["name"] for t in alice.get(TOKENS).json()["results"]}
        revoke = alice.post(f"{TOKENS}{pk}/revoke/")

        assert "etl" in listed
        assert "other" not in listed
        assert revoke.status_code == 200
        assert bearer(mine).get(ME).json()["code"] == "token_revoked"
        assert bearer(theirs).get(ME).status_code == 200


class TestListing:
    def test_owner_sees_only_their_service_accounts(self, user_client, svc_etl, svc_other):
        resp = user_client.get(URL)

        assert resp.status_code == 200
        assert [a["username"] for a in resp.json()["results"]] == ["svc-etl"]
        assert user_client.get(f"{URL}{svc_other.pk}/").status_code == 404

    def test_admin_role_sees_all(self, staff_client, svc_etl, svc_other):
        resp = staff_client.get(URL)

        assert {a["username"] for a in resp.json()["results"]} == {"svc-etl", "svc-other"}

    def test_people_are_not_listed(self, staff_client, plain_user):
        assert staff_client.get(URL).json()["results"] == []
