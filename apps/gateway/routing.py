"""The inference path's route lookup: one hand-written SQL statement that gathers the access policy's
facts, and the policy (apps.registry.access, through apps.registry.selectors) that decides on them.

Built with the ORM, a route query cost ≈2.2 ms of CPU per call to compile on the reference machine:
more than everything else the gateway does. The statement below is fixed text (table names from the
models' metadata), so it compiles never and PostgreSQL prepares it once per connection. It decides
nothing: for the model named in the URL it returns the model, each ACTIVE deployment of it (none:
one row of NULLs), each object permission the caller holds on it by name or through a group (with
its codename and expiry, expired ones included), whether a restricted token lists it, and the
model's de-identification facts (apps.compliance.selectors.deid_policy_columns). The caller's roles
and profile come from the token lookup (apps.accounts.services.tokens). The decisions — may invoke,
may see, in the catalogue, which de-identification mode — are the access policy's, the same
functions the control plane's selectors ask, so refusals (409 / 403 / 404) need no further query.
They are asked in one place, decide(), which the data plane's in-memory policy snapshot
(apps/gateway/dataplane/snapshot.py) calls on the facts it holds: the two forms share every line of
the decision and differ only in where the facts come from. tests/registry/test_policy_equivalence.py
checks that every form answers alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TypeVar

from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.utils import timezone

from apps.accounts.models import ApiToken, ModelGroupGrant, ModelUserGrant
from apps.compliance.selectors import (
    answer_screen_column,
    answer_screen_mode,
    deid_policy_columns,
    numeric_inputs_column,
    numeric_inputs_refused,
)
from apps.core.errors import ServiceError, _
from apps.core.rawsql import aware
from apps.deployments.models import Deployment, InferenceServer, ReplicaSet
from apps.registry.models import Model, ModelVersion
from apps.registry.selectors import (
    Grant,
    Principal,
    Token,
    catalogue,
    deid_mode,
    gateway_scope_allows,
    invokable,
    visible,
)

T = TypeVar("T")


@cache
def _sql() -> str:
    t = {
        "dep": Deployment._meta.db_table,
        "model": Model._meta.db_table,
        "mv": ModelVersion._meta.db_table,
        "srv": InferenceServer._meta.db_table,
        "rs": ReplicaSet._meta.db_table,
        "user_groups": Group.user_set.through._meta.db_table,
        "perm": Permission._meta.db_table,
        "ug": ModelUserGrant._meta.db_table,
        "gg": ModelGroupGrant._meta.db_table,
        "tm": ApiToken.allowed_models.through._meta.db_table,
    }
    # Table names from model metadata; every value is a parameter.
    return f"""
SELECT m.id, d.id, d.model_version_id, d.server_id, d.max_batch_size,
       mv.version, mv.signature, s.name, s.http_url, {deid_policy_columns("m.id")},
       (%s AND EXISTS (SELECT 1 FROM {t["tm"]} tm WHERE tm.apitoken_id = %s AND tm.model_id = m.id)),
       g.codename, g.expires_at, g.via_group, {answer_screen_column("m.id")}, {numeric_inputs_column("m.id")},
       COALESCE(rs.traffic_weight, 100), s.metrics_url
FROM {t["model"]} m
LEFT JOIN {t["dep"]} d ON d.model_id = m.id AND d.desired_state = 'active' AND d.observed_state = 'active'
LEFT JOIN {t["mv"]} mv ON mv.id = d.model_version_id
LEFT JOIN {t["srv"]} s ON s.id = d.server_id
LEFT JOIN {t["rs"]} rs ON rs.id = d.replica_set_id
LEFT JOIN (SELECT x.content_object_id AS model_id, p.codename, x.expires_at, 0 AS via_group
             FROM {t["ug"]} x JOIN {t["perm"]} p ON p.id = x.permission_id WHERE x.user_id = %s
           UNION ALL
           SELECT y.content_object_id, q.codename, y.expires_at, 1
             FROM {t["gg"]} y JOIN {t["perm"]} q ON q.id = y.permission_id
             JOIN {t["user_groups"]} yg ON yg.group_id = y.group_id WHERE yg.user_id = %s) g ON g.model_id = m.id
