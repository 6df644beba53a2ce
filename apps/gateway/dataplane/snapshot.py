"""The data plane's policy snapshot: every fact the gateway decides on, in memory, and the holder
that keeps it current.

`load_snapshot()` reads, in a handful of statements (no query per row): every API token by its
SHA-256 digest (apps.accounts.models.digest_token), the users those tokens belong to (active,
superuser, service account, password age, standing roles, break-glass roles with their spans), the
grants those users hold (by name and through groups, with expiry), and every model by name with its
ACTIVE deployments (desired and observed: version, server, batching, signature) and its
de-identification mode (apps.compliance.selectors.deid_policy_columns → apps.registry access
deid_mode). A token already revoked or expired when the snapshot is read is kept as the refusal
token_refusal gave it (both are for ever), so refusals keep their codes without holding the row.

Decisions are taken at call time, with the caller's `now`, by the same functions as the database
path: token_refusal (revoked, expired, inactive, password expired, a privileged token's absolute
and idle limits — idle counted from the last use this process saw, not only the one written to the
database), and apps.gateway.routing.decide (the access policy's invokable / visible / catalogue).
Break-glass roles are evaluated at `now` (EmergencyAccess.is_active), so an expired one stops
counting on time without a rebuild.

`SnapshotHolder` keeps one snapshot current in an asyncio process: it rebuilds in a thread when
told (PostgreSQL LISTEN on `sovereign_policy`; on SQLite by polling gateway.PolicyEpoch every
250 ms — see invalidation.py for who tells), at least every SOVEREIGN_POLICY_MAX_AGE seconds, and
swaps the new snapshot in whole. A failed rebuild keeps the old snapshot and retries; past
SOVEREIGN_POLICY_HARD_LIMIT seconds without a successful rebuild every call is refused with 503
`policy_unavailable`. A token the snapshot does not know (issued after the last rebuild) is looked
up in the database (`authenticate_miss`), so a new token works at once; the pipeline charges such
misses to the caller's address failure budget (apps.core.throttling), as it does refusals, so that
random tokens cannot turn into a database query each.

Writes: the last use of each token is kept in memory (`touch`) and written by `flush()` in one
batched statement, at most once per LAST_USED_RESOLUTION per token, like authenticate_bearer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction
from django.utils import timezone

from apps.accounts.models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Profile, digest_token
from apps.accounts.roles import ROLES
from apps.accounts.services import (
    LAST_USED_RESOLUTION,
    AccountFacts,
    TokenRejected,
    authenticate_bearer,
    bearer_value,
    token_refusal,
)
from apps.compliance.selectors import (
    answer_screen_column,
    answer_screen_mode,
    deid_policy_columns,
    numeric_inputs_column,
    numeric_inputs_refused,
)
from apps.core.errors import ServiceError, _
from apps.core.rawsql import aware
from apps.core.source import Source
from apps.deployments.models import Deployment, Desired, InferenceServer, Observed, ReplicaSet, triton_model_name
from apps.deployments.selectors import CREDENTIAL_HEADER, credentials_for
from apps.registry.models import Model, ModelVersion
from apps.registry.selectors import Grant, Principal, Token, deid_mode, may_reidentify

from .. import routing
from ..chatpolicy import load_chat_policies
from ..quota import QuotaBook, load_quotas
from .invalidation import CHANNEL, current_epoch

logger = logging.getLogger(__name__)

_ROLES = frozenset(ROLES)
_EMPTY: Mapping = {}


class TokenMiss(TokenRejected):
    """The token is not in the snapshot: unknown, or issued after the last rebuild. Its code is
    `invalid_token` (what it is if the database does not know it either); the pipeline charges the
    address failure budget and asks `SnapshotHolder.authenticate_miss`."""

    def __init__(self):
        super().__init__("invalid_token", _("the token is not valid"))


def policy_unavailable() -> ServiceError:
    return ServiceError(
        "policy_unavailable",
        _(
            "the gateway cannot confirm its access policy is current, so it refuses every call; "
            "quote the X-Request-ID header to the operator"
        ),
        503,
    )


# --- what the snapshot answers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One ACTIVE deployment of a model: where to forward and what to check and apply first."""

    deployment_id: int
    model_id: int
    model: str
    version_id: int
    version: int
    server_id: int
    server: str  # the server's name (audit)
    http_url: str
    max_batch_size: int
    signature: dict  # shared by every call: read it, never change it
    deid_mode: str
    answer_screen: str = "off"  # identifiers in the model's answers: off | redact | alert
    # a PHI model whose policy does not declare its numeric inputs: non-BYTES inputs are refused
    numeric_refused: bool = False
    # The server's restricted-API credential (apps/deployments/credentials.py), sent to Triton in the
    # CREDENTIAL_HEADER header; memory only, never in a repr, a log or an answer.
    credential: str = field(default="", repr=False, compare=False)
    # The version's share of the model's unversioned calls (its ReplicaSet's traffic_weight; a
    # deployment without a set: 100) and where the server's Prometheus metrics are read (balancer.py).
    weight: int = 100
    metrics_url: str = ""
    # The name Triton serves this version under (triton_model_name(model, version), e.g. "triage--v2"):
    # every URL to Triton uses it; answers are given back under `model` (dataplane/names.py).
    triton_name: str = ""

    def __post_init__(self):
        if not self.triton_name:
            object.__setattr__(self, "triton_name", triton_model_name(self.model, self.version))

    def upstream_headers(self) -> list[tuple[str, str]]:
        """The headers every call to this route's server carries (its credential, when it has one)."""
        return [(CREDENTIAL_HEADER, self.credential)] if self.credential else []

    @property
    def server_name(self) -> str:
        return self.server

    @classmethod
    def of(cls, dep: Deployment, name: str) -> Route:
        """A Route from a deployment read by apps.gateway.routing.route (the database path)."""
        return cls(
            deployment_id=dep.pk,
            model_id=dep.model_id,
            model=name,
            version_id=dep.model_version_id,
            version=dep.model_version.version,
            server_id=dep.server_id,
            server=dep.server.name,
            http_url=dep.server.http_url,
            max_batch_size=dep.max_batch_size,
            signature=dep.model_version.signature,
            deid_mode=dep.deid_mode,
            answer_screen=getattr(dep, "answer_screen", "off"),
            numeric_refused=getattr(dep, "numeric_refused", False),
            credential=getattr(dep, "triton_credential", "") or "",
            weight=traffic_share(dep),
            metrics_url=dep.server.metrics_url or "",
            triton_name=triton_model_name(name, dep.model_version.version),
        )


