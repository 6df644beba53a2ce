"""Who gets original identifiers back from a surrogate-mode chat model (the `reidentify` power,
docs/access-control.md): sequences an attacker with `invoke` on the model would try.

The model is a deterministic echo upstream (tests/security/echo_upstream.py): it repeats the
de-identified prompt it received, so an answer holds the original identifier only when the data
plane re-identified it for this caller. Personas: alice (analyst, invoke + reidentify on `ward`),
eve (analyst, invoke only), sofia (security officer), ops (admin, owns a service account).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from apps.accounts.models import ModelUserGrant
from apps.accounts.roles import ADMIN, ANALYST, GUEST, SECURITY_OFFICER
from apps.accounts.services import create_service_account, grant_model_access, issue_token
from apps.accounts.services.grants import purge_expired_grants, revoke_model_access
from apps.audit.models import AuditEvent
from apps.gateway.dataplane.snapshot import SnapshotHolder, load_snapshot
from tests.conftest import grant, make_user
from tests.factories import token_for
from tests.gateway.dataplane_client import DataPlaneClient
from tests.security import echo_upstream
from tests.security.powers import make_chat_model
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db

SSN = "123-45-6789"
NOTE = f"Patient SSN {SSN}, seen today."
GRANTS = "/api/v1/accounts/grants/"
GROUP_GRANTS = "/api/v1/accounts/group-grants/"


@pytest.fixture
def ward(staff_user):
    return make_chat_model("ward", staff_user)


@pytest.fixture
def alice(ward):
    user = make_user("alice", ANALYST)
    grant(user, ward)
    grant(user, ward, "reidentify")
    return user


@pytest.fixture
def eve(ward):
    user = make_user("eve", ANALYST)
    grant(user, ward)
    return user


def ask(plaintext: str, *, conversation: str | None = None, stream: bool = True, content: str = NOTE, policy=None):
    """The answer's text (None if the call was refused) for a chat call with this token."""
    client = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    client.policy = policy
    headers = {"HTTP_X_SOVEREIGN_CONVERSATION": conversation} if conversation else {}
    body = {"model": "ward", "messages": [{"role": "user", "content": content}], "stream": stream}
    seen = len(echo_upstream.received)
    response = client.post("/v1/chat/completions", data=json.dumps(body), **headers)
    assert not [p for p in echo_upstream.received[seen:] if SSN in p], "the model received the original"
    if response.status_code != 200:
        return None
    if not stream:
        return response.json()["choices"][0]["message"]["content"]
    out = []
    for block in response.content.split(b"\n\n"):
        if block.startswith(b"data: {"):
            event = json.loads(block[6:])
            out += [c["delta"].get("content", "") for c in event["choices"]]
    return "".join(out)


def originals(answer: str | None) -> bool:
    assert answer is not None, "the call was refused: nothing was measured"
    return SSN in answer


class TestTheMeasurement:
    @pytest.mark.parametrize("stream", [True, False])
    def test_a_holder_gets_the_original_and_an_invoker_the_surrogate(self, alice, eve, stream):
        assert originals(ask(token_for(alice), stream=stream))
        answer = ask(token_for(eve), stream=stream)
        assert not originals(answer) and "SSN 9" in answer  # a surrogate SSN (area 9xx) in its place


class TestConversations:
    def test_eve_reusing_alices_conversation_id_gets_nothing_of_alices(self, alice, eve):
        assert originals(ask(token_for(alice), conversation="ward-7"))
        surrogate_prompt = echo_upstream.received[-1]
        surrogate = surrogate_prompt.split("SSN ")[1].split(",")[0]
        # eve knows the id and even the surrogate (say, from the model's logs) and asks it back
        answer = ask(token_for(eve), conversation="ward-7", content=f"Patient SSN {surrogate}, seen today.")
        assert not originals(answer)  # her own (empty) mapping: the surrogate stays what she sent

    def test_alice_reusing_her_conversation_with_a_second_token_starts_afresh(self, alice):
        first, second = token_for(alice), token_for(alice, name="second")
        ask(first, conversation="ward-8")
        surrogate = echo_upstream.received[-1].split("SSN ")[1].split(",")[0]
        answer = ask(second, conversation="ward-8", content=f"Repeat SSN {surrogate}.")
        assert SSN not in answer  # the mapping is the first token's, not the person's


class TestTokens:
    def test_a_read_token_or_one_restricted_to_other_models_reaches_nothing(self, alice, ward, staff_user):
        other = make_chat_model("clinic", staff_user)
        grant(alice, other)
        assert ask(token_for(alice, scopes=["read"])) is None
        assert ask(token_for(alice, model_ids=[other.pk])) is None
        assert originals(ask(token_for(alice, scopes=["invoke"], model_ids=[ward.pk])))

    def test_a_token_newer_than_the_snapshot_keeps_surrogates(self, alice):
        """The data plane authenticates a token its snapshot does not know from the database; it
        then routes but never re-identifies (fail safe)."""
        warm = load_snapshot()
        holder = SnapshotHolder(refresh="always", loader=lambda: warm)
        answer = ask(token_for(alice), policy=holder)
        assert answer is None or not originals(answer)