WHERE m.name = %s
"""  # noqa: S608


@dataclass
class Facts:
    """What the route statement gathered about one model name for one caller."""

    model_id: int | None
    deployments: dict[int, Deployment]
    grants: set[Grant]
    listed: bool  # a restricted token lists the model


def gather(user, token, name: str) -> Facts:
    """The one statement of the route lookup."""
    params = [bool(token.restricted), token.pk, user.pk, user.pk, name]
    with connection.cursor() as cursor:
        cursor.execute(_sql(), params)
        rows = cursor.fetchall()
    facts = Facts(model_id=rows[0][0] if rows else None, deployments={}, grants=set(), listed=False)
    for row in rows:
        if row[1] is not None and row[1] not in facts.deployments:
            facts.deployments[row[1]] = _deployment(
                *row[:11], screen=row[15], numeric_declared=row[16], weight=row[17], metrics_url=row[18]
            )
        facts.listed = facts.listed or bool(row[11])
        if row[12] is not None:
            facts.grants.add(Grant(row[0], row[12], aware(row[13]), via_group=bool(row[14])))
    return facts


def route(user, token, name: str, *, invoke: bool, now: datetime | None = None) -> list[Deployment]:
    """The ACTIVE deployments of model `name` this caller may use with this token: to infer
    (`invoke`), or to read metadata and readiness; otherwise decide()'s refusal. The scope is asked
    first, so that a token without it costs no query."""
    tok = Token(scopes=frozenset(token.scopes), restricted=bool(token.restricted))
    check_scope(tok, invoke=invoke)
    facts = gather(user, token, name)
    listed = frozenset({facts.model_id} if facts.listed else ())
    return decide(
        name,
        principal_from_lookup(user),
        Token(scopes=tok.scopes, restricted=tok.restricted, model_ids=listed),
        facts.model_id,
        facts.grants,
        list(facts.deployments.values()),
        invoke=invoke,
        now=now or timezone.now(),
    )


def check_scope(token: Token, *, invoke: bool) -> None:
    if not gateway_scope_allows(token, invoke=invoke):
        raise ServiceError("insufficient_scope", _("this token lacks the 'invoke' scope"), 403)


def decide(
    name: str,
    principal: Principal,
    token: Token,
    model_id: int | None,
    grants: Iterable[Grant],
    served: Sequence[T],
    *,
    invoke: bool,
    now: datetime,
) -> Sequence[T]:
    """The gateway's one decision, on facts gathered by either form — the route statement above or
    the data plane's in-memory snapshot (apps/gateway/dataplane/snapshot.py): `served` (the model's
    ACTIVE deployments, in whatever shape the form keeps them) if the caller may use them, else the
    refusal: 403 `insufficient_scope`; 404 `model_not_found` (no such model); 409
    `model_not_deployed` (allowed, nothing active); 403 `invoke_not_permitted` (in the caller's
    catalogue); 404 `model_not_found` (not even that). `grants` need only be those on `model_id`,
    and a restricted token's `model_ids` only say whether it lists `model_id`."""
    check_scope(token, invoke=invoke)
    if model_id is None:
        raise ServiceError("model_not_found", _("unknown model %(name)s") % {"name": repr(name)}, 404)
    allowed = (invokable if invoke else visible)(principal, token, grants, now)
    if model_id in allowed:
        if served:
            return served
        raise ServiceError(
            "model_not_deployed", _("model %(name)s has no active deployment") % {"name": repr(name)}, 409
        )
    if model_id in catalogue(principal, token, grants, now):
        raise ServiceError(
            "invoke_not_permitted",
            _("you may not invoke %(name)s; ask a security officer for a grant") % {"name": repr(name)},
            403,
        )
    raise ServiceError("model_not_found", _("unknown model %(name)s") % {"name": repr(name)}, 404)


def serving_version(served: Sequence[T], name: str, version: str | None, version_of: Callable[[T], int]) -> Sequence[T]:
    """The routes among `served` that serve `version` (the URL's text; None: any), or 404
    `model_version_not_deployed`: a versioned call chooses among the servers serving that version,
    not among all and then refuses."""
    if version is None:
        return served
    chosen = [r for r in served if str(version_of(r)) == version]
    if not chosen:
        raise version_not_deployed(name, version)
    return chosen


def version_not_deployed(name: str, version: str) -> ServiceError:
    return ServiceError(
        "model_version_not_deployed",
        _("version %(version)s of %(name)s is not deployed") % {"version": version, "name": repr(name)},
        404,
    )


def principal_from_lookup(user) -> Principal:
    """The caller as the gateway's token lookup read it (apps.accounts.services.authenticate_bearer)."""
    facts = user.account_facts
    return Principal(
        user_id=user.pk,
        active=user.is_active,
        superuser=user.is_superuser,
        service_account=facts.service_account,
        roles=facts.standing_roles,
        roles_now=facts.roles,
    )


def _deployment(
    model_id,
    pk,
    version_id,
    server_id,
    max_batch_size,
    version,
    signature,
    server_name,
    http_url,
    mode,
    phi,
    *,
    screen=None,
    numeric_declared=None,
    weight=100,
    metrics_url="",
):
    dep = Deployment(
        id=pk, model_id=model_id, model_version_id=version_id, server_id=server_id, max_batch_size=max_batch_size
    )
    dep.deid_mode = deid_mode(mode, bool(phi))  # the model's compliance policy, read in the same statement
    dep.answer_screen = answer_screen_mode(screen, bool(phi))
    dep.numeric_refused = numeric_inputs_refused(bool(phi), numeric_declared)
    if isinstance(signature, str | bytes):
        signature = json.loads(signature)
    dep.model_version = ModelVersion(id=version_id, model_id=model_id, version=version, signature=signature)
    dep.server = InferenceServer(id=server_id, name=server_name, http_url=http_url, metrics_url=metrics_url or "")
    dep.traffic_weight = int(weight)  # the version's share of unversioned calls (its replica set's; none: 100)
    return dep