def traffic_share(dep: Deployment) -> int:
    """A deployment's version weight as routing.py's statement read it (`traffic_weight`), or the
    ORM's: its replica set's traffic_weight; no set: 100 (the version takes the model's traffic)."""
    weight = getattr(dep, "traffic_weight", None)
    if weight is None:
        weight = dep.replica_set.traffic_weight if dep.replica_set_id is not None else 100
    return int(weight)


def _version_of(route: Route) -> int:
    return route.version


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls, as authentication established it: what the pipeline needs for limits and audit,
    and the policy's facts (principal, token) for routing."""

    user_id: int
    username: str
    superuser: bool
    roles: tuple[str, ...]  # sorted roles now (standing and live break-glass): frozen into audit events
    token_id: int
    token_issuer_id: int | None
    token_issuer: str  # the issuer's user name, or "host"
    principal: Principal
    token: Token
    token_row: TokenRow | ApiToken  # the token as read (id, issuer): for Source.with_token
    via_database: bool = False  # authenticated by the database (a snapshot miss): routed there too

    def source(self, base: Source) -> Source:
        """`base` (address, user agent) for a call made with this token: Source.with_token."""
        return base.with_token(self.token_row)

    def actor(self):
        """A user object for record_event(actor=…): id, username, is_active, is_superuser, and the
        roles to freeze (read by roles_for_audit through `audit_roles`). Built on each call."""
        user = get_user_model()(
            id=self.user_id, username=self.username, is_active=self.principal.active, is_superuser=self.superuser
        )
        user.audit_roles = list(self.roles)
        return user


# --- the snapshot ---------------------------------------------------------------------------------


class TokenRow:
    """An API token as the snapshot holds it: the ApiToken fields that token_refusal,
    ApiToken.is_expired and Source.with_token read, as plain attributes (a model instance's
    `user` is a related-object descriptor, several times slower to read on every call)."""

    __slots__ = (
        "id",
        "user_id",
        "scopes",
        "restricted",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "created_by_id",
        "created_by",
        "user",
    )

    is_expired = ApiToken.is_expired  # the model's own definition

    def __init__(
        self, pk, user_id, scopes, restricted, created_at, expires_at, revoked_at, last_used_at, issuer_id, issuer
    ):
        self.id, self.user_id, self.scopes, self.restricted = pk, user_id, scopes, restricted
        self.created_at, self.expires_at, self.revoked_at, self.last_used_at = (
            created_at,
            expires_at,
            revoked_at,
            last_used_at,
        )
        self.created_by_id, self.created_by = issuer_id, issuer
        self.user = None

    @property
    def pk(self) -> int:
        return self.id


class _Account:
    """A token's user: the row's facts, standing roles, break-glass grants not yet over."""

    __slots__ = ("user", "standing", "break_glass", "service_account", "password_changed_at", "_static")

    def __init__(self, user, standing: frozenset[str], service_account: bool, password_changed_at):
        self.user = user  # id, username, is_active, is_superuser: what token_refusal reads
        self.standing = standing
        self.break_glass: list[EmergencyAccess] = []
        self.service_account = service_account
        self.password_changed_at = password_changed_at
        self._static = None

    def facts(self, now: datetime) -> tuple[AccountFacts, Principal, tuple[str, ...]]:
        """The account's facts at `now`: for token_refusal, for the access policy, for audit."""
        if self._static is not None:
            return self._static
        roles_now = self.standing | frozenset(e.role for e in self.break_glass if e.is_active(now))
        found = self._facts(roles_now)
        if not self.break_glass:
            self._static = found  # nothing here depends on the time
        return found

    def _facts(self, roles_now: frozenset[str]):
        facts = AccountFacts(
            roles=roles_now,
            standing_roles=self.standing,
            service_account=self.service_account,
            password_changed_at=self.password_changed_at,
        )
        principal = Principal(
            user_id=self.user.pk,
            active=self.user.is_active,
            superuser=self.user.is_superuser,
            service_account=self.service_account,
            roles=self.standing,
            roles_now=roles_now,
        )
        return facts, principal, tuple(sorted(roles_now))


