"""Who may reach which model through the gateway: per-model grants (direct or through a group,
optionally expiring), token scopes and token model restrictions, and roles that invoke nothing.

A model outside the caller's grants answers exactly like a model that does not exist (404
model_not_found), and nothing is forwarded to Triton. Time is moved with time_machine.

Personas: alice, an analyst granted invoke on triage; ranker is deployed too but not hers.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.roles import ANALYST, GUEST
from apps.accounts.services import assign_role, grant_model_access, remove_role, revoke_model_access
from apps.audit.models import AuditEvent, Outcome
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client

from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db

ENDPOINTS = ["infer", "metadata", "ready"]


def call(client: Client, endpoint: str, name: str):
    if endpoint == "infer":
        return infer(client, valid_request(), name=name)
    return client.get(f"/v2/models/{name}{'/ready' if endpoint == 'ready' else ''}")


def bearer(user, **kwargs) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user, **kwargs)}")


def assert_not_found(resp, name: str) -> None:
    """The answer for a model one may not see: the same as for a model that does not exist."""
    assert resp.status_code == 404, resp.content
    assert resp.json() == {
        "code": "model_not_found",
        "detail": f"unknown model {name!r}",
        "error": f"unknown model {name!r}",
    }


def assert_error(resp, status: int, code: str) -> None:
    assert resp.status_code == status, resp.content
    assert resp.json()["code"] == code


@pytest.fixture
def triage(model_version, fake_triton):
    deploy(model_version, url=fake_triton.url)
    return model_version.model


@pytest.fixture
def ranker(staff_user, fake_triton):
    mv = ModelVersionFactory(model_name="ranker", actor=staff_user)
    deploy(mv, url=fake_triton.url)
    return mv.model


@pytest.fixture
def alice(plain_user, triage, ranker):
    grant(plain_user, triage)
    return plain_user


def forwarded(fake_triton, name: str) -> list[str]:
    return [r.path for r in fake_triton.requests if f"/models/{name}" in r.path]


class TestGrantedModelOnly:
    @pytest.mark.parametrize("endpoint", ENDPOINTS)
    def test_granted_model_is_served(self, alice, fake_triton, endpoint):
        resp = call(bearer(alice), endpoint, "triage")

        assert resp.status_code == 200, resp.content
        assert forwarded(fake_triton, "triage")

    @pytest.mark.parametrize("endpoint", ENDPOINTS)
    def test_ungranted_model_is_404_like_a_missing_one(self, alice, fake_triton, endpoint):
        client = bearer(alice)

        hidden = call(client, endpoint, "ranker")
        missing = call(client, endpoint, "ranker-x")

        assert_not_found(hidden, "ranker")
        assert_not_found(missing, "ranker-x")
        assert forwarded(fake_triton, "ranker") == []
        event = AuditEvent.objects.filter(event_group="inference", target_display="ranker").get()
        assert (event.actor, event.outcome, event.error_code) == (alice, Outcome.DENIED, "model_not_found")
        assert event.target_id == ""  # the id of a model she may not see is not recorded against her

    @pytest.mark.parametrize("endpoint", ENDPOINTS)
    def test_version_url_of_ungranted_model_is_404(self, alice, endpoint):
        client = bearer(alice)
        suffix = {"infer": "/infer", "metadata": "", "ready": "/ready"}[endpoint]
        path = f"/v2/models/ranker/versions/1{suffix}"

        resp = (
            client.post(path, data=b"{}", content_type="application/json") if endpoint == "infer" else client.get(path)
        )

        assert_not_found(resp, "ranker")

    def test_view_grant_reads_metadata_but_does_not_invoke(self, alice, ranker):
        grant(alice, ranker, "view_model")
        client = bearer(alice)

        assert call(client, "metadata", "ranker").status_code == 200
        assert call(client, "ready", "ranker").status_code == 200
        assert_error(call(client, "infer", "ranker"), 403, "invoke_not_permitted")

    def test_analyst_without_any_grant_sees_nothing(self, triage, ranker):
        client = bearer(make_user("bob", "analyst"))

        for endpoint in ENDPOINTS:
            assert_not_found(call(client, endpoint, "triage"), "triage")


class TestGrantChangesTakeEffectAtOnce:
    def test_revoking_invoke_stops_inference_on_the_next_request(self, alice, triage):
        client = bearer(alice)
        assert call(client, "infer", "triage").status_code == 200

        revoke_model_access(model_id=triage.pk, permission="invoke_model", user_id=alice.pk, actor=None)

        assert_error(call(client, "infer", "triage"), 403, "invoke_not_permitted")
        assert call(client, "metadata", "triage").status_code == 200  # the view grant remains

    def test_revoking_view_hides_the_model_on_the_next_request(self, alice, triage):
        client = bearer(alice)
        assert call(client, "ready", "triage").status_code == 200

        revoke_model_access(model_id=triage.pk, permission="view_model", user_id=alice.pk, actor=None)

        for endpoint in ENDPOINTS:
            assert_not_found(call(client, endpoint, "triage"), "triage")

    def test_expired_grant_stops_access_on_the_next_request(self, plain_user, triage, ranker):
        expires = timezone.now() + timedelta(hours=1)
        grant(plain_user, triage, expires_at=expires)
        client = bearer(plain_user)

        with time_machine.travel(expires - timedelta(seconds=1), tick=False):
            assert call(client, "infer", "triage").status_code == 200
        with time_machine.travel(expires, tick=False):
            for endpoint in ENDPOINTS:
                assert_not_found(call(client, endpoint, "triage"), "triage")

    def test_regrant_without_expiry_outlives_the_old_expiry(self, plain_user, triage):
        expires = timezone.now() + timedelta(hours=1)
        grant(plain_user, triage, expires_at=expires)
        grant(plain_user, triage)
        client = bearer(plain_user)

        with time_machine.travel(expires + timedelta(days=1), tick=False):
            assert call(client, "infer", "triage").status_code == 200


class TestGroupGrants:
    @pytest.fixture
    def oncology(self, ranker):
        group = Group.objects.create(name="oncology")
        grant_model_access(model_id=ranker.pk, permission="invoke_model", group_id=group.pk, actor=None)
        return group

    def test_members_may_invoke(self, alice, oncology):
        alice.groups.add(oncology)

        for endpoint in ENDPOINTS:
            assert call(bearer(alice), endpoint, "ranker").status_code == 200

    def test_non_members_get_404(self, alice, oncology):
        for endpoint in ENDPOINTS:
            assert_not_found(call(bearer(alice), endpoint, "ranker"), "ranker")

    def test_leaving_the_group_ends_access(self, alice, oncology):
        alice.groups.add(oncology)
        client = bearer(alice)
        assert call(client, "infer", "ranker").status_code == 200

        alice.groups.remove(oncology)

        assert_not_found(call(client, "infer", "ranker"), "ranker")

    def test_expired_group_grant_stops_access(self, alice, ranker):
        group = Group.objects.create(name="night-shift")
        alice.groups.add(group)
        expires = timezone.now() + timedelta(minutes=30)
        grant_model_access(
            model_id=ranker.pk, permission="invoke_model", group_id=group.pk, expires_at=expires, actor=None
        )
        client = bearer(alice)

        assert call(client, "infer", "ranker").status_code == 200
        with time_machine.travel(expires + timedelta(seconds=1), tick=False):
            assert_not_found(call(client, "infer", "ranker"), "ranker")


class TestTokenRestrictions:
    @pytest.mark.parametrize("endpoint", ENDPOINTS)
    def test_token_restricted_to_one_model_cannot_reach_another_granted_one(
        self, alice, triage, ranker, fake_triton, endpoint
    ):
        grant(alice, ranker)
        client = bearer(alice, model_ids=[triage.pk])

        assert call(client, endpoint, "triage").status_code == 200
        assert_not_found(call(client, endpoint, "ranker"), "ranker")
        assert forwarded(fake_triton, "ranker") == []
        assert call(bearer(alice), endpoint, "ranker").status_code == 200  # an unrestricted token may

    def test_restriction_does_not_widen_the_grants(self, alice, triage, ranker):
        client = bearer(alice, model_ids=[ranker.pk])

        assert_not_found(call(client, "infer", "ranker"), "ranker")
        assert_not_found(call(client, "infer", "triage"), "triage")

    def test_token_without_invoke_scope_is_403_at_infer(self, alice):
        client = bearer(alice, scopes=["read"])

        resp = call(client, "infer", "triage")

        assert_error(resp, 403, "insufficient_scope")
        event = AuditEvent.objects.get(event_type="inference.infer")
        assert (event.outcome, event.error_code) == (Outcome.DENIED, "insufficient_scope")
        token = ApiToken.objects.get(user=alice)
        assert event.token_id == token.pk

    @pytest.mark.parametrize("endpoint", ["metadata", "ready"])
    def test_read_scope_is_enough_for_metadata_and_ready(self, alice, endpoint):
        assert call(bearer(alice, scopes=["read"]), endpoint, "triage").status_code == 200

    @pytest.mark.parametrize("endpoint", ENDPOINTS)
    def test_manage_scope_alone_reaches_nothing(self, alice, endpoint):
        assert_error(call(bearer(alice, scopes=["manage"]), endpoint, "triage"), 403, "insufficient_scope")


class TestRolesThatDoNotInvoke:
    def test_guest_infer_on_a_catalogue_model_is_403(self, guest_user, triage, fake_triton):
        resp = call(bearer(guest_user), "infer", "triage")

        assert_error(resp, 403, "invoke_not_permitted")
        assert forwarded(fake_triton, "triage") == []
        assert AuditEvent.objects.get(event_type="inference.infer").error_code == "invoke_not_permitted"

    def test_guest_on_an_unknown_model_is_404(self, guest_user, triage):
        assert_not_found(call(bearer(guest_user), "infer", "nope"), "nope")

    @pytest.mark.parametrize("persona", ["staff_user", "officer_user", "auditor_user"])
    def test_privileged_roles_need_a_grant_to_invoke(self, request, triage, persona):
        user = request.getfixturevalue(persona)
        client = bearer(user)

        assert_error(call(client, "infer", "triage"), 403, "invoke_not_permitted")
        grant(user, triage)
        assert call(client, "infer", "triage").status_code == 200

    def test_guest_in_a_granted_group_still_invokes_nothing(self, guest_user, triage):
        group = Group.objects.create(name="oncology")
        guest_user.groups.add(group)
        grant_model_access(model_id=triage.pk, permission="invoke_model", group_id=group.pk, actor=None)

        assert_error(call(bearer(guest_user), "infer", "triage"), 403, "invoke_not_permitted")

    def test_analyst_demoted_to_guest_loses_invocation(self, plain_user, triage):
        grant(plain_user, triage)
        remove_role(user_id=plain_user.pk, role=ANALYST, actor=None)
        assign_role(user_id=plain_user.pk, role=GUEST, actor=None)

        assert_error(call(bearer(plain_user), "infer", "triage"), 403, "invoke_not_permitted")
