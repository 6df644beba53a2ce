"""Every form of the model access policy gives the same answer for every (token, model).

The policy is defined once (apps/registry/access.py); three forms gather its facts:
- the gateway: the token lookup as fixed SQL (authenticate_bearer(lean=True)) and the route
  statement (apps.gateway.routing.route), answering with deployments or a refusal code;
- the control plane: the ORM token lookup and the selectors (models_visible_to,
  models_invokable_by, catalogue_visible_to, restricted_to_token) plus compliance's deid_mode;
- the data plane: the in-memory policy snapshot (apps.gateway.dataplane.snapshot.load_snapshot),
  authenticating and routing from memory (PolicySnapshot.authenticate / route);
- the reference here: the drawn population itself, in memory, evaluated by the same functions.

Hypothesis draws populations of users (active or not, superusers, service accounts, old
passwords), standing and break-glass roles (active, expired, revoked, not yet started), extra
groups, grants to users and groups (view/invoke; expiry none, past, future), tokens (scopes,
restricted to random models, expired, revoked, old, idle) and models (deployments active or not,
policies with de-identification modes and PHI, profile attachments implying PHI). Each example is
written with bulk_create and rolled back (hypothesis' TestCase: one transaction per example).

It runs on PostgreSQL with the suite and on SQLite (a second run in `make test`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase

from apps.accounts.models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Profile, digest_token
from apps.accounts.roles import ROLES
from apps.accounts.services import AccountFacts, TokenRejected, authenticate_bearer, token_refusal
from apps.compliance import selectors as compliance
from apps.compliance.models import DeidMode, ModelPolicy, ProfileAttachment
from apps.core.errors import ServiceError
from apps.deployments.models import Deployment, Desired, InferenceServer, Observed, ReplicaSet
from apps.gateway.dataplane.snapshot import load_snapshot, traffic_share
from apps.gateway.routing import route
from apps.registry import access
from apps.registry.models import Model, ModelVersion
from apps.registry.selectors import catalogue_visible_to, models_invokable_by, models_visible_to, restricted_to_token

EXTRA_GROUPS = ("team-a", "team-b")
WHEN = ("none", "past", "future")
GRANTS = [None, None] + [(c, w) for c in ("view_model", "invoke_model") for w in WHEN]
GRANTEES = ("analyst", "guest", "admin", "team-a")
SCOPES = [["invoke"], ["invoke", "read"], ["read"], ["invoke", "read", "manage"], ["manage"], []]
STATES = [(Desired.ACTIVE, Observed.ACTIVE), (Desired.ACTIVE, Observed.PENDING), (Desired.INACTIVE, Observed.ACTIVE)]

# --- the population -------------------------------------------------------------------------------


@dataclass
class MUser:
    active: bool
    superuser: bool
    profile: str  # none | person | service
    old_password: bool
    roles: frozenset[str]
    groups: frozenset[str]
    emergency: list[tuple[str, str]]  # (role, active | expired | revoked | future)


@dataclass
class MToken:
    user: int
    scopes: list[str]
    restricted: bool
    models: frozenset[int]
    state: str  # valid | expired | revoked
    old: bool  # created long ago (privileged tokens live a session at most)
    last_used: str  # never | recent | stale
    plaintext: str = field(default_factory=lambda: "svt_" + secrets.token_urlsafe(16))


@dataclass
class MModel:
    deployments: list[int]  # indexes into STATES
    policy: tuple[str, bool] | None  # (deid mode, phi)
    profiles: frozenset[str]


@dataclass
class World:
    models: list[MModel]
    installation_hipaa: bool
    users: list[MUser]
    user_grants: list[tuple[int, int, str, str]]  # (user, model, codename, when)
    group_grants: list[tuple[str, int, str, str]]  # (group, model, codename, when)
    tokens: list[MToken]


@st.composite
def worlds(draw) -> World:
    n_models = draw(st.integers(1, 3))
    models = [
        MModel(
            deployments=draw(st.sampled_from([[0], [0, 0], [0, 1], [1], [2], []])),
            policy=draw(st.none() | st.tuples(st.sampled_from(DeidMode.values), st.booleans())),
            profiles=draw(st.frozensets(st.sampled_from(["hipaa", "dengbao-l3"]))),
        )
        for _ in range(n_models)
    ]
    users = draw(
        st.lists(
            st.builds(
                MUser,
                active=st.sampled_from([True] * 5 + [False]),
                superuser=st.sampled_from([False, False, False, True]),
                profile=st.sampled_from(["person", "service", "none"]),
                old_password=st.sampled_from([False] * 5 + [True]),
                roles=st.frozensets(st.sampled_from(ROLES + ("analyst",) * 3), max_size=2),
                groups=st.frozensets(st.sampled_from(EXTRA_GROUPS)),
                emergency=st.lists(
                    st.tuples(st.sampled_from(ROLES), st.sampled_from(["active", "expired", "revoked", "future"])),
                    max_size=1,
                ),
            ),
            min_size=1,
            max_size=3,
        )
    )
    model_ix = st.integers(0, n_models - 1)
    # Dense: every (user, model) and (group, model) pair draws a grant or none, so that most
    # examples hold live, expired and group grants at once.
    user_grants = draw(
        st.lists(st.sampled_from(GRANTS), min_size=len(users) * n_models, max_size=len(users) * n_models)
    )
    group_grants = draw(
        st.lists(st.sampled_from(GRANTS), min_size=len(GRANTEES) * n_models, max_size=len(GRANTEES) * n_models)
    )
    tokens = [
        draw(
            st.builds(
                MToken,
                user=st.just(u),
                scopes=st.sampled_from(SCOPES),
                restricted=st.booleans(),
                models=st.frozensets(model_ix),
                state=st.sampled_from(["valid"] * 6 + ["expired", "revoked"]),
                old=st.sampled_from([False] * 3 + [True]),
                last_used=st.sampled_from(["never", "recent", "recent", "stale"]),
            )
        )
        for u in range(len(users))
        for _ in range(draw(st.integers(1, 2)))
    ]
    return World(
        models=models,
        installation_hipaa=draw(st.booleans()),
        users=users,
        user_grants=[(k // n_models, k % n_models, *g) for k, g in enumerate(user_grants) if g],
        group_grants=[(GRANTEES[k // n_models], k % n_models, *g) for k, g in enumerate(group_grants) if g],
        tokens=tokens,
    )


class Rows:
    """The world written to the database; ids of what was created."""

    def __init__(self, world: World, now):
        self.world, self.now = world, now
        day = timedelta(days=1)
        self.when = {"none": None, "past": now - day, "future": now + day}
        self.user_ids = self._users()
        self.model_ids, self.deployments = self._models()
        self._grants()
        self._tokens()

    def _users(self) -> list[int]:
        User = get_user_model()
        users = User.objects.bulk_create(
            User(username=f"u{i}", password="!", is_active=u.active, is_superuser=u.superuser)
            for i, u in enumerate(self.world.users)
        )
        ids = [u.pk for u in users]
        Profile.objects.bulk_create(
            Profile(
                user_id=ids[i],
                is_service_account=u.profile == "service",
                password_changed_at=self.now - timedelta(days=200 if u.old_password else 1),
            )
            for i, u in enumerate(self.world.users)
            if u.profile != "none"
        )
        for name in EXTRA_GROUPS:
            Group.objects.get_or_create(name=name)
        self.groups = dict(Group.objects.filter(name__in=ROLES + EXTRA_GROUPS).values_list("name", "pk"))
        Through = User.groups.through
        Through.objects.bulk_create(
            Through(user_id=ids[i], group_id=self.groups[g])
            for i, u in enumerate(self.world.users)
            for g in u.roles | u.groups
        )
        hour = timedelta(hours=1)
        spans = {
            "active": (self.now - hour, self.now + hour, None),
            "expired": (self.now - 2 * hour, self.now - hour, None),
            "revoked": (self.now - hour, self.now + hour, self.now - hour / 2),
            "future": (self.now + hour, self.now + 2 * hour, None),
        }
        EmergencyAccess.objects.bulk_create(
            EmergencyAccess(user_id=ids[i], role=role, reason="drill", granted_at=a, expires_at=b, revoked_at=r)
            for i, u in enumerate(self.world.users)
            for role, state in u.emergency
            for a, b, r in [spans[state]]
        )
        return ids

    def _models(self):
        models = Model.objects.bulk_create(Model(name=f"m{i}") for i in range(len(self.world.models)))
        ids = [m.pk for m in models]
        versions = ModelVersion.objects.bulk_create(
            ModelVersion(model_id=pk, version=1, sha256="0" * 64, size_bytes=0, signature={"inputs": [], "outputs": []})
            for pk in ids
        )
        servers = InferenceServer.objects.bulk_create(
            InferenceServer(name=f"s{i}", http_url=f"http://127.0.0.1:{9000 + i}") for i in range(2)
        )
        # every other model's version in a replica set with a share of 40 %: the forms carry it alike
        sets = {
            i: ReplicaSet.objects.create(model_id=ids[i], model_version=versions[i], traffic_weight=40)
            for i in range(1, len(ids), 2)
        }
        deployments = Deployment.objects.bulk_create(
            Deployment(
                model_id=ids[i],
                model_version=versions[i],
                replica_set=sets.get(i),
                server=servers[j % 2],
                desired_state=STATES[state][0],
                observed_state=STATES[state][1],
            )
            for i, m in enumerate(self.world.models)
            for j, state in enumerate(m.deployments)
        )
        ModelPolicy.objects.bulk_create(
            ModelPolicy(model_id=ids[i], deid_mode=m.policy[0], phi=m.policy[1])
            for i, m in enumerate(self.world.models)
            if m.policy
        )
        ProfileAttachment.objects.bulk_create(
            [ProfileAttachment(profile=p, model_id=ids[i]) for i, m in enumerate(self.world.models) for p in m.profiles]
            + ([ProfileAttachment(profile="hipaa", model=None)] if self.world.installation_hipaa else [])
        )
        return ids, deployments

    def _grants(self) -> None:
        perms = dict(
            Permission.objects.filter(content_type__app_label="registry", codename__in=access._SEE).values_list(
                "codename", "pk"
            )
        )
        # One row per (grantee, permission, model), as the grant service keeps it.
        users = {(u, m, c): w for u, m, c, w in self.world.user_grants}
        groups = {(g, m, c): w for g, m, c, w in self.world.group_grants}
        self.world.user_grants = [(u, m, c, w) for (u, m, c), w in users.items()]
        self.world.group_grants = [(g, m, c, w) for (g, m, c), w in groups.items()]
        ModelUserGrant.objects.bulk_create(
            ModelUserGrant(
                user_id=self.user_ids[u],
                permission_id=perms[c],
                content_object_id=self.model_ids[m],
                expires_at=self.when[w],
            )
            for u, m, c, w in self.world.user_grants
        )
        ModelGroupGrant.objects.bulk_create(
            ModelGroupGrant(
                group_id=self.groups[g],
                permission_id=perms[c],
                content_object_id=self.model_ids[m],
                expires_at=self.when[w],
            )
            for g, m, c, w in self.world.group_grants
        )

    def token_row(self, t: MToken) -> ApiToken:
        created = self.now - (timedelta(days=2) if t.old else timedelta(minutes=5))
        last_used = {"never": None, "recent": self.now - timedelta(minutes=2), "stale": self.now - timedelta(hours=1)}
        return ApiToken(
            user_id=self.user_ids[t.user],
            name="t",
            digest=digest_token(t.plaintext),
            hint=t.plaintext[:10],
            scopes=t.scopes,
            restricted=t.restricted,
            created_at=created,
            expires_at=self.now + (timedelta(days=-1) if t.state == "expired" else timedelta(days=30)),
            revoked_at=self.now - timedelta(minutes=1) if t.state == "revoked" else None,
            last_used_at=last_used[t.last_used],
        )

    def _tokens(self) -> None:
        tokens = ApiToken.objects.bulk_create(self.token_row(t) for t in self.world.tokens)
        self.token_ids = [t.pk for t in tokens]
        Through = ApiToken.allowed_models.through
        Through.objects.bulk_create(
            Through(apitoken_id=tokens[i].pk, model_id=self.model_ids[m])
            for i, t in enumerate(self.world.tokens)
            for m in t.models
        )


# --- the reference: the drawn rows, in memory, through the same definition --------------------------


class Reference:
    def __init__(self, rows: Rows):
        self.rows, self.world, self.now = rows, rows.world, rows.now

    def principal(self, i: int) -> access.Principal:
        u = self.world.users[i]
        live = {r for r, state in u.emergency if state == "active"}
        return access.Principal(
            user_id=self.rows.user_ids[i],
            active=u.active,
            superuser=u.superuser,
            service_account=u.profile == "service",
            roles=frozenset(u.roles),
            roles_now=frozenset(u.roles | live),
        )

    def grants(self, i: int) -> list[access.Grant]:
        u, ids = self.world.users[i], self.rows.model_ids
        mine = [access.Grant(ids[m], c, self.rows.when[w], False) for g, m, c, w in self.world.user_grants if g == i]
        ours = [
            access.Grant(ids[m], c, self.rows.when[w], True)
            for g, m, c, w in self.world.group_grants
            if g in u.roles | u.groups
        ]
        return mine + ours

    def refusal(self, t: MToken) -> str | None:
        u, p = self.world.users[t.user], self.principal(t.user)
        row = self.rows.token_row(t)
        row.user = get_user_model()(id=row.user_id, is_active=u.active, is_superuser=u.superuser)
        facts = AccountFacts(
            roles=p.roles_now,
            standing_roles=p.roles,
            service_account=p.service_account,
            password_changed_at=None
            if u.profile == "none"
            else self.now - timedelta(days=200 if u.old_password else 1),
        )
        refusal = token_refusal(row, timezone.now(), facts)
        return refusal.code if refusal else None

    def token(self, t: MToken) -> access.Token:
        ids = frozenset(self.rows.model_ids[m] for m in t.models)
        return access.Token(scopes=frozenset(t.scopes), restricted=t.restricted, model_ids=ids)

    def deid(self, m: int) -> str:
        model = self.world.models[m]
        mode, marked = model.policy if model.policy else (None, False)
        return access.deid_mode(mode, marked or "hipaa" in model.profiles)

    def active_deployments(self, m: int) -> list[int]:
        model_id = self.rows.model_ids[m]
        return sorted(
            d.pk
            for d in self.rows.deployments
            if d.model_id == model_id and (d.desired_state, d.observed_state) == (Desired.ACTIVE, Observed.ACTIVE)
        )


def gateway_outcome(scope_ok: bool, allowed: bool, listed: bool, deployments: list[int]):
    """What the gateway must answer, from the policy's answers (apps/gateway/routing.py `route`)."""
    if not scope_ok:
        return "insufficient_scope"
    if allowed:
        return tuple(deployments) if deployments else "model_not_deployed"
    return "invoke_not_permitted" if listed else "model_not_found"