class _Entry:
    """A token that was neither revoked nor expired when the snapshot was read."""

    __slots__ = ("row", "account", "token", "_caller")

    def __init__(self, row: TokenRow, account: _Account, token: Token):
        self.row, self.account, self.token = row, account, token
        self._caller = None

    def caller(self, principal: Principal, roles: tuple[str, ...], static: bool) -> Caller:
        if self._caller is not None:
            return self._caller
        row, user = self.row, self.account.user
        issuer = row.created_by
        caller = Caller(
            user_id=user.pk,
            username=user.username,
            superuser=user.is_superuser,
            roles=roles,
            token_id=row.pk,
            token_issuer_id=row.created_by_id,
            token_issuer=issuer.username if issuer is not None else "host",
            principal=principal,
            token=self.token,
            token_row=row,
        )
        if static:
            self._caller = caller
        return caller


class _Model:
    __slots__ = ("id", "routes")

    def __init__(self, model_id: int, routes: tuple[Route, ...]):
        self.id, self.routes = model_id, routes


class PolicySnapshot:
    """Everything the gateway decides on, read at one time (`loaded_at`); decisions at call time."""

    def __init__(
        self,
        *,
        tokens: dict[str, _Entry],
        refused: dict[str, tuple[str, str, int]],
        grants: dict[int, dict[int, tuple[Grant, ...]]],
        models: dict[str, _Model],
        loaded_at: datetime,
        epoch: int = 0,
        chat_policies: dict[int, dict] | None = None,
        quotas: QuotaBook | None = None,
    ):
        self._tokens, self._refused, self._grants, self._models = tokens, refused, grants, models
        self.loaded_at, self.epoch = loaded_at, epoch
        self.chat_policies = chat_policies or {}  # model id -> chat policy (apps/gateway/chatpolicy.py)
        self.quotas = quotas or QuotaBook()  # apps/gateway/quota.py

    def __repr__(self) -> str:
        return (
            f"<PolicySnapshot {len(self._tokens)} live tokens, {len(self._refused)} refused, "
            f"{len(self._models)} models, read {self.loaded_at:%H:%M:%S.%f}>"
        )

    def knows(self, plaintext: str) -> bool:
        digest = digest_token(plaintext)
        return digest in self._tokens or digest in self._refused

    def authenticate(
        self, authorization: str | None, now: datetime, last_used: Mapping[int, datetime] | None = None
    ) -> Caller:
        """The caller of a `Bearer` header at `now`, or TokenRejected with the database path's code
        (missing_token, malformed_authorization, token_revoked, token_expired, user_inactive,
        password_expired, token_idle); TokenMiss when the snapshot does not know the token.
        `last_used`: token id → last use seen by this process (newer than the database's, for
        the privileged idle limit)."""
        digest = digest_token(bearer_value(authorization))
        entry = self._tokens.get(digest)
        if entry is None:
            refused = self._refused.get(digest)
            if refused is not None:
                raise TokenRejected(*refused)  # i18n-ok: as authenticate_bearer refused it
            raise TokenMiss()
        row = entry.row
        if last_used is not None:
            seen = last_used.get(row.pk)
            if seen is not None and (row.last_used_at is None or seen > row.last_used_at):
                row.last_used_at = seen
        account = entry.account
        facts, principal, roles = account.facts(now)
        refusal = token_refusal(row, now, facts)
        if refusal is not None:
            raise refusal
        return entry.caller(principal, roles, static=account._static is not None)

    def route(self, caller: Caller, name: str, version: str | None, *, invoke: bool, now: datetime) -> Sequence[Route]:
        """The ACTIVE deployments of `name` (serving `version`, if given) `caller` may use — to infer
        (`invoke`) or to read metadata and readiness — decided by apps.gateway.routing.decide like
        the database path; else its ServiceError (insufficient_scope, model_not_found,
        model_not_deployed, invoke_not_permitted, model_version_not_deployed)."""
        model = self._models.get(name)
        if model is None:
            return routing.decide(name, caller.principal, caller.token, None, (), (), invoke=invoke, now=now)
        grants = self._grants.get(caller.user_id, _EMPTY).get(model.id, ())
        served = routing.decide(
            name, caller.principal, caller.token, model.id, grants, model.routes, invoke=invoke, now=now
        )
        return routing.serving_version(served, name, version, _version_of)

    def model_names(self) -> list[str]:
        return list(self._models)

    def may_reidentify(self, caller: Caller, model_id: int, now: datetime) -> bool:
        """Whether `caller` gets original identifiers back in answers of model `model_id`
        (apps.registry.access.may_reidentify)."""
        grants = self._grants.get(caller.user_id, _EMPTY).get(model_id, ())
        return may_reidentify(caller.principal, caller.token, model_id, grants, now)

    def invocable(self, caller: Caller, now: datetime) -> list[Route]:
        """Every route `caller` may infer on, over all models (for `GET /v1/models`)."""
        out: list[Route] = []
        for name in self._models:
            try:
                out.extend(self.route(caller, name, None, invoke=True, now=now))
            except ServiceError:
                continue
        return out


