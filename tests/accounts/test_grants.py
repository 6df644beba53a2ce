"""Per-model grants: what they open in the API and the admin, how they end (revoked, expired,
group membership), who may give them, the refusals, and the audit trail of every change.

Personas: alice, an analyst granted triage (model A); ranker (model B) exists but is not hers;
sofia, a security officer, gives and takes grants through /api/v1/accounts/grants/.
Time is moved with time_machine, never waited for.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from apps.accounts.models import ModelGroupGrant, ModelUserGrant
from apps.accounts.services import grant_model_access, revoke_model_access
from apps.audit.models import AuditEvent, Outcome
from apps.core.errors import ServiceError
from apps.registry.models import Model
from tests.conftest import grant
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/registry/models/"
GRANTS = "/api/v1/accounts/grants/"
GROUP_GRANTS = "/api/v1/accounts/group-grants/"


@pytest.fixture
def triage(staff_user) -> Model:
    return ModelVersionFactory(model_name="triage", actor=staff_user).model


@pytest.fixture
def ranker(staff_user) -> Model:
    return ModelVersionFactory(model_name="ranker", actor=staff_user).model


@pytest.fixture
def alice(plain_user, triage, ranker):
    grant(plain_user, triage, "view_model")
    return plain_user


def model_paths(name: str) -> list[str]:
    return [f"{MODELS}{name}/", f"{MODELS}{name}/versions/", f"{MODELS}{name}/versions/1/"]


def assert_hidden(client, name: str) -> None:
    """Model detail, version list and version detail answer as for a model that does not exist."""
    for path in model_paths(name):
        resp = client.get(path)
        missing = json.dumps(client.get(path.replace(name, f"{name}-nope", 1)).json())
        assert resp.status_code == 404, (path, resp.content)
        assert resp.json() == json.loads(missing.replace(f"{name}-nope", name))
    assert name not in [m["name"] for m in client.get(MODELS).json()["results"]]


def assert_open(client, name: str) -> None:
    for path in model_paths(name):
        assert client.get(path).status_code == 200, path


class TestApiScope:
    def test_granted_model_is_readable(self, alice, user_client):
        assert_open(user_client, "triage")
        assert [m["name"] for m in user_client.get(MODELS).json()["results"]] == ["triage"]

    def test_ungranted_model_is_404_on_detail_and_versions(self, alice, user_client):
        assert_hidden(user_client, "ranker")
        resp = user_client.get(f"{MODELS}ranker/versions/")
        assert (resp.status_code, resp.json()["code"]) == (404, "model_not_found")

    def test_filters_do_not_reveal_ungranted_models(self, alice, user_client):
        resp = user_client.get(MODELS, {"name": "ranker"})

        assert (resp.status_code, resp.json()["count"]) == (200, 0)

    def test_group_grant_opens_the_model_to_members_only(self, alice, user_client, ranker):
        group = Group.objects.create(name="oncology")
        grant_model_access(model_id=ranker.pk, permission="view_model", group_id=group.pk, actor=None)
        assert_hidden(user_client, "ranker")

        alice.groups.add(group)

        assert_open(user_client, "ranker")

    def test_revoked_grant_is_404_on_the_next_request(self, alice, user_client, officer_session, triage):
        assert_open(user_client, "triage")
        row = ModelUserGrant.objects.get(user=alice, content_object=triage)

        assert officer_session.delete(f"{GRANTS}{row.pk}/").status_code == 204

        assert_hidden(user_client, "triage")

    def test_expired_grant_is_404_on_the_next_request(self, plain_user, user_client, triage):
        expires = timezone.now() + timedelta(days=7)
        grant(plain_user, triage, "view_model", expires_at=expires)

        with time_machine.travel(expires - timedelta(seconds=1), tick=False):
            assert_open(user_client, "triage")
        with time_machine.travel(expires, tick=False):
            assert_hidden(user_client, "triage")


class TestAdminScope:
    """The admin is for staff (privileged roles, who see every model); an analyst reaches none of
    it, granted or not, and learns nothing about any model there."""

    @pytest.fixture
    def browser(self, alice) -> Client:
        client = Client()
        client.force_login(alice)
        return client

    @pytest.mark.parametrize("name", ["triage", "ranker"])
    def test_analyst_is_sent_to_the_login_page(self, browser, name):
        model = Model.objects.get(name=name)
        version = model.versions.get()

        for path in (
            f"/admin/registry/model/{model.pk}/change/",
            f"/admin/registry/modelversion/{version.pk}/change/",
            f"/admin/registry/artifact/{version.artifact.pk}/change/",
            f"/admin/registry/modelversion/?model__id__exact={model.pk}",
        ):
            resp = browser.get(path)
            assert resp.status_code == 302, path
            assert resp["Location"].startswith("/admin/login/")

    def test_staff_flag_alone_opens_no_model(self, browser, alice, ranker):
        alice.is_staff = True
        alice.save(update_fields=["is_staff"])

        resp = browser.get(f"/admin/registry/model/{ranker.pk}/change/")

        assert resp.status_code == 403
        assert "ranker" not in resp.content.decode()


class TestGrantApi:
    def payload(self, model, user, permission="invoke_model", **extra) -> dict:
        return {"model": model.pk, "user": user.pk, "permission": permission, **extra}

    def test_officer_grants_invoke_which_implies_view(self, officer_session, officer_user, plain_user, ranker):
        resp = officer_session.post(GRANTS, self.payload(ranker, plain_user), format="json")

        assert resp.status_code == 201, resp.json()
        assert sorted(g["permission"] for g in resp.json()) == ["invoke_model", "view_model"]
        rows = ModelUserGrant.objects.filter(user=plain_user, content_object=ranker)
        assert sorted(rows.values_list("permission__codename", flat=True)) == ["invoke_model", "view_model"]
        assert {r.granted_by for r in rows} == {officer_user}

    def test_grant_with_expiry(self, officer_session, plain_user, ranker):
        expires = timezone.now() + timedelta(days=3)

        resp = officer_session.post(
            GRANTS, self.payload(ranker, plain_user, expires_at=expires.isoformat()), format="json"
        )

        assert resp.status_code == 201, resp.json()
        assert {r.expires_at for r in ModelUserGrant.objects.filter(user=plain_user)} == {expires}

    def test_granting_again_updates_the_expiry(self, plain_user, ranker):
        grant(plain_user, ranker, expires_at=timezone.now() + timedelta(days=1))
        later = timezone.now() + timedelta(days=30)

        grant(plain_user, ranker, expires_at=later)

        rows = ModelUserGrant.objects.filter(user=plain_user, content_object=ranker)
        assert rows.count() == 2
        assert {r.expires_at for r in rows} == {later}

    def test_revoking_view_also_revokes_invoke(self, plain_user, ranker):
        grant(plain_user, ranker)

        revoke_model_access(model_id=ranker.pk, permission="view_model", user_id=plain_user.pk, actor=None)

        assert not ModelUserGrant.objects.filter(user=plain_user).exists()

    def test_guest_cannot_be_granted_invoke(self, officer_session, guest_user, ranker):
        resp = officer_session.post(GRANTS, self.payload(ranker, guest_user), format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("role_cannot_invoke", "user")
        assert not ModelUserGrant.objects.exists()
        assert not AuditEvent.objects.filter(event_type__startswith="access.grant").exists()
        refused = AuditEvent.objects.get(event_type="access.refused")  # the refusal itself is recorded
        assert (refused.error_code, refused.outcome, refused.details["status"]) == (
            "role_cannot_invoke",
            "failure",
            400,
        )

    def test_guest_may_be_granted_view(self, officer_session, guest_user, ranker):
        resp = officer_session.post(GRANTS, self.payload(ranker, guest_user, "view_model"), format="json")

        assert resp.status_code == 201, resp.json()

    def test_guest_group_cannot_be_granted_invoke(self, officer_session, ranker):
        guests = Group.objects.get(name="guest")

        resp = officer_session.post(
            GROUP_GRANTS, {"model": ranker.pk, "group": guests.pk, "permission": "invoke_model"}, format="json"
        )

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("role_cannot_invoke", "group")
        assert not ModelGroupGrant.objects.exists()

    def test_user_without_a_role_cannot_be_granted_invoke(self, officer_session, ranker):
        resp = officer_session.post(GRANTS, self.payload(ranker, UserFactory()), format="json")

        assert (resp.status_code, resp.json()["code"]) == (400, "role_cannot_invoke")

    @pytest.mark.parametrize("ago", [timedelta(seconds=1), timedelta(days=2)])
    def test_expiry_in_the_past_is_refused(self, officer_session, plain_user, ranker, ago):
        past = (timezone.now() - ago).isoformat()

        resp = officer_session.post(GRANTS, self.payload(ranker, plain_user, expires_at=past), format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("expired_grant", "expires_at")
        assert not ModelUserGrant.objects.exists()
        assert not AuditEvent.objects.filter(event_type__startswith="access.grant").exists()

    def test_nonexistent_user_is_404(self, officer_session, ranker):
        resp = officer_session.post(GRANTS, {"model": ranker.pk, "user": 987654, "permission": "view_model"})

        assert (resp.status_code, resp.json()["code"]) == (404, "user_not_found")
        assert not ModelUserGrant.objects.exists()

    def test_nonexistent_model_is_404(self, officer_session, plain_user):
        resp = officer_session.post(GRANTS, {"model": 987654, "user": plain_user.pk, "permission": "view_model"})

        assert (resp.status_code, resp.json()["code"]) == (404, "model_not_found")
        assert not ModelUserGrant.objects.exists()

    def test_nonexistent_group_is_404(self, officer_session, ranker):
        resp = officer_session.post(GROUP_GRANTS, {"model": ranker.pk, "group": 987654, "permission": "view_model"})

        assert (resp.status_code, resp.json()["code"]) == (404, "group_not_found")

    def test_unknown_permission_is_refused(self, officer_session, plain_user, ranker):
        resp = officer_session.post(GRANTS, self.payload(ranker, plain_user, "delete_model"), format="json")

        assert (resp.status_code, resp.json()["field"]) == (400, "permission")
        assert not ModelUserGrant.objects.exists()

    @pytest.mark.parametrize("persona", ["user_session", "staff_session", "auditor_session", "guest_session"])
    def test_only_security_officers_grant(self, request, persona, plain_user, ranker):
        resp = request.getfixturevalue(persona).post(GRANTS, self.payload(ranker, plain_user), format="json")

        assert (resp.status_code, resp.json()["code"]) == (403, "permission_denied")
        assert not ModelUserGrant.objects.exists()

    def test_analyst_cannot_revoke_grants(self, alice, user_session, triage):
        row = ModelUserGrant.objects.get(user=alice)

        resp = user_session.delete(f"{GRANTS}{row.pk}/")

        assert resp.status_code == 403
        assert ModelUserGrant.objects.filter(pk=row.pk).exists()


class TestAudit:
    def test_grant_through_the_api_is_audited(self, officer_session, officer_user, plain_user, ranker):
        expires = timezone.now() + timedelta(days=3)

        officer_session.post(
            GRANTS,
            {
                "model": ranker.pk,
                "user": plain_user.pk,
                "permission": "invoke_model",
                "expires_at": expires.isoformat(),
            },
            format="json",
            REMOTE_ADDR="198.51.100.9",
        )

        event = AuditEvent.objects.get(event_type="access.grant.create")
        assert (event.actor, event.outcome, event.source_ip) == (officer_user, Outcome.SUCCESS, "198.51.100.9")
        assert (event.target_type, event.target_id) == ("registry.model", str(ranker.pk))
        assert event.details["grantee"] == f"user:{plain_user.username}"
        assert sorted(event.details["permissions"]) == ["invoke_model", "view_model"]
        assert event.details["expires_at"] == expires.isoformat()

    def test_revoke_through_the_api_is_audited(self, officer_session, officer_user, alice, triage):
        row = ModelUserGrant.objects.get(user=alice)

        officer_session.delete(f"{GRANTS}{row.pk}/")

        event = AuditEvent.objects.get(event_type="access.grant.revoke")
        assert (event.actor, event.target_id) == (officer_user, str(triage.pk))
        assert event.details["grantee"] == f"user:{alice.username}"

    def test_every_service_call_writes_one_event(self, officer_user, plain_user, ranker):
        group = Group.objects.create(name="oncology")
        calls = [
            lambda: grant_model_access(
                model_id=ranker.pk, permission="view_model", user_id=plain_user.pk, actor=officer_user
            ),
            lambda: grant_model_access(
                model_id=ranker.pk, permission="invoke_model", group_id=group.pk, actor=officer_user
            ),
            lambda: revoke_model_access(
                model_id=ranker.pk, permission="view_model", user_id=plain_user.pk, actor=officer_user
            ),
            lambda: revoke_model_access(
                model_id=ranker.pk, permission="invoke_model", group_id=group.pk, actor=officer_user
            ),
            # revoking what is not there changes nothing but is recorded
            lambda: revoke_model_access(
                model_id=ranker.pk, permission="view_model", user_id=plain_user.pk, actor=officer_user
            ),
        ]
        for call in calls:
            call()

        events = AuditEvent.objects.filter(event_group="access").order_by("id")
        assert [e.event_type for e in events] == ["access.grant.create"] * 2 + ["access.grant.revoke"] * 3
        assert [e.details["grantee"] for e in events] == [
            f"user:{plain_user.username}",
            "group:oncology",
            f"user:{plain_user.username}",
            "group:oncology",
            f"user:{plain_user.username}",
        ]
        assert all(e.actor == officer_user and e.target_id == str(ranker.pk) for e in events)
        assert not ModelUserGrant.objects.exists()
        assert list(ModelGroupGrant.objects.values_list("permission__codename", flat=True)) == ["view_model"]

    def test_refused_grant_leaves_no_event_and_no_row(self, guest_user, ranker):
        with pytest.raises(ServiceError, match="guests invoke nothing"):
            grant_model_access(model_id=ranker.pk, permission="invoke_model", user_id=guest_user.pk, actor=None)

        assert not ModelUserGrant.objects.exists()
        assert not AuditEvent.objects.filter(event_type__startswith="access.grant").exists()


class TestPurgeExpiredGrants:
    def test_expired_grants_are_deleted_and_audited_live_ones_stay(self, plain_user):
        from datetime import timedelta

        import time_machine
        from django.utils import timezone

        from apps.accounts.models import ModelUserGrant
        from apps.accounts.tasks import purge_expired_grants
        from tests.factories import ModelVersionFactory

        soon, later = ModelVersionFactory(model_name="soon").model, ModelVersionFactory(model_name="later").model
        grant(plain_user, soon, expires_at=timezone.now() + timedelta(hours=1))
        grant(plain_user, later, expires_at=timezone.now() + timedelta(days=3))
        assert plain_user.has_perm("registry.invoke_model", soon)  # guardian alone ignores expiry

        with time_machine.travel(timezone.now() + timedelta(hours=2), tick=False):
            assert purge_expired_grants() == 2  # invoke_model and the view_model it implied

        assert not ModelUserGrant.objects.filter(content_object=soon).exists()
        assert ModelUserGrant.objects.filter(content_object=later).count() == 2
        fresh = type(plain_user).objects.get(pk=plain_user.pk)
        assert not fresh.has_perm("registry.invoke_model", soon)
        events = AuditEvent.objects.filter(event_type="access.grant.expire")
        assert events.count() == 2 and {e.target_id for e in events} == {str(soon.pk)}