# --- the forms --------------------------------------------------------------------------------------


def authenticate(plaintext: str, *, lean: bool):
    try:
        return authenticate_bearer(f"Bearer {plaintext}", lean=lean), None
    except TokenRejected as err:
        return None, err.code


def gateway_answer(user, token, name: str, *, invoke: bool):
    try:
        deps = route(user, token, name, invoke=invoke)
    except ServiceError as err:
        return err.code, (), ()
    return tuple(sorted(d.pk for d in deps)), tuple(sorted({d.deid_mode for d in deps})), weights(deps)


def weights(served) -> tuple[int, ...]:
    """Each route's version weight (apps/gateway/dataplane/snapshot.py traffic_share), by deployment id."""
    return tuple(
        traffic_share(r) if isinstance(r, Deployment) else r.weight
        for r in sorted(served, key=lambda r: r.pk if isinstance(r, Deployment) else r.deployment_id)
    )


def snapshot_answer(snapshot, caller, name: str, *, invoke: bool):
    try:
        routes = snapshot.route(caller, name, None, invoke=invoke, now=timezone.now())
    except ServiceError as err:
        return err.code, (), ()
    return tuple(sorted(r.deployment_id for r in routes)), tuple(sorted({r.deid_mode for r in routes})), weights(routes)


def ids(qs) -> set[int]:
    return set(qs.values_list("pk", flat=True))