# --- reading it -----------------------------------------------------------------------------------


def load_snapshot(using: str = DEFAULT_DB_ALIAS, now: datetime | None = None) -> PolicySnapshot:
    """Read the snapshot: eleven statements whatever the population (chat policies and quotas too).
    On PostgreSQL in one REPEATABLE READ transaction (one consistent view), unless already inside a transaction; on
    SQLite statement by statement (a read transaction there would be BEGIN IMMEDIATE and block
    writers) — a write landing in between bumps the epoch, so the next rebuild sees it whole."""
    connection = connections[using]
    now = now or timezone.now()
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with transaction.atomic(using=using):
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return _read(connection, now)
    return _read(connection, now)


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """What the gateway applies to one model's calls, as its routes carry it."""

    name: str
    deid_mode: str
    answer_screen: str
    numeric_refused: bool


def model_policy_facts(connection=None, model_id: int | None = None) -> dict[int, PolicyFacts]:
    """Every model's (or one model's) de-identification mode, answer screen and numeric-input
    refusal, in one statement: what load_snapshot puts in each Route, and what the compliance
    probe (apps/gateway/deidprobe.py) applies, so both decide on the same expression."""
    connection = connection or connections[DEFAULT_DB_ALIAS]
    where, params = ("", []) if model_id is None else (" WHERE m.id = %s", [model_id])
    out = {}
    for pk, name, mode, phi, screen, declared in _rows(
        connection,
        f"SELECT m.id, m.name, {deid_policy_columns('m.id')}, {answer_screen_column('m.id')},"  # noqa: S608
        f" {numeric_inputs_column('m.id')} FROM {Model._meta.db_table} m{where}",
        params,
    ):
        out[pk] = PolicyFacts(
            name,
            deid_mode(mode, bool(phi)),
            answer_screen_mode(screen, bool(phi)),
            numeric_inputs_refused(bool(phi), declared),
        )
    return out