class TestServiceAccountsAndGroups:
    def test_a_service_account_never_inherits_its_owners_or_a_groups_reidentify(self, alice, ward, staff_user):
        svc = create_service_account(name="svc-etl", owner_id=staff_user.pk, role=ANALYST, actor=None)
        grant(svc, ward)  # invoke by name
        grant_model_access(
            model_id=ward.pk, permission="reidentify", group_id=Group.objects.get(name=ANALYST).pk, actor=None
        )
        plaintext = issue_token(user=svc, name="etl", actor=None)[1]
        assert not originals(ask(plaintext))

    def test_a_group_reidentify_reaches_a_person_who_invokes(self, eve, ward):
        grant_model_access(
            model_id=ward.pk, permission="reidentify", group_id=Group.objects.get(name=ANALYST).pk, actor=None
        )
        assert originals(ask(token_for(eve)))

    def test_an_officer_cannot_grant_reidentify_to_its_own_service_account_or_group(self, ward, eve):
        sofia = make_user("sofia", SECURITY_OFFICER)
        svc = create_service_account(name="svc-sofia", owner_id=sofia.pk, role=ANALYST, actor=None)
        group = Group.objects.create(name="oncology")
        sofia.groups.add(group)
        api = session_api(sofia)
        for url, body in (
            (GRANTS, {"user": sofia.pk}),
            (GRANTS, {"user": svc.pk}),
            (GROUP_GRANTS, {"group": group.pk}),
        ):
            resp = api.post(url, {"model": ward.pk, "permission": "reidentify", **body}, format="json")
            assert (resp.status_code, resp.json()["code"]) == (403, "self_change_forbidden"), body
        assert not ModelUserGrant.objects.filter(permission__codename="reidentify", user__in=[sofia, svc]).exists()


class TestRoles:
    def test_break_glass_officer_cannot_grant_itself_and_no_role_reidentifies(self, eve, ward, admin_user):
        sofia = make_user("sofia", SECURITY_OFFICER)
        from apps.accounts.services import grant_emergency_access

        grant_emergency_access(user_id=eve.pk, role=SECURITY_OFFICER, minutes=30, reason="incident", actor=sofia)
        resp = session_api(eve).post(
            GRANTS, {"model": ward.pk, "permission": "reidentify", "user": eve.pk}, format="json"
        )
        assert resp.status_code == 403
        assert not originals(ask(token_for(eve)))
        # the superuser invokes every model, and re-identifies none without a grant
        assert not originals(ask(token_for(admin_user)))

    def test_a_demoted_holder_loses_it_with_the_role_that_invokes(self, alice):
        alice.groups.remove(Group.objects.get(name=ANALYST))
        alice.groups.add(Group.objects.get(name=GUEST))
        assert ask(token_for(alice)) is None

    def test_an_admin_cannot_grant_reidentify(self, ward, eve, staff_user):
        assert staff_user.groups.filter(name=ADMIN).exists()
        resp = session_api(staff_user).post(
            GRANTS, {"model": ward.pk, "permission": "reidentify", "user": eve.pk}, format="json"
        )
        assert resp.status_code == 403
        assert not originals(ask(token_for(eve)))


class TestExpiry:
    def test_an_expired_reidentify_grant_stops_in_a_warm_snapshot(self, ward, eve):
        expires = timezone.now() + timedelta(seconds=3)
        grant(eve, ward, "reidentify", expires_at=expires)
        plaintext = token_for(eve)
        warm = load_snapshot()  # taken while the grant is live; never reloaded
        holder = SnapshotHolder(refresh="always", loader=lambda: warm)
        assert originals(ask(plaintext, policy=holder))
        while timezone.now() <= expires:  # wait for the expiry itself, not a fixed time
            time.sleep(0.05)
        assert not originals(ask(plaintext, policy=holder))

    def test_an_expired_invoke_grant_takes_reidentify_with_it(self, ward, eve):
        """Revoking invoke revokes reidentify (grants.py); an invoke grant that EXPIRES must too,
        or a later, unrelated invoke grant brings back a re-identification nobody granted anew."""
        ModelUserGrant.objects.filter(user=eve).update(expires_at=timezone.now() - timedelta(seconds=1))
        grant(eve, ward, "reidentify")  # no expiry of its own
        assert ask(token_for(eve)) is None
        purge_expired_grants()
        expired = AuditEvent.objects.filter(
            event_type="access.grant.expire", details__permissions__contains=["reidentify"]
        )
        assert expired.count() == 1  # audited with the invoke grant whose expiry took it
        grant(eve, ward)  # months later: invoke only
        assert not originals(ask(token_for(eve)))
        assert not ModelUserGrant.objects.filter(user=eve, permission__codename="reidentify").exists()

    def test_an_invoke_grant_given_again_before_the_sweep_does_not_revive_it(self, ward, eve):
        ModelUserGrant.objects.filter(user=eve).update(expires_at=timezone.now() - timedelta(seconds=1))
        grant(eve, ward, "reidentify")
        grant(eve, ward)  # the sweep has not run yet
        assert not originals(ask(token_for(eve)))
        event = AuditEvent.objects.filter(event_type="access.grant.create").latest("pk")
        assert event.details["removed"] == ["reidentify"]

    def test_reidentify_granted_before_invoke_still_works(self, ward):
        """The order an officer grants in does not matter while neither grant has expired."""
        bo = make_user("bo", ANALYST)
        grant(bo, ward, "reidentify")
        grant(bo, ward)
        assert originals(ask(token_for(bo)))

    def test_revoking_view_takes_reidentify_too(self, alice, ward):
        revoke_model_access(model_id=ward.pk, permission="view_model", user_id=alice.pk, actor=None)
        grant(alice, ward)
        assert not originals(ask(token_for(alice)))