class TestEveryFormAgrees(TestCase):
    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(world=worlds())
    def test_every_token_and_model(self, world: World):
        rows = Rows(world, timezone.now())
        ref = Reference(rows)
        for m in range(len(world.models)):
            assert compliance.deid_mode(rows.model_ids[m]) == ref.deid(m)
        for i in range(len(world.users)):
            self.check_session(rows, ref, i)
        snapshot = load_snapshot()  # read inside the example's transaction, like every other form
        for t in world.tokens:
            self.check_token(rows, ref, t, snapshot)

    def check_session(self, rows: Rows, ref: Reference, i: int) -> None:
        """A portal session (no token): the selectors against the reference."""
        user = get_user_model().objects.get(pk=rows.user_ids[i])
        p, grants, now = ref.principal(i), ref.grants(i), timezone.now()
        for form, decision in (
            (models_visible_to, access.visible),
            (models_invokable_by, access.invokable),
            (catalogue_visible_to, access.catalogue),
        ):
            expected = {m for m in rows.model_ids if m in decision(p, access.SESSION, grants, now)}
            assert ids(form(user)) == expected, (form.__name__, i)

    def check_token(self, rows: Rows, ref: Reference, t: MToken, snapshot) -> None:
        expected_refusal = ref.refusal(t)
        lean, lean_refusal = authenticate(t.plaintext, lean=True)
        orm, orm_refusal = authenticate(t.plaintext, lean=False)
        try:
            caller, snapshot_refusal = snapshot.authenticate(f"Bearer {t.plaintext}", timezone.now()), None
        except TokenRejected as err:
            caller, snapshot_refusal = None, err.code
        assert lean_refusal == orm_refusal == snapshot_refusal == expected_refusal, t
        if expected_refusal:
            return
        p, tok, grants, now = ref.principal(t.user), ref.token(t), ref.grants(t.user), timezone.now()
        answers = {
            "visible": access.visible(p, tok, grants, now),
            "invokable": access.invokable(p, tok, grants, now),
            "catalogue": access.catalogue(p, tok, grants, now),
        }
        # The control plane, with the caller as its token lookup read it (sessions: check_session).
        for name, form in (
            ("visible", models_visible_to),
            ("invokable", models_invokable_by),
            ("catalogue", catalogue_visible_to),
        ):
            expected = {m for m in rows.model_ids if m in answers[name]}
            assert ids(form(orm[0], orm[1])) == expected, (name, t)
        reach = access.token_reach(tok)
        assert ids(restricted_to_token(Model.objects.all(), orm[1])) == {m for m in rows.model_ids if m in reach}
        # The gateway: every model, for inference and for metadata.
        user, token = lean
        for m, model_id in enumerate(rows.model_ids):
            for invoke, decision in ((True, "invokable"), (False, "visible")):
                deps = ref.active_deployments(m)
                expected = gateway_outcome(
                    access.gateway_scope_allows(tok, invoke=invoke),
                    model_id in answers[decision],
                    model_id in answers["catalogue"],
                    deps,
                )
                got, modes, shares = gateway_answer(user, token, f"m{m}", invoke=invoke)
                event(f"{'infer' if invoke else 'metadata'}: {got if isinstance(got, str) else 'served'}")
                assert got == expected, (m, invoke, t)
                if isinstance(got, tuple):
                    assert modes == (ref.deid(m),)
                    assert shares == (40 if m % 2 else 100,) * len(got)
                # The data plane, from memory: the same answer, de-identification mode and version weights.
                assert snapshot_answer(snapshot, caller, f"m{m}", invoke=invoke) == (got, modes, shares), (m, invoke, t)
        for invoke in (True, False):  # a name no model has: the scope first, then model_not_found
            assert snapshot_answer(snapshot, caller, "absent", invoke=invoke) == gateway_answer(
                user, token, "absent", invoke=invoke
            )


def test_deid_mode_names_match_compliance():
    """The access policy names two de-identification modes it cannot import (compliance is above it)."""
    assert (access.DEID_OFF, access.DEID_REDACT) == (DeidMode.OFF, DeidMode.REDACT)


def test_sessions_last_no_longer_than_the_reference_assumes():
    """The reference's token ages straddle the privileged limits: 5 minutes < idle < 1 hour, 2 days > session."""
    assert timedelta(minutes=2) < django_settings.SESSION_IDLE_TIMEOUT < timedelta(hours=1)
    assert timedelta(days=2) > django_settings.SESSION_ABSOLUTE_TIMEOUT
    assert timedelta(days=1) < django_settings.PASSWORD_MAX_AGE < timedelta(days=200)