def _rows(connection, sql: str, params=()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def _tables() -> dict[str, str]:
    User = get_user_model()
    return {
        "token": ApiToken._meta.db_table,
        "token_models": ApiToken.allowed_models.through._meta.db_table,
        "user": User._meta.db_table,
        "profile": Profile._meta.db_table,
        "user_groups": User.groups.through._meta.db_table,
        "group": Group._meta.db_table,
        "breakglass": EmergencyAccess._meta.db_table,
        "perm": Permission._meta.db_table,
        "ug": ModelUserGrant._meta.db_table,
        "gg": ModelGroupGrant._meta.db_table,
        "model": Model._meta.db_table,
        "mv": ModelVersion._meta.db_table,
        "dep": Deployment._meta.db_table,
        "srv": InferenceServer._meta.db_table,
        "rs": ReplicaSet._meta.db_table,
    }


def _read(connection, now: datetime) -> PolicySnapshot:
    t = _tables()
    stamp = connection.ops.adapt_datetimefield_value(now)
    User = get_user_model()
    # Table names from model metadata; values are parameters.
    live = "t.revoked_at IS NULL AND t.expires_at > %s"
    live_users = f"SELECT t.user_id FROM {t['token']} t WHERE {live}"  # noqa: S608

    # 1. live tokens, with their issuer; the others by digest alone (revoked or expired: for ever)
    tokens = _rows(
        connection,
        f"SELECT t.id, t.digest, t.user_id, t.scopes, t.restricted, t.created_at, t.expires_at,"  # noqa: S608
        f" t.last_used_at, t.created_by_id, ib.username"
        f" FROM {t['token']} t LEFT JOIN {t['user']} ib ON ib.id = t.created_by_id WHERE {live}",
        [stamp],
    )
    gone = _rows(
        connection,
        f"SELECT t.digest, t.revoked_at IS NOT NULL FROM {t['token']} t WHERE NOT ({live})",  # noqa: S608
        [stamp],
    )
    # 2. the models a restricted live token lists
    listed: dict[int, set[int]] = {}
    for token_id, model_id in _rows(
        connection,
        f"SELECT tm.apitoken_id, tm.model_id FROM {t['token_models']} tm"  # noqa: S608
        f" JOIN {t['token']} t ON t.id = tm.apitoken_id WHERE t.restricted AND {live}",
        [stamp],
    ):
        listed.setdefault(token_id, set()).add(model_id)
    # 3. the users of live tokens, with their profile
    accounts: dict[int, _Account] = {}
    for user_id, username, active, superuser, service, changed in _rows(
        connection,
        f"SELECT u.id, u.username, u.is_active, u.is_superuser, p.is_service_account, p.password_changed_at"  # noqa: S608
        f" FROM {t['user']} u LEFT JOIN {t['profile']} p ON p.user_id = u.id WHERE u.id IN ({live_users})",
        [stamp],
    ):
        user = User(id=user_id, username=username, is_active=bool(active), is_superuser=bool(superuser))
        accounts[user_id] = _Account(user, frozenset(), bool(service), aware(changed))
    # 4. their groups: role groups are their standing roles (roles_of), the others only carry grants
    standing: dict[int, set[str]] = {}
    for user_id, name in _rows(
        connection,
        f"SELECT ug.user_id, g.name FROM {t['user_groups']} ug JOIN {t['group']} g ON g.id = ug.group_id"  # noqa: S608
        f" WHERE ug.user_id IN ({live_users})",
        [stamp],
    ):
        if name in _ROLES:
            standing.setdefault(user_id, set()).add(name)
    for user_id, roles in standing.items():
        accounts[user_id].standing = frozenset(roles)
    # 5. break-glass grants not revoked and not over (those not yet begun included)
    for pk, user_id, role, granted_at, expires_at in _rows(
        connection,
        f"SELECT e.id, e.user_id, e.role, e.granted_at, e.expires_at FROM {t['breakglass']} e"  # noqa: S608
        f" WHERE e.revoked_at IS NULL AND e.expires_at > %s AND e.user_id IN ({live_users})",
        [stamp, stamp],
    ):
        accounts[user_id].break_glass.append(
            EmergencyAccess(
                id=pk, user_id=user_id, role=role, granted_at=aware(granted_at), expires_at=aware(expires_at)
            )
        )
    # 6. grants not yet expired, by name and through any group
    grants: dict[int, dict[int, list[Grant]]] = {}
    for user_id, model_id, codename, expires_at, via_group in _rows(
        connection,
        f"SELECT x.user_id, x.content_object_id, p.codename, x.expires_at, 0"  # noqa: S608
        f" FROM {t['ug']} x JOIN {t['perm']} p ON p.id = x.permission_id"
        f" WHERE (x.expires_at IS NULL OR x.expires_at > %s) AND x.user_id IN ({live_users})"
        f" UNION ALL SELECT yg.user_id, y.content_object_id, q.codename, y.expires_at, 1"
        f" FROM {t['gg']} y JOIN {t['perm']} q ON q.id = y.permission_id"
        f" JOIN {t['user_groups']} yg ON yg.group_id = y.group_id"
        f" WHERE (y.expires_at IS NULL OR y.expires_at > %s) AND yg.user_id IN ({live_users})",
        [stamp, stamp, stamp, stamp],
    ):
        grants.setdefault(user_id, {}).setdefault(model_id, []).append(
            Grant(model_id, codename, aware(expires_at), via_group=bool(via_group))
        )
    # 7. models with their de-identification facts, and their ACTIVE deployments
    names, modes, screens, numeric = {}, {}, {}, {}
    for model_id, facts in model_policy_facts(connection).items():
        names[model_id] = facts.name
        modes[model_id] = facts.deid_mode
        screens[model_id] = facts.answer_screen
        numeric[model_id] = facts.numeric_refused
    routes: dict[int, list[Route]] = {}
    sealed: set[int] = set()  # servers holding a restricted-API credential
    for row in _rows(
        connection,
        f"SELECT d.id, d.model_id, d.model_version_id, mv.version, d.server_id, s.name, s.http_url,"  # noqa: S608
        f" d.max_batch_size, mv.signature, s.credential_key_id, COALESCE(rs.traffic_weight, 100), s.metrics_url"
        f" FROM {t['dep']} d"
        f" JOIN {t['mv']} mv ON mv.id = d.model_version_id JOIN {t['srv']} s ON s.id = d.server_id"
        f" LEFT JOIN {t['rs']} rs ON rs.id = d.replica_set_id"
        f" WHERE d.desired_state = %s AND d.observed_state = %s ORDER BY d.id",
        [Desired.ACTIVE.value, Observed.ACTIVE.value],
    ):
        dep_id, model_id, version_id, version, server_id, server, url, batch, signature, credential_key = row[:10]
        weight, metrics_url = row[10:]
        if credential_key is not None:
            sealed.add(server_id)
        routes.setdefault(model_id, []).append(
            Route(
                deployment_id=dep_id,
                model_id=model_id,
                model=names[model_id],
                version_id=version_id,
                version=version,
                server_id=server_id,
                server=server,
                http_url=url,
                max_batch_size=batch,
                signature=_json(signature),
                deid_mode=modes[model_id],
                answer_screen=screens[model_id],
                numeric_refused=numeric[model_id],
                weight=int(weight),
                metrics_url=metrics_url or "",
                triton_name=triton_model_name(names[model_id], version),
            )
        )
    # One more read only when a serving server has a credential (opened in memory, cached by data key).
    creds = credentials_for(sealed, using=connection.alias) if sealed else {}
    if creds:
        routes = {m: [replace(r, credential=creds.get(r.server_id, "")) for r in rs] for m, rs in routes.items()}
    models = {name: _Model(model_id, tuple(routes.get(model_id, ()))) for model_id, name in names.items()}

    live_tokens: dict[str, _Entry] = {}
    issuers: dict[int, object] = {}
    scope_sets: dict[object, list[str]] = {}
    for pk, digest, user_id, scopes, restricted, created_at, expires_at, last_used_at, issuer_id, issuer in tokens:
        account = accounts.get(user_id)
        if account is None:
            continue  # issued while this was read (SQLite): a miss now, in the next rebuild
        if issuer_id is not None and issuer_id not in issuers:
            issuers[issuer_id] = User(id=issuer_id, username=issuer)
        key = scopes if isinstance(scopes, str) else tuple(scopes)
        if key not in scope_sets:
            scope_sets[key] = _json(scopes)
        token = TokenRow(
            pk,
            user_id,
            scope_sets[key],
            bool(restricted),
            aware(created_at),
            aware(expires_at),
            None,
            aware(last_used_at),
            issuer_id,
            issuers.get(issuer_id),
        )
        token.user = account.user
        facts = Token(
            scopes=frozenset(token.scopes),
            restricted=token.restricted,
            model_ids=frozenset(listed.get(pk, ())),
        )
        live_tokens[digest] = _Entry(token, account, facts)
    # Revoked or expired when read, so for ever: the refusal token_refusal gives such a token (it
    # decides both before it asks anything about the account).
    revoked, expired = _refusal_of(revoked=True, now=now), _refusal_of(revoked=False, now=now)
    refused = {digest: revoked if was_revoked else expired for digest, was_revoked in gone}
    frozen_grants = {
        user_id: {model_id: tuple(found) for model_id, found in per_model.items()}
        for user_id, per_model in grants.items()
    }
    # 9-11. the language models' chat policies and the token quotas (with the groups that have one)
    return PolicySnapshot(
        tokens=live_tokens,
        refused=refused,
        grants=frozen_grants,
        models=models,
        loaded_at=now,
        chat_policies=load_chat_policies(connection),
        quotas=load_quotas(connection),
    )


def _refusal_of(*, revoked: bool, now: datetime) -> tuple[str, str, int]:
    """token_refusal's answer for a token revoked at `now` (else expired at `now`)."""
    token = TokenRow(0, 0, [], False, now, now, now if revoked else None, None, None, None)
    token.user = get_user_model()(is_active=False)
    refusal = token_refusal(token, now, _NO_FACTS)
    return refusal.code, refusal.detail, refusal.status_code


_NO_FACTS = AccountFacts(roles=frozenset(), standing_roles=frozenset(), service_account=True, password_changed_at=None)


def write_last_use(uses: Mapping[int, tuple[datetime, str | None]], using: str = DEFAULT_DB_ALIAS) -> int:
    """Record tokens' last use in one batched statement (executemany); never moves a last use back."""
    if not uses:
        return 0
    connection = connections[using]
    table = connection.ops.quote_name(ApiToken._meta.db_table)
    params = []
    for token_id, (at, ip) in uses.items():
        stamp = connection.ops.adapt_datetimefield_value(at)
        params.append([stamp, ip, token_id, stamp])
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET last_used_at = %s, last_used_ip = %s"  # noqa: S608
            " WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)",
            params,
        )
    return len(params)


