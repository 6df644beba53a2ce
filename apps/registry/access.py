"""The model access policy, once: may this principal, with this token, see or invoke a model, and with
which de-identification mode. Pure Python: no query, no clock of its own.

Every form of the policy only gathers the facts below from wherever it reads them and asks these
functions: the gateway's fixed route statement (apps/gateway/routing.py), the control plane's ORM
selectors (apps/registry/selectors.py), compliance's de-identification reads
(apps/compliance/selectors.py) and — next — the data plane's in-memory snapshot. A property test
(tests/registry/test_policy_equivalence.py) builds random populations and checks that every form
answers alike for every (token, model).

Facts:
- Principal: the account (active, superuser, service account), its standing roles (role groups)
  and its roles now (standing plus unexpired, unrevoked break-glass).
- Token: its scopes, whether it is restricted to some models, and which. Revocation and expiry are
  decided earlier, by token authentication (apps.accounts.services.tokens), which also refuses
  inactive users, expired passwords and stale privileged tokens: a token that reaches here is valid.
- Grant: a `view_model` / `invoke_model` object permission on one model, with its expiry (or none),
  held by name or through a group.
- The model's de-identification policy: its mode (None without a policy) and whether it receives PHI.

Decisions (docs/access-control.md, "One policy"):
- visible: the superuser and roles holding `registry.view_model` (admin, security officer, auditor;
  break-glass included) see every model; anyone else the models they hold a live view or invoke
  grant on. Group grants reach persons only: a service account reaches what is granted to it by name.
- catalogue: roles holding `registry.view_catalogue` (and the superuser) list every model; others
  what is visible to them.
- invokable: the superuser every model; a principal with a STANDING role that may invoke (break-glass
  does not count, as in grant_model_access) the models they hold a live invoke grant on.
- Each is cut down to a restricted token's models; an inactive principal reaches nothing.
- deid_mode: the policy's mode, or `redact` for a model that receives PHI and has none (or `off`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from apps.accounts.models import Scope
from apps.accounts.roles import MAY_INVOKE, PERMISSIONS

VIEW_MODEL = "view_model"
INVOKE_MODEL = "invoke_model"
REIDENTIFY = "reidentify"
_REIDENTIFY = frozenset({REIDENTIFY})
_SEE = frozenset({VIEW_MODEL, INVOKE_MODEL})
_INVOKE = frozenset({INVOKE_MODEL})

# The values of apps.compliance.models.DeidMode that this decision names (compliance sits above
# registry, so it cannot be imported here; tests/registry/test_policy_equivalence.py pins them).
DEID_OFF = "off"
DEID_REDACT = "redact"

_SEES_ALL = frozenset(role for role, perms in PERMISSIONS.items() if "registry.view_model" in perms)
_LISTS_ALL = frozenset(role for role, perms in PERMISSIONS.items() if "registry.view_catalogue" in perms)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls. `roles_now` includes `roles` (standing) and unexpired break-glass roles."""

    user_id: int
    active: bool
    superuser: bool
    service_account: bool
    roles: frozenset[str]
    roles_now: frozenset[str]


@dataclass(frozen=True, slots=True)
class Token:
    """What a valid token adds. `model_ids` matters only when `restricted` (a form may gather just
    the models it asks about)."""

    scopes: frozenset[str]
    restricted: bool
    model_ids: frozenset[int] = frozenset()


SESSION = Token(scopes=frozenset(Scope.values), restricted=False)  # a portal session: no token limits


@dataclass(frozen=True, slots=True)
class Grant:
    """One object permission the principal holds, by name (`via_group=False`) or through a group."""

    model_id: int
    codename: str
    expires_at: datetime | None
    via_group: bool


@dataclass(frozen=True, slots=True)
class Reach:
    """A set of model ids, or every model (`every`)."""

    every: bool = False
    ids: frozenset[int] = frozenset()

    def __contains__(self, model_id: int) -> bool:
        return self.every or model_id in self.ids

    def __and__(self, other: Reach) -> Reach:
        if self.every:
            return other
        if other.every:
            return self
        return Reach(ids=self.ids & other.ids)


EVERY = Reach(every=True)
NOTHING = Reach()


def token_reach(token: Token) -> Reach:
    return Reach(ids=frozenset(token.model_ids)) if token.restricted else EVERY


def granted(principal: Principal, grants: Iterable[Grant], codenames: frozenset[str], now: datetime) -> Reach:
    """The models of the live grants among `grants` with one of `codenames` that reach the principal."""
    return Reach(
        ids=frozenset(
            g.model_id
            for g in grants
            if g.codename in codenames
            and (g.expires_at is None or g.expires_at > now)
            and not (g.via_group and principal.service_account)
        )
    )


def sees_everything(principal: Principal) -> bool:
    return principal.active and (principal.superuser or bool(principal.roles_now & _SEES_ALL))


def visible(principal: Principal, token: Token, grants: Iterable[Grant], now: datetime) -> Reach:
    if not principal.active:
        return NOTHING
    base = EVERY if sees_everything(principal) else granted(principal, grants, _SEE, now)
    return base & token_reach(token)


def catalogue(principal: Principal, token: Token, grants: Iterable[Grant], now: datetime) -> Reach:
    if principal.active and (principal.superuser or principal.roles_now & _LISTS_ALL):
        return token_reach(token)
    return visible(principal, token, grants, now)


def invokable(principal: Principal, token: Token, grants: Iterable[Grant], now: datetime) -> Reach:
    if not principal.active:
        return NOTHING
    if principal.superuser:
        base = EVERY
    elif principal.roles & MAY_INVOKE:
        base = granted(principal, grants, _INVOKE, now)
    else:
        return NOTHING
    return base & token_reach(token)


def may_see(principal: Principal, token: Token, model_id: int, grants: Iterable[Grant], now: datetime) -> bool:
    return model_id in visible(principal, token, grants, now)


def may_invoke(principal: Principal, token: Token, model_id: int, grants: Iterable[Grant], now: datetime) -> bool:
    return model_id in invokable(principal, token, grants, now)


def may_reidentify(principal: Principal, token: Token, model_id: int, grants: Iterable[Grant], now: datetime) -> bool:
    """Whether the gateway puts the original identifiers back into this caller's answers from the
    model (surrogate mode): only with a live `reidentify` grant on that model (by name, or through a
    group for a person) AND the right to invoke it, within the token's models. Nobody holds it by
    role — the superuser included: a security officer grants it, per model, audited."""
    if not principal.active or model_id not in invokable(principal, token, grants, now):
        return False
    return model_id in granted(principal, grants, _REIDENTIFY, now) & token_reach(token)


def gateway_scope_allows(token: Token, *, invoke: bool) -> bool:
    """Inference needs the `invoke` scope; a model's metadata and readiness `invoke` or `read`."""
    return Scope.INVOKE in token.scopes or (not invoke and Scope.READ in token.scopes)


def deid_mode(mode: str | None, phi: bool) -> str:
    """The mode the gateway applies: the policy's, or `redact` for a model that receives PHI and has
    no mode of its own (identifiers are never sent on), else `off`."""
    if mode and mode != DEID_OFF:
        return mode
    return DEID_REDACT if phi else DEID_OFF
