"""The data plane's policy snapshot decides like the database path, at call time.

These tests read the snapshot inside the test's transaction (load_snapshot directly, or a holder
with refresh="always"); tests/gateway/dataplane/test_snapshot_invalidation.py runs a holder against
committed writes. tests/registry/test_policy_equivalence.py checks the snapshot against every other
form of the policy on random populations.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone

from apps.accounts.models import ApiToken, EmergencyAccess, Profile, digest_token
from apps.accounts.roles import ANALYST, AUDITOR, GUEST
from apps.accounts.services import TokenRejected, authenticate_bearer, revoke_token
from apps.compliance.models import ModelPolicy
from apps.core.errors import ServiceError
from apps.core.source import Source
from apps.deployments.models import Desired, Observed
from apps.gateway.dataplane.snapshot import Caller, Route, SnapshotHolder, TokenMiss, load_snapshot
from apps.gateway.routing import route as database_route
from apps.registry.models import Model
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory, UserFactory, token_for
from tests.gateway.helpers import deploy

pytestmark = pytest.mark.django_db

NOW = timezone.now


def bearer(plaintext: str) -> str:
    return f"Bearer {plaintext}"


def refusal(fn, *args, **kwargs) -> str | None:
    try:
        fn(*args, **kwargs)
    except ServiceError as err:
        return err.code
    return None


@pytest.fixture
def analyst(db):
    return make_user("ana", ANALYST)


@pytest.fixture
def triage(model_version):
    return model_version.model


@pytest.fixture
def served(model_version):
    return deploy(model_version, max_batch_size=4)


class TestAuthenticate:
    def test_a_valid_token_gives_the_caller_as_the_database_reads_it(self, analyst, staff_user):
        plaintext = token_for(analyst)
        token = ApiToken.objects.get(digest=digest_token(plaintext))

        caller = load_snapshot().authenticate(bearer(plaintext), NOW())

        user, db_token = authenticate_bearer(bearer(plaintext), lean=True)
        assert isinstance(caller, Caller)
        assert (caller.user_id, caller.username, caller.superuser) == (analyst.pk, "ana", False)
        assert caller.roles == tuple(user.audit_roles) == (ANALYST,)
        assert caller.token_id == token.pk
        assert (caller.token_issuer_id, caller.token_issuer) == (analyst.pk, "ana")  # issued for themselves
        base = Source(ip="192.0.2.7", user_agent="tritonclient")
        assert caller.source(base) == base.with_token(db_token)
        actor = caller.actor()
        assert (actor.pk, actor.get_username(), actor.is_superuser, actor.audit_roles) == (
            analyst.pk,
            "ana",
            False,
            ["analyst"],
        )

    def test_a_token_the_host_issued_names_the_host(self, analyst):
        from apps.accounts.services import issue_token

        _, plaintext = issue_token(user=analyst, name="ci", actor=None)
        caller = load_snapshot().authenticate(bearer(plaintext), NOW())
        assert (caller.token_issuer_id, caller.token_issuer) == (None, "host")
        assert caller.source(Source()).token_details() == {"token_issuer_id": None, "token_issuer": "host"}

    @pytest.mark.parametrize(
        ("header", "code"),
        [
            (None, "missing_token"),
            ("", "missing_token"),
            ("Basic abc", "malformed_authorization"),
            ("Bearer", "malformed_authorization"),
            ("Bearer a b", "malformed_authorization"),
        ],
    )
    def test_headers_refused_before_any_lookup(self, header, code):
        assert refusal(load_snapshot().authenticate, header, NOW()) == code

    def test_an_unknown_token_is_a_miss_whose_code_is_invalid_token(self, analyst):
        snapshot = load_snapshot()
        with pytest.raises(TokenMiss) as caught:
            snapshot.authenticate("Bearer svt_nobody", NOW())
        assert isinstance(caught.value, TokenRejected)
        assert (caught.value.code, caught.value.status_code) == ("invalid_token", 401)

    def test_revoked_and_expired_tokens_keep_their_codes(self, analyst):
        revoked, expired = token_for(analyst), token_for(analyst)
        revoke_token(token_id=ApiToken.objects.get(digest=digest_token(revoked)).pk, actor=None)
        ApiToken.objects.filter(digest=digest_token(expired)).update(expires_at=NOW() - timedelta(seconds=1))

        snapshot = load_snapshot()

        assert refusal(snapshot.authenticate, bearer(revoked), NOW()) == "token_revoked"
        assert refusal(snapshot.authenticate, bearer(expired), NOW()) == "token_expired"

    def test_a_token_that_expires_after_the_read_is_refused_on_time(self, analyst):
        plaintext = token_for(analyst)
        ends = NOW() + timedelta(minutes=5)
        ApiToken.objects.filter(digest=digest_token(plaintext)).update(expires_at=ends)
        snapshot = load_snapshot()

        assert refusal(snapshot.authenticate, bearer(plaintext), ends - timedelta(seconds=1)) is None
        assert refusal(snapshot.authenticate, bearer(plaintext), ends) == "token_expired"

    def test_inactive_user_and_expired_password(self, analyst):
        plaintext = token_for(analyst)
        other = make_user("bob", ANALYST)
        old = token_for(other)
        Profile.objects.filter(user=other).update(password_changed_at=NOW() - settings.PASSWORD_MAX_AGE - timedelta(1))
        analyst.is_active = False
        analyst.save(update_fields=["is_active"])

        snapshot = load_snapshot()

        assert refusal(snapshot.authenticate, bearer(plaintext), NOW()) == "user_inactive"
        assert refusal(snapshot.authenticate, bearer(old), NOW()) == "password_expired"

    def test_a_privileged_token_is_idle_after_the_session_idle_timeout(self, auditor_user):
        plaintext = token_for(auditor_user)
        snapshot = load_snapshot()
        token_id = ApiToken.objects.get(digest=digest_token(plaintext)).pk
        later = NOW() + settings.SESSION_IDLE_TIMEOUT + timedelta(seconds=5)

        assert refusal(snapshot.authenticate, bearer(plaintext), later) == "token_idle"
        # Used (in this process) a minute before: not idle, though the database has not heard of it.
        used = {token_id: later - timedelta(minutes=1)}
        assert refusal(snapshot.authenticate, bearer(plaintext), later, used) is None

    def test_break_glass_counts_while_it_lasts(self, analyst):
        plaintext = token_for(analyst)
        start = NOW()
        EmergencyAccess.objects.create(
            user=analyst, role=AUDITOR, reason="drill", granted_at=start, expires_at=start + timedelta(minutes=10)
        )
        snapshot = load_snapshot()

        during = snapshot.authenticate(bearer(plaintext), start + timedelta(minutes=1))
        after = snapshot.authenticate(bearer(plaintext), start + timedelta(minutes=10))

        assert during.roles == (ANALYST, AUDITOR) and AUDITOR in during.principal.roles_now
        assert during.principal.roles == frozenset({ANALYST})  # standing roles: break-glass never invokes
        assert after.roles == (ANALYST,) and after.principal.roles_now == frozenset({ANALYST})


class TestRoute:
    def test_routes_carry_what_the_pipeline_forwards_with(self, analyst, triage, served):
        ModelPolicy.objects.create(model=triage, phi=True, deid_mode="pseudonymise")
        grant(analyst, triage)
        plaintext = token_for(analyst)
        snapshot = load_snapshot()
        caller = snapshot.authenticate(bearer(plaintext), NOW())

        (route,) = snapshot.route(caller, "triage", None, invoke=True, now=NOW())

        user, token = authenticate_bearer(bearer(plaintext), lean=True)
        (dep,) = database_route(user, token, "triage", invoke=True)
        assert route == Route.of(dep, "triage")
        assert (route.deployment_id, route.model_id, route.model) == (served.pk, triage.pk, "triage")
        assert (route.version, route.server, route.http_url) == (1, served.server.name, served.server.http_url)
        assert route.max_batch_size == 4 and route.deid_mode == "pseudonymise"
        assert route.signature == served.model_version.signature

    def test_refusals_have_the_database_paths_codes(self, analyst, guest_user, triage, served):
        grant(analyst, triage, "view_model")
        other = Model.objects.create(name="idle")
        grant(analyst, other)
        Model.objects.create(name="unseen")
        read_only = token_for(analyst, scopes=["read"])
        full = token_for(analyst)
        guest = token_for(guest_user)
        snapshot = load_snapshot()
        now = NOW()

        def code(plaintext, name, invoke, version=None):
            caller = snapshot.authenticate(bearer(plaintext), now)
            return refusal(snapshot.route, caller, name, version, invoke=invoke, now=now)

        assert code(read_only, "triage", True) == "insufficient_scope"
        assert code(read_only, "nothing-here", True) == "insufficient_scope"  # scope first, as the database path
        assert code(read_only, "triage", False) is None  # metadata: read scope and a view grant
        assert code(full, "nothing-here", True) == "model_not_found"
        assert code(full, "idle", True) == "model_not_deployed"
        assert code(full, "triage", True) == "invoke_not_permitted"  # a view grant: seen, not invoked
        assert code(full, "unseen", False) == "model_not_found"  # no grant, no catalogue role
        assert code(guest, "triage", True) == "invoke_not_permitted"  # guests list the catalogue
        assert code(full, "triage", False, version="1") is None
        assert code(full, "triage", False, version="2") == "model_version_not_deployed"

    def test_a_version_chooses_among_the_servers_serving_it(
        self, analyst, triage, model_version, staff_user, onnx_bytes
    ):

        v2 = ModelVersionFactory(model_name="triage", data=onnx_bytes, actor=staff_user)
        one, two = deploy(model_version), deploy(v2)
        grant(analyst, triage)
        plaintext = token_for(analyst)
        snapshot = load_snapshot()
        caller = snapshot.authenticate(bearer(plaintext), NOW())

        assert {r.deployment_id for r in snapshot.route(caller, "triage", None, invoke=True, now=NOW())} == {
            one.pk,
            two.pk,
        }
        assert [r.deployment_id for r in snapshot.route(caller, "triage", "2", invoke=True, now=NOW())] == [two.pk]

    def test_only_deployments_desired_and_observed_active_are_routes(self, analyst, triage, model_version):
        grant(analyst, triage)
        deploy(model_version, observed_state=Observed.LOADING)
        deploy(model_version, desired_state=Desired.INACTIVE, observed_state=Observed.ACTIVE)
        plaintext = token_for(analyst)
        snapshot = load_snapshot()
        caller = snapshot.authenticate(bearer(plaintext), NOW())

        assert refusal(snapshot.route, caller, "triage", None, invoke=True, now=NOW()) == "model_not_deployed"

    def test_grants_are_judged_at_call_time(self, analyst, triage, served):
        ends = NOW() + timedelta(minutes=5)
        grant(analyst, triage, expires_at=ends)
        plaintext = token_for(analyst)
        snapshot = load_snapshot()
        caller = snapshot.authenticate(bearer(plaintext), NOW())

        assert snapshot.route(caller, "triage", None, invoke=True, now=ends - timedelta(seconds=1))
        assert refusal(snapshot.route, caller, "triage", None, invoke=True, now=ends) == "model_not_found"

    def test_a_restricted_token_reaches_only_its_models(self, analyst, triage, served):
        other = Model.objects.create(name="other")
        grant(analyst, triage)
        grant(analyst, other)
        only_other = token_for(analyst, model_ids=[other.pk])
        snapshot = load_snapshot()
        caller = snapshot.authenticate(bearer(only_other), NOW())

        assert refusal(snapshot.route, caller, "triage", None, invoke=True, now=NOW()) == "model_not_found"
        assert refusal(snapshot.route, caller, "other", None, invoke=True, now=NOW()) == "model_not_deployed"


class TestHolder:
    def test_always_reads_the_transactions_own_writes(self, analyst, triage, served):
        holder = SnapshotHolder(refresh="always")
        plaintext = token_for(analyst)
        grant(analyst, triage)

        caller = async_to_sync(holder.authenticate)(bearer(plaintext), "192.0.2.1")
        routes = async_to_sync(holder.route)(caller, "triage", None, invoke=True)
        assert [r.deployment_id for r in routes] == [served.pk]

        revoke_token(token_id=caller.token_id, actor=None)
        with pytest.raises(TokenRejected) as caught:
            async_to_sync(holder.authenticate)(bearer(plaintext))
        assert caught.value.code == "token_revoked"

    def test_a_token_issued_after_the_read_works_at_once_through_the_database(self, analyst, triage, served):
        grant(analyst, triage)
        old = load_snapshot()
        holder = SnapshotHolder(refresh="always", loader=lambda: old)  # never sees the new token
        plaintext = token_for(analyst)

        with pytest.raises(TokenMiss):
            async_to_sync(holder.authenticate)(bearer(plaintext))
        caller = async_to_sync(holder.authenticate_miss)(bearer(plaintext), "192.0.2.1")
        routes = async_to_sync(holder.route)(caller, "triage", None, invoke=True)

        fresh = load_snapshot()
        expected = fresh.route(fresh.authenticate(bearer(plaintext), NOW()), "triage", None, invoke=True, now=NOW())
        assert caller.via_database and caller.roles == (ANALYST,) and caller.token_issuer == "ana"
        assert list(routes) == list(expected)
        assert refusal(async_to_sync(holder.route), caller, "triage", "7", invoke=True) == "model_version_not_deployed"
        assert refusal(async_to_sync(holder.authenticate_miss), "Bearer svt_nobody") == "invalid_token"

    def test_last_use_is_written_in_batches_at_most_once_a_minute(self, analyst):
        holder = SnapshotHolder(refresh="always")
        first, second = token_for(analyst), token_for(analyst)
        t0 = NOW()
        a = async_to_sync(holder.authenticate)(bearer(first), "192.0.2.1", t0)
        b = async_to_sync(holder.authenticate)(bearer(second), "192.0.2.2", t0)

        def last_used():
            return dict(ApiToken.objects.filter(pk__in=[a.token_id, b.token_id]).values_list("pk", "last_used_at"))

        assert last_used() == {a.token_id: None, b.token_id: None}  # nothing written on the call itself
        assert async_to_sync(holder.flush)() == 2
        assert last_used() == {a.token_id: t0, b.token_id: t0}
        assert ApiToken.objects.get(pk=b.token_id).last_used_ip == "192.0.2.2"

        holder.touch(a.token_id, "192.0.2.9", t0 + timedelta(seconds=30))
        assert async_to_sync(holder.flush)() == 0  # within the minute: memory only
        holder.touch(a.token_id, "192.0.2.9", t0 + timedelta(seconds=61))
        holder.touch(a.token_id, "192.0.2.10", t0 + timedelta(seconds=62))
        assert async_to_sync(holder.flush)() == 1
        assert last_used()[a.token_id] == t0 + timedelta(seconds=62)
        assert ApiToken.objects.get(pk=a.token_id).last_used_ip == "192.0.2.10"

    def test_the_idle_limit_sees_uses_not_yet_written(self, auditor_user):
        holder = SnapshotHolder(refresh="always")
        plaintext = token_for(auditor_user)
        t0 = NOW()
        async_to_sync(holder.authenticate)(bearer(plaintext), None, t0)
        idle = settings.SESSION_IDLE_TIMEOUT
        # Used again near the end of each idle period, never flushed: still accepted long after.
        for k in range(1, 4):
            async_to_sync(holder.authenticate)(bearer(plaintext), None, t0 + k * (idle - timedelta(seconds=5)))
        assert ApiToken.objects.get(digest=digest_token(plaintext)).last_used_at is None
        gone = t0 + 3 * (idle - timedelta(seconds=5)) + idle + timedelta(seconds=1)
        assert refusal(async_to_sync(holder.authenticate), bearer(plaintext), None, gone) == "token_idle"

    def test_no_snapshot_is_policy_unavailable(self, analyst):
        holder = SnapshotHolder(refresh="poll")  # not started
        with pytest.raises(ServiceError) as caught:
            holder.snapshot  # noqa: B018
        assert (caught.value.code, caught.value.status_code) == ("policy_unavailable", 503)


def test_a_snapshot_reads_in_a_handful_of_statements_whatever_the_population(
    analyst, triage, served, django_assert_max_num_queries
):
    tokens = []
    for i in range(30):
        user = UserFactory(username=f"pop{i}")
        user.groups.add(*analyst.groups.all())
        grant(user, triage)
        tokens.append(token_for(user))
    with django_assert_max_num_queries(12):  # eleven reads, plus the transaction's isolation level
        snapshot = load_snapshot()
    assert all(snapshot.knows(t) for t in tokens)


@pytest.mark.parametrize("role", [GUEST])
def test_guests_list_but_cannot_invoke(role, triage, served):
    user = make_user("gus", role)
    plaintext = token_for(user)
    snapshot = load_snapshot()
    caller = snapshot.authenticate(bearer(plaintext), NOW())
    assert refusal(snapshot.route, caller, "triage", None, invoke=True, now=NOW()) == "invoke_not_permitted"