# --- keeping it current ---------------------------------------------------------------------------

ALWAYS, LISTEN, POLL, AUTO = "always", "listen", "poll", "auto"


class SnapshotHolder:
    """One current PolicySnapshot for an asyncio process (the data plane).

    refresh:
    - "auto": "listen" on PostgreSQL, "poll" elsewhere;
    - "listen": a dedicated psycopg AsyncConnection (autocommit) LISTENs on `sovereign_policy`
      and reconnects when it fails (rebuilding then: notifications may have been missed);
    - "poll": reads gateway.PolicyEpoch every `poll_interval` seconds (SQLite);
    - "always": no background work; every authenticate reloads on the calling thread
      (sync_to_async thread_sensitive), i.e. inside a test's transaction: for tests using the
      `db` fixture, whose writes never commit and so never notify.

    Rebuilds run in the holder's own thread (never the thread that writes audit events), coalesce
    whatever arrived while one ran, and swap the new snapshot in only when whole. At least every
    `max_age` seconds it rebuilds anyway (lost notifications, writes that bypassed the services);
    if no rebuild has succeeded for `hard_limit` seconds, every call is refused (503
    `policy_unavailable`) until one does.
    """

    def __init__(
        self,
        *,
        refresh: str = AUTO,
        using: str = DEFAULT_DB_ALIAS,
        loader: Callable[[], PolicySnapshot] | None = None,
        max_age: float | None = None,
        hard_limit: float | None = None,
        poll_interval: float = 0.25,
        flush_interval: float = 10.0,
        retry_interval: float = 0.5,
    ):
        if refresh not in (ALWAYS, LISTEN, POLL, AUTO):
            raise ValueError(f"refresh must be one of always, listen, poll, auto, not {refresh!r}")
        self.using = using
        self.refresh_mode = refresh
        self._loader = loader or partial(load_snapshot, using)
        self.max_age = settings.POLICY_MAX_AGE if max_age is None else max_age
        self.hard_limit = settings.POLICY_HARD_LIMIT if hard_limit is None else hard_limit
        self.poll_interval, self.flush_interval, self.retry_interval = poll_interval, flush_interval, retry_interval
        self._snapshot: PolicySnapshot | None = None
        self._fresh_at = float("-inf")  # time.monotonic() at the start of the last successful load
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._executor: ThreadPoolExecutor | None = None
        self._listening = asyncio.Event()
        self._epoch = 0
        self._last_use: dict[int, datetime] = {}  # token id → last use seen here
        self._pending: dict[int, tuple[datetime, str | None]] = {}  # to write at the next flush
        self._written: dict[int, datetime] = {}  # token id → last use this process wrote
        self.loads = 0
        self.failures = 0
        self._failing_since: float | None = None
        self._logged_at = 0.0
        self.last_error: BaseException | None = None

    # -- life cycle --

    async def start(self) -> None:
        """Load the first snapshot (raises if it cannot) and start keeping it current."""
        mode = self.refresh_mode
        if mode == AUTO:
            mode = LISTEN if connections[self.using].vendor == "postgresql" else POLL
        if mode == POLL and connections[self.using].vendor == "postgresql":
            raise ValueError("PostgreSQL writes NOTIFY and leave the SQLite counter alone: use refresh='listen'")
        self.refresh_mode = mode
        if mode == ALWAYS:
            await self.refresh()
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-snapshot")
        if mode == LISTEN:
            self._tasks.append(asyncio.create_task(self._listen(), name="policy-listen"))
            try:  # listen before the first load, so no change falls between the two
                await asyncio.wait_for(self._listening.wait(), timeout=5)
            except TimeoutError:
                logger.warning("policy snapshot: LISTEN not established; relying on the max-age rebuild")
        else:
            self._epoch = await self._in_thread(partial(current_epoch, self.using))
            self._tasks.append(asyncio.create_task(self._poll(), name="policy-poll"))
        try:
            await self.refresh()
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._refresher(), name="policy-refresh"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="policy-flush"))

    async def stop(self) -> None:
        """Stop refreshing, write the pending last uses, close the holder's connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping: nothing to do with it
                await task
        self._tasks.clear()
        try:
            await self.flush()
        finally:
            if self._executor is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, connections.close_all)
                self._executor.shutdown(wait=True)
                self._executor = None

    # -- the hot path --

    @property
    def snapshot(self) -> PolicySnapshot:
        """The current snapshot, or 503 `policy_unavailable` if none or none fresh enough."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - self._fresh_at > self.hard_limit:
            raise policy_unavailable()
        return snapshot

    async def authenticate(
        self, authorization: str | None, ip: str | None = None, now: datetime | None = None
    ) -> Caller:
        """The snapshot's answer (see PolicySnapshot.authenticate); records the use (`touch`).
        Raises TokenMiss when the snapshot does not know the token: the pipeline charges the
        address failure budget, then asks `authenticate_miss`."""
        if self.refresh_mode == ALWAYS:
            await self.refresh()
        now = now or timezone.now()
        caller = self.snapshot.authenticate(authorization, now, self._last_use)
        self.touch(caller.token_id, ip, now)
        return caller

    async def authenticate_miss(
        self, authorization: str | None, ip: str | None = None, now: datetime | None = None
    ) -> Caller:
        """The database's answer for a token the snapshot does not know (authenticate_bearer,
        lean, on Django's sync thread): a token issued a moment ago works at once."""
        self.snapshot  # noqa: B018 - a stale policy refuses these too
        user, token = await sync_to_async(authenticate_bearer, thread_sensitive=True)(authorization, ip, lean=True)
        facts = user.account_facts
        principal = routing.principal_from_lookup(user)
        caller = Caller(
            user_id=user.pk,
            username=user.username,
            superuser=user.is_superuser,
            roles=tuple(sorted(facts.roles)),
            token_id=token.pk,
            token_issuer_id=token.created_by_id,
            token_issuer=token.created_by.username if token.created_by is not None else "host",
            principal=principal,
            token=Token(scopes=frozenset(token.scopes), restricted=token.restricted),
            token_row=token,
            via_database=True,
        )
        self.touch(caller.token_id, ip, now or timezone.now())
        return caller

    async def route(
        self, caller: Caller, name: str, version: str | None, *, invoke: bool, now: datetime | None = None
    ) -> Sequence[Route]:
        """The routes `caller` may use (see PolicySnapshot.route); a caller the database
        authenticated is routed by the database (apps.gateway.routing.route) too."""
        now = now or timezone.now()
        if not caller.via_database:
            return self.snapshot.route(caller, name, version, invoke=invoke, now=now)
        deps = await sync_to_async(_route_in_database, thread_sensitive=True)(caller, name, invoke, now)
        return routing.serving_version([Route.of(d, name) for d in deps], name, version, _version_of)

    async def may_reidentify(self, caller: Caller, model_id: int, now: datetime | None = None) -> bool:
        """See PolicySnapshot.may_reidentify. A caller the database authenticated (a token newer than
        the snapshot) is not re-identified until the snapshot knows it: fail safe, the answer keeps
        its surrogates."""
        if caller.via_database:
            return False
        return self.snapshot.may_reidentify(caller, model_id, now or timezone.now())

    async def invocable(self, caller: Caller, now: datetime | None = None) -> list[Route]:
        """Every route `caller` may infer on (see PolicySnapshot.invocable); by the database for a
        caller the database authenticated."""
        now = now or timezone.now()
        snapshot = self.snapshot
        if not caller.via_database:
            return snapshot.invocable(caller, now)
        out: list[Route] = []
        for name in snapshot.model_names():
            try:
                out.extend(await self.route(caller, name, None, invoke=True, now=now))
            except ServiceError:
                continue
        return out

    def touch(self, token_id: int, ip: str | None, now: datetime) -> None:
        """Note a use of the token: in memory at once (the privileged idle limit sees it), in the
        database at the next flush, at most once per LAST_USED_RESOLUTION."""
        self._last_use[token_id] = now
        if token_id in self._pending:
            self._pending[token_id] = (now, ip)
            return
        written = self._written.get(token_id)
        if written is None or now - written > LAST_USED_RESOLUTION:
            self._pending[token_id] = (now, ip)

    async def flush(self) -> int:
        """Write the pending last uses (one batched statement); returns how many."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            await self._in_thread(partial(write_last_use, batch, self.using))
        except Exception:
            logger.exception("policy snapshot: could not record %d tokens' last use; will retry", len(batch))
            for token_id, use in batch.items():
                self._pending.setdefault(token_id, use)
            return 0
        for token_id, (at, _tail) in batch.items():
            self._written[token_id] = at
        return len(batch)

    # -- rebuilding --

    async def refresh(self) -> PolicySnapshot:
        """Rebuild now and swap the result in (raises if the rebuild fails; the old one stays)."""
        started = time.monotonic()
        try:
            snapshot = await self._in_thread(self._loader)
        except Exception as err:
            self.failures += 1
            self.last_error = err
            raise
        self._snapshot, self._fresh_at = snapshot, started
        self.loads += 1
        return snapshot

    @property
    def age(self) -> float:
        """Seconds since the start of the last successful load."""
        return time.monotonic() - self._fresh_at

    async def _in_thread(self, fn):
        if self.refresh_mode == ALWAYS or self._executor is None:
            return await sync_to_async(fn, thread_sensitive=True)()
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(_with_connection, fn))

    async def _refresher(self) -> None:
        while True:
            wait = max(0.0, self.max_age - self.age)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=wait)
            self._dirty.clear()
            try:
                await self.refresh()
                self._failing_since = None
            except Exception:
                now = time.monotonic()
                if self._failing_since is None or now - self._logged_at > 5:
                    logger.exception(  # once, then every 5 s while it lasts
                        "policy snapshot: rebuild failed; serving the one read %.1f s ago (refused past %.0f s)",
                        self.age,
                        self.hard_limit,
                    )
                    self._logged_at = now
                self._failing_since = self._failing_since or now
                await asyncio.sleep(self.retry_interval)
                self._dirty.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                epoch = await self._in_thread(partial(current_epoch, self.using))
            except Exception:  # noqa: BLE001 - the max-age rebuild and its failure handling cover it
                logger.warning("policy snapshot: could not read the policy epoch", exc_info=True)
                continue
            if epoch != self._epoch:
                self._epoch = epoch
                self._dirty.set()

    async def _listen(self) -> None:
        import psycopg

        delay = 0.2
        first = True
        while True:
            try:
                params = _listen_params(self.using)
                conn = await psycopg.AsyncConnection.connect(**params)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        self._dirty.set()  # whatever changed while nobody listened
                    first = False
                    self._listening.set()
                    delay = 0.2
                    async for _notify in conn.notifies():
                        self._dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnect; the max-age rebuild covers the gap
                logger.warning("policy snapshot: LISTEN connection lost; reconnecting", exc_info=True)
            self._listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()
            self._forget(timezone.now())

    def _forget(self, now: datetime) -> None:
        """Drop what no longer changes a decision or a write: uses older than the idle limit (the
        token is idle whatever else is known) and writes older than the resolution (the next use is
        written anyway)."""
        idle, resolution = settings.SESSION_IDLE_TIMEOUT, LAST_USED_RESOLUTION
        self._last_use = {k: at for k, at in self._last_use.items() if now - at <= idle or k in self._pending}
        self._written = {k: at for k, at in self._written.items() if now - at <= resolution}


def _route_in_database(caller: Caller, name: str, invoke: bool, now: datetime) -> list[Deployment]:
    token = caller.token_row  # as authenticate_bearer read it: its user carries the account's facts
    deps = routing.route(token.user, token, name, invoke=invoke, now=now)
    creds = credentials_for({d.server_id for d in deps})
    for dep in deps:
        dep.triton_credential = creds.get(dep.server_id, "")
    return deps


def _with_connection(fn):
    """Run `fn` on the holder's thread with a usable connection; drop it if `fn` fails."""
    close_old_connections()
    try:
        return fn()
    except Exception:
        connections.close_all()
        raise


def _listen_params(using: str) -> dict:
    params = connections[using].get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    params.update(autocommit=True, keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    return params
