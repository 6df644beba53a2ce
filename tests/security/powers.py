"""The closure-of-powers harness: principals, their credentials, and every changing route as
probes that exercise one power on one kind of target.

A *principal* is an attacker with some starting credential (an OTP-verified session of a role, or
an API token). Everything it acquires with its own calls becomes its own: a user it created with
a password it chose, a password it reset, a token it minted. Every credential it holds is an actor
of the same principal. A *power* is a pair (power, target kind), the target kind named relative
to the account that acts (see TARGET_KINDS). Effective powers are measured on the world, not
asked of the code: ("invoke", model) when one of the principal's tokens gets past the gateway's
grant check, ("hold", role) when an account it controls holds the role now.

Every changing route of the URLconf (DRF routers, plain views, every admin add/change/delete view
and admin action) must have an entry in `classify()`; `unclassified_routes()` names the ones that
have none, so a new route cannot slip past the closure test.

Probes run in a savepoint that is rolled back, unless what they did is the principal's gain: a new
credential, or a change to an account it controls that takes nothing away from what it holds
(e.g. a break-glass role on itself, then dropping the standing copy of the same role).
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.cookies import SimpleCookie

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.db import transaction
from django.urls import URLResolver, get_resolver, reverse
from django.utils import timezone
from django_otp.oath import TOTP
from rest_framework.test import APIClient
from rest_framework.views import APIView

from apps.accounts.models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Profile, digest_token
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, GUEST, PRIVILEGED, ROLES, SECURITY_OFFICER
from apps.registry.models import Model
from tests.factories import llm_governance_rows
from tests.gateway.dataplane_client import DataPlaneClient

User = get_user_model()
SAFE_METHODS = {"get", "head", "options", "trace"}
TARGET_KINDS = (
    "self",
    "other_person",  # an analyst or guest who is not the actor
    "privileged_person",  # someone holding a standing admin / security_officer / auditor role
    "own_service_account",  # owned by the acting account
    "other_service_account",  # owned by someone else
    "superuser",
)
GROUP_KINDS = ("own_group", "other_group", "role_group")
MODELS = ("mine", "theirs", "secret")  # granted to the analyst (and its CI account), to pat, to nobody
# Chat models in surrogate mode behind a deterministic upstream that echoes its prompt
# (tests/security/echo_upstream.py). chat-mine: the analyst invokes and holds `reidentify`, its CI
# account only invokes; chat-theirs: pat invokes and holds `reidentify`.
CHAT_MODELS = ("chat-mine", "chat-theirs")
IDENTIFIER = "123-45-6789"  # an SSN the de-identifier replaces by a surrogate (area 9xx, never issued)
CHAT_PROMPT = f"Patient SSN {IDENTIFIER}, please repeat it."
PASSWORD = "correct-horse-battery-9"
ALL_SCOPES = ["invoke", "read", "manage"]


class CountingClient(APIClient):
    """APIClient that counts the requests the closure sends."""

    sent = 0

    def request(self, *args, **kwargs):
        CountingClient.sent += 1
        return super().request(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Principals and credentials


@dataclass
class Cred:
    """One way a principal acts: a session or a bearer token of one account."""

    user_id: int
    kind: str  # "session" | "token"
    client: CountingClient
    origin: str  # how the principal came by it (for failure messages)
    token_id: int | None = None
    session_key: str | None = None

    @property
    def user(self):
        return User.objects.get(pk=self.user_id)


@dataclass
class Principal:
    name: str
    creds: list[Cred] = field(default_factory=list)
    passwords: dict[int, str] = field(default_factory=dict)  # accounts whose password it knows
    totp: dict[int, str] = field(default_factory=dict)  # base32 secrets of devices it enrolled
    enrolment: dict[int, str] = field(default_factory=dict)  # one-time enrolment codes it was shown
    powers: dict[tuple[str, str], str] = field(default_factory=dict)  # pair -> first witness
    probed: set = field(default_factory=set)  # credential signatures already probed
    held: set | None = None  # holdings() as of the last kept change (None: ask again)

    @property
    def accounts(self) -> set[int]:
        return {c.user_id for c in self.creds} | set(self.passwords)

    def add(self, pair: tuple[str, str], witness: str) -> bool:
        if pair in self.powers:
            return False
        self.powers[pair] = witness
        return True


def session_client(user, origin: str, verified: bool = True) -> Cred:
    """A session as conftest's otp_login makes it (privileged people pass the second factor)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.conftest import otp_login

    client = CountingClient()
    if verified and TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        otp_login(client, user)  # as the project's tests pass the second factor
    else:
        client.force_login(user)
    return Cred(user.pk, "session", client, origin, session_key=client.session.session_key)


def token_client(user_id: int, plaintext: str, origin: str) -> Cred:
    client = CountingClient(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    token = ApiToken.objects.get(digest=digest_token(plaintext))
    return Cred(user_id, "token", client, origin, token_id=token.pk)


def alive(cred: Cred) -> bool:
    user = User.objects.filter(pk=cred.user_id, is_active=True).first()
    if user is None:
        return False
    if cred.kind == "token":
        live = ApiToken.objects.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())
        return live.filter(pk=cred.token_id).exists()
    morsel = cred.client.cookies.get("sessionid")
    return morsel is not None and Session.objects.filter(session_key=morsel.value).exists()


def standing_roles(user) -> frozenset[str]:
    return frozenset(user.groups.filter(name__in=ROLES).values_list("name", flat=True))


def emergency_roles(user) -> frozenset[str]:
    now = timezone.now()
    return frozenset(
        EmergencyAccess.objects.filter(
            user=user, revoked_at__isnull=True, granted_at__lte=now, expires_at__gt=now
        ).values_list("role", flat=True)
    )


def is_service_account(user) -> bool:
    return Profile.objects.filter(user=user, is_service_account=True).exists()


def signature(cred: Cred) -> tuple:
    """What decides a credential's answers: two credentials with one signature are probed once."""
    user = cred.user
    scopes = tuple(sorted(ApiToken.objects.get(pk=cred.token_id).scopes)) if cred.token_id else ()
    return (
        cred.kind,
        scopes,
        is_service_account(user),
        user.is_superuser,
        standing_roles(user),
        emergency_roles(user),
        Profile.objects.filter(owner=user, is_service_account=True).exists(),
    )


def holdings(p: Principal) -> set[tuple]:
    """What the principal holds now: live accounts, their roles, tokens, sessions and grants."""
    ids = p.accounts
    out: set[tuple] = set()
    for user in User.objects.filter(pk__in=ids, is_active=True):
        out.add(("account", user.pk))
        out |= {("role", user.pk, r) for r in standing_roles(user) | emergency_roles(user)}
        if user.is_superuser:
            out.add(("superuser", user.pk))
    tokens = [c.token_id for c in p.creds if c.token_id]
    live = ApiToken.objects.filter(pk__in=tokens, revoked_at__isnull=True)
    out |= {("token", pk) for pk in live.values_list("pk", flat=True)}
    keys = [c.client.cookies["sessionid"].value for c in p.creds if "sessionid" in c.client.cookies]
    out |= {("session", k) for k in Session.objects.filter(session_key__in=keys).values_list("session_key", flat=True)}
    for uid, model, perm in ModelUserGrant.objects.filter(user_id__in=ids).values_list(
        "user_id", "content_object_id", "permission__codename"
    ):
        out.add(("grant", uid, model, perm))
    groups = Group.objects.filter(user__in=ids).values_list("pk", flat=True)
    for model, perm in ModelGroupGrant.objects.filter(group__in=list(groups)).values_list(
        "content_object_id", "permission__codename"
    ):
        out.add(("group-grant", model, perm))
    return out


def effective_powers(p: Principal, model_names=MODELS, memo: dict | None = None) -> dict[tuple[str, str], str]:
    """Measured, not asked: which models its tokens get through the gateway's grant check with
    (the upstream Triton port is closed, so a permitted call answers 503 triton_unavailable), which
    chat models answer them and which give them original identifiers back (`reidentify`), and which
    roles the accounts it controls hold now. `memo` (the closure's) spares the chat calls of a token
    whose facts have not changed since it was last measured."""
    found: dict[tuple[str, str], str] = {}
    for cred in p.creds:
        if cred.kind != "token" or not alive(cred):
            continue
        for name in model_names:
            CountingClient.sent += 1
            response = DataPlaneClient(**cred.client.defaults).post(f"/v2/models/{name}/infer", data=INFER)
            if response.status_code == 503:
                found.setdefault(("invoke", name), cred.origin)
        facts = _chat_facts(cred) if memo is not None else None
        if facts is not None and facts in memo:
            pairs = memo[facts]
        else:
            pairs = [pair for name in CHAT_MODELS for pair in chat_powers(cred, name)]
            if facts is not None:
                memo[facts] = pairs
        for pair in pairs:
            found.setdefault(pair, cred.origin)
    for user in User.objects.filter(pk__in=p.accounts, is_active=True):
        for role in standing_roles(user) | emergency_roles(user):
            found.setdefault(("hold", role), f"account {user.username}")
        if user.is_superuser:
            found.setdefault(("hold", "superuser"), f"account {user.username}")
    return found


INFER = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [0.5] * 4}]}


def _chat_facts(cred: Cred) -> tuple:
    """Everything a chat call's answer depends on that a principal can change: the token (scopes,
    its models), the account (roles, break-glass, kind) and the grants reaching it."""
    user = cred.user
    groups = list(user.groups.values_list("pk", flat=True))
    grants = ModelUserGrant.objects.filter(user=user).values_list(
        "content_object_id", "permission__codename", "expires_at"
    )
    via = ModelGroupGrant.objects.filter(group__in=groups).values_list(
        "content_object_id", "permission__codename", "expires_at"
    )
    allowed = ApiToken.objects.get(pk=cred.token_id).allowed_models.values_list("pk", flat=True)
    return (cred.token_id, signature(cred), frozenset(grants), frozenset(via), frozenset(allowed))


def chat_powers(cred: Cred, name: str) -> list[tuple[str, str]]:
    """("invoke", name) when the token's chat call is answered, and ("reidentify", name) when the
    answer holds the original identifier: the upstream echoes the (de-identified) prompt it got, so
    only the data plane's re-identification can put the original back."""
    from tests.security import echo_upstream

    CountingClient.sent += 1
    body = {"model": name, "messages": [{"role": "user", "content": CHAT_PROMPT}], "max_tokens": 64}
    seen = len(echo_upstream.received)
    response = DataPlaneClient(**cred.client.defaults).post("/v1/chat/completions", data=body)
    leaked = [p for p in echo_upstream.received[seen:] if IDENTIFIER in p]
    assert not leaked, f"the model {name} received the original identifier (caller {cred.origin})"
    if response.status_code != 200:
        return []
    answer = response.json()["choices"][0]["message"]["content"]
    assert answer, f"{name} answered nothing to {cred.origin}: the measurement would be blind"
    return [("invoke", name)] + ([("reidentify", name)] if IDENTIFIER in answer else [])


# ---------------------------------------------------------------------------------------------
# Acquiring credentials


def totp_now(secret_b32: str) -> str:
    return f"{TOTP(base64.b32decode(secret_b32)).token():06d}"


def login(p: Principal, user_id: int, origin: str) -> Cred | None:
    """Log in with a password the principal knows, as anyone would: the API login, the portal's
    TOTP enrolment (with an enrolment code if the principal was shown one) and, when the password
    must change at first login, the password change page."""
    user = User.objects.get(pk=user_id)
    password = p.passwords[user_id]
    client = CountingClient()
    body = {"username": user.username, "password": password}
    if user_id in p.totp:
        body["otp"] = totp_now(p.totp[user_id])
    response = client.post("/api/v1/accounts/login/", body, format="json")
    code = _code(response)
    if code == "otp_enrolment_required":
        if not _enrol(p, client, user, password):
            return None
    elif response.status_code != 200:
        return None
    if _code(client.get("/api/v1/accounts/me/")) == "password_expired":
        new = PASSWORD + "-" + secrets.token_hex(3)
        page = "accounts:password-change"
        client.post(reverse(page), {"old_password": password, "new_password1": new, "new_password2": new})
        p.passwords[user_id] = new
    if client.get("/api/v1/accounts/me/").status_code != 200:
        return None
    return Cred(user_id, "session", client, origin, session_key=client.cookies["sessionid"].value)


def _enrol(p: Principal, client: APIClient, user, password: str) -> bool:
    """Enrol a TOTP device as the person would: with the enrolment code if the principal was
    shown one (the page asks for it first), else by trust on first use if the portal allows it."""
    client.post(reverse("admin:login"), {"username": user.username, "password": password})
    if "sessionid" not in client.cookies:
        return False
    setup = reverse("accounts:2fa-setup")
    if user.pk in p.enrolment:
        client.post(setup, {"enrolment_code": p.enrolment[user.pk]})
    page = client.get(setup)
    secret = page.context.get("secret") if page.status_code == 200 and page.context else None
    if not secret:
        return False
    if client.post(setup, {"code": totp_now(secret)}).status_code != 302:
        return False
    p.totp[user.pk] = secret
    return True


def _code(response) -> str | None:
    if "json" not in response.get("Content-Type", ""):
        return None
    body = response.json()
    return body.get("code") if isinstance(body, dict) else None


# ---------------------------------------------------------------------------------------------
# Targets


class NotApplicable(Exception):
    """This kind of target does not exist for this actor (e.g. it owns no service account)."""


@dataclass
class Ctx:
    world: dict
    principal: Principal
    cred: Cred
    last: object = None  # the last response, for perform() to read its refusal code

    @property
    def me(self):
        return self.cred.user

    def target(self, kind: str):
        me = self.me
        if kind == "self":
            return me
        if kind == "own_service_account":
            found = User.objects.filter(profile__is_service_account=True, profile__owner=me).order_by("pk").first()
        elif kind == "other_service_account":
            found = (
                User.objects.filter(profile__is_service_account=True)
                .exclude(profile__owner=me)
                .exclude(pk=me.pk)
                .filter(pk__in=self.world["other_service_accounts"])
                .order_by("pk")
                .first()
            )
        else:
            found = User.objects.filter(pk__in=self.world[kind]).exclude(pk=me.pk).order_by("pk").first()
        if found is None:
            raise NotApplicable(kind)
        return found

    def group(self, kind: str) -> Group:
        me = self.me
        if kind == "own_group":
            found = me.groups.order_by("pk").first()
        elif kind == "role_group":
            found = Group.objects.filter(name=ANALYST).exclude(user=me).first()
        else:
            found = Group.objects.filter(name="radiology").exclude(user=me).first()
        if found is None:
            raise NotApplicable(kind)
        return found


# ---------------------------------------------------------------------------------------------
# Probes


@dataclass
class Result:
    ok: bool
    target_id: int | None = None  # the account the change was made to
    password: tuple[int, str] | None = None  # the principal now knows this account's password
    token: tuple[int, str] | None = None  # ...holds this token
    enrolment: tuple[int, str] | None = None  # ...was shown this enrolment code
    request: str = ""


@dataclass
class Attempt:
    power: str
    kind: str
    run: Callable[[Ctx], Result]


def _ok(response) -> bool:
    return 200 <= response.status_code < 300


def _json(response) -> dict:
    try:
        body = response.json()
    except Exception:
        return {}
    return body if isinstance(body, dict) else {}


def _enrolment_code(body: dict) -> str | None:
    for key, value in body.items():
        if "enrol" in key and isinstance(value, str) and value:
            return value
    return None


def _api(ctx: Ctx, method: str, url: str, body=None, multipart: bool = False):
    kwargs = {"format": "multipart" if multipart else "json"}
    if body is not None:
        kwargs["data"] = body
    ctx.last = getattr(ctx.cred.client, method)(url, **kwargs)
    return ctx.last


def kinds(power: str, build: Callable[[Ctx, str], Result], targets=TARGET_KINDS) -> Callable[[Ctx], Iterator[Attempt]]:
    def attempts(ctx: Ctx) -> Iterator[Attempt]:
        for kind in targets:
            yield Attempt(power, kind, lambda c, k=kind: build(c, k))

    return attempts


def _fresh_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


# Accounts API ---------------------------------------------------------------------------------


def api_user_create(ctx: Ctx) -> Iterator[Attempt]:
    for role in (ANALYST, ADMIN, SECURITY_OFFICER, AUDITOR):
        kind = "privileged_person" if role in PRIVILEGED else "other_person"

        def run(c: Ctx, role=role) -> Result:
            name = _fresh_name("made-")
            body = {"username": name, "password": PASSWORD, **({"role": role} if role else {})}
            r = _api(c, "post", reverse("user-list"), body)
            if r.status_code != 201:
                return Result(False)
            uid = _json(r)["id"]
            code = _enrolment_code(_json(r))
            return Result(True, uid, password=(uid, PASSWORD), enrolment=(uid, code) if code else None)

        yield Attempt("user.create", kind, run)


def _active(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    r = _api(c, "post", reverse("user-active", args=[target.pk]), {"is_active": False})
    return Result(_ok(r) and not User.objects.get(pk=target.pk).is_active, target.pk)


def api_add_role(ctx: Ctx) -> Iterator[Attempt]:
    for role in (ANALYST, GUEST, ADMIN, SECURITY_OFFICER, AUDITOR):
        power = "role.assign.privileged" if role in PRIVILEGED else "role.assign.basic"
        for kind in TARGET_KINDS:

            def run(c: Ctx, kind=kind, role=role) -> Result:
                target = c.target(kind)
                r = _api(c, "post", reverse("user-add-role", args=[target.pk]), {"role": role})
                held = target.groups.filter(name=role).exists()
                code = _enrolment_code(_json(r))
                return Result(_ok(r) and held, target.pk, enrolment=(target.pk, code) if code else None)

            yield Attempt(power, kind, run)


def api_remove_role(ctx: Ctx) -> Iterator[Attempt]:
    for power, pick in (("role.remove.basic", _basic_role), ("role.remove.privileged", _privileged_role)):
        for kind in TARGET_KINDS:

            def run(c: Ctx, kind=kind, pick=pick) -> Result:
                target = c.target(kind)
                role = pick(target)
                r = _api(c, "delete", reverse("user-remove-role", args=[target.pk, role]))
                return Result(_ok(r) and not target.groups.filter(name=role).exists(), target.pk)

            yield Attempt(power, kind, run)


def _basic_role(target) -> str:
    held = standing_roles(target) & {ANALYST, GUEST}
    if held:
        return sorted(held)[0]
    target.groups.add(Group.objects.get(name=ANALYST))  # setup: give it one to take away
    return ANALYST


def _privileged_role(target) -> str:
    held = standing_roles(target) & PRIVILEGED
    if not held:
        raise NotApplicable("holds no privileged role")
    return sorted(held)[0]


def api_break_glass(ctx: Ctx) -> Iterator[Attempt]:
    for role in (ANALYST, SECURITY_OFFICER, ADMIN):
        for kind in TARGET_KINDS:

            def run(c: Ctx, kind=kind, role=role) -> Result:
                target = c.target(kind)
                body = {"user": target.pk, "role": role, "minutes": 60, "reason": "closure probe"}
                r = _api(c, "post", reverse("break-glass-list"), body)
                return Result(_ok(r) and role in emergency_roles(target), target.pk)

            yield Attempt("breakglass.grant", kind, run)


def _break_glass_revoke(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    now = timezone.now()
    access = EmergencyAccess.objects.create(
        user=target, role=GUEST, reason="setup", granted_at=now, expires_at=now + timedelta(hours=1)
    )
    r = _api(c, "post", reverse("break-glass-revoke", args=[access.pk]))
    access.refresh_from_db()
    return Result(_ok(r) and access.revoked_at is not None, target.pk)


def _grant_user(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    model = c.world["models"]["secret"]
    for perm in ("invoke_model", "view_model"):
        r = _api(c, "post", reverse("grant-list"), {"model": model, "permission": perm, "user": target.pk})
        if _ok(r) and ModelUserGrant.objects.filter(user=target, content_object_id=model).exists():
            return Result(True, target.pk)
    return Result(False, target.pk)


def _grant_reidentify(c: Ctx, kind: str) -> Result:
    """`reidentify` on a chat model (the target's answers would carry originals once it also invokes)."""
    target = c.target(kind)
    model = c.world["models"]["chat-theirs"]
    r = _api(c, "post", reverse("grant-list"), {"model": model, "permission": "reidentify", "user": target.pk})
    held = ModelUserGrant.objects.filter(user=target, content_object_id=model, permission__codename="reidentify")
    return Result(_ok(r) and held.exists(), target.pk)


def _grant_group_reidentify(c: Ctx, kind: str) -> Result:
    group = c.group(kind)
    model = c.world["models"]["chat-theirs"]
    r = _api(c, "post", reverse("group-grant-list"), {"model": model, "permission": "reidentify", "group": group.pk})
    held = ModelGroupGrant.objects.filter(group=group, content_object_id=model, permission__codename="reidentify")
    return Result(_ok(r) and held.exists())


def both(*builders: Callable[[Ctx], Iterator[Attempt]]) -> Callable[[Ctx], Iterator[Attempt]]:
    def attempts(ctx: Ctx) -> Iterator[Attempt]:
        for build in builders:
            yield from build(ctx)

    return attempts


def _revoke_user_grant(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    grant = _setup_grant(ModelUserGrant, user=target, model=c.world["models"]["secret"])
    r = _api(c, "delete", reverse("grant-detail", args=[grant.pk]))
    return Result(_ok(r) and not ModelUserGrant.objects.filter(pk=grant.pk).exists(), target.pk)


def _grant_group(c: Ctx, kind: str) -> Result:
    group = c.group(kind)
    model = c.world["models"]["secret"]
    for perm in ("invoke_model", "view_model"):
        r = _api(c, "post", reverse("group-grant-list"), {"model": model, "permission": perm, "group": group.pk})
        if _ok(r) and ModelGroupGrant.objects.filter(group=group, content_object_id=model).exists():
            return Result(True)
    return Result(False)


def _revoke_group_grant(c: Ctx, kind: str) -> Result:
    group = c.group(kind)
    grant = _setup_grant(ModelGroupGrant, group=group, model=c.world["models"]["secret"])
    r = _api(c, "delete", reverse("group-grant-detail", args=[grant.pk]))
    return Result(_ok(r) and not ModelGroupGrant.objects.filter(pk=grant.pk).exists())


def _setup_grant(table, *, model: int, **grantee):
    from django.contrib.auth.models import Permission

    perm = Permission.objects.get(content_type__app_label="registry", codename="view_model")
    return table.objects.get_or_create(**grantee, permission=perm, content_object_id=model)[0]


def _issue_token(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    body = {"name": "closure", "scopes": ALL_SCOPES, **({} if kind == "self" else {"user": target.pk})}
    r = _api(c, "post", reverse("token-list"), body)
    plaintext = _json(r).get("token")
    if r.status_code != 201 or not plaintext:
        return Result(False, target.pk)
    owner = ApiToken.objects.get(digest=digest_token(plaintext)).user_id
    return Result(owner == target.pk, target.pk, token=(owner, plaintext))


def setup_token(user) -> ApiToken:
    plaintext = "svt_" + secrets.token_urlsafe(32)
    return ApiToken.objects.create(
        user=user,
        name="setup",
        digest=digest_token(plaintext),
        hint=plaintext[:10],
        scopes=["read"],
        expires_at=timezone.now() + timedelta(days=1),
    )


def _revoke_token(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    token = setup_token(target)
    r = _api(c, "post", reverse("token-revoke", args=[token.pk]))
    token.refresh_from_db()
    return Result(_ok(r) and token.revoked_at is not None, target.pk)


def api_service_account(ctx: Ctx) -> Iterator[Attempt]:
    for role in (ANALYST, ADMIN):

        def run(c: Ctx, role=role) -> Result:
            r = _api(c, "post", reverse("service-account-list"), {"name": _fresh_name("svc-made-"), "role": role})
            if r.status_code != 201:
                return Result(False)
            made = User.objects.get(pk=_json(r)["id"])
            return Result(standing_roles(made) == {role} and made.profile.owner_id == c.me.pk, made.pk)

        yield Attempt(
            "service_account.create" if role != ADMIN else "service_account.create.privileged",
            "own_service_account",
            run,
        )


# Admin site: users and tokens ----------------------------------------------------------------


def _admin_post(c: Ctx, url: str, data: dict):
    c.last = c.cred.client.post(url, data, format="multipart")
    return c.last


def _messages(response, level: int | None = None) -> list[str]:
    storage = getattr(response.wsgi_request, "_messages", None)
    queued = getattr(storage, "_queued_messages", []) if storage is not None else []
    return [str(m) for m in queued if level is None or m.level == level]


def _admin_reached(response) -> bool:
    """The admin let the request through (it may still have found the form invalid)."""
    if response.status_code == 302:
        location = response.get("Location", "")
        return not location.startswith(("/admin/login/", "/accounts/2fa/"))
    return response.status_code == 200


def admin_user_add(ctx: Ctx) -> Iterator[Attempt]:
    def run(c: Ctx) -> Result:
        name = _fresh_name("made-")
        data = {"username": name, "password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"}
        r = _admin_post(c, reverse("admin:auth_user_add"), data)
        made = User.objects.filter(username=name).first()
        if r.status_code != 302 or made is None:
            return Result(False)
        return Result(True, made.pk, password=(made.pk, PASSWORD))

    yield Attempt("user.create", "other_person", run)


def _user_form(target, **changes) -> dict:
    fmt = "%Y-%m-%d"
    joined = timezone.localtime(target.date_joined)
    form = {
        "username": target.username,
        "first_name": target.first_name,
        "last_name": target.last_name,
        "email": target.email,
        "date_joined_0": joined.strftime(fmt),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        **({"is_active": "on"} if target.is_active else {}),
    }
    if target.last_login:
        seen = timezone.localtime(target.last_login)
        form.update(last_login_0=seen.strftime(fmt), last_login_1=seen.strftime("%H:%M:%S"))
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def _admin_edit(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    email = f"{_fresh_name('x')}@example.org"
    r = _admin_post(c, reverse("admin:auth_user_change", args=[target.pk]), _user_form(target, email=email))
    return Result(r.status_code == 302 and User.objects.get(pk=target.pk).email == email, target.pk)


def _admin_deactivate(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    r = _admin_post(c, reverse("admin:auth_user_change", args=[target.pk]), _user_form(target, is_active=None))
    return Result(r.status_code == 302 and not User.objects.get(pk=target.pk).is_active, target.pk)


def _admin_delete_user(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    r = _admin_post(c, reverse("admin:auth_user_delete", args=[target.pk]), {"post": "yes"})
    return Result(r.status_code == 302 and not User.objects.filter(pk=target.pk).exists(), target.pk)


def _admin_delete_user_action(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    data = {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"}
    _admin_post(c, reverse("admin:auth_user_changelist"), data)
    return Result(not User.objects.filter(pk=target.pk).exists(), target.pk)


def _admin_password(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    new = PASSWORD + "-" + secrets.token_hex(3)
    data = {"password1": new, "password2": new, "usable_password": "true"}
    r = _admin_post(c, reverse("admin:auth_user_password_change", args=[target.pk]), data)
    changed = r.status_code == 302 and User.objects.get(pk=target.pk).check_password(new)
    return Result(changed, target.pk, password=(target.pk, new) if changed else None)


def _api_password(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    new = PASSWORD + "-" + secrets.token_hex(3)
    r = _api(c, "post", reverse("user-password", args=[target.pk]), {"password": new})
    changed = _ok(r) and User.objects.get(pk=target.pk).check_password(new)
    return Result(changed, target.pk, password=(target.pk, new) if changed else None)


def _user_action(c: Ctx, target, action: str):
    return _admin_post(c, reverse("admin:auth_user_changelist"), {"action": action, "_selected_action": [target.pk]})


def _admin_disable(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    r = _user_action(c, target, "disable_accounts")
    return Result(not User.objects.get(pk=target.pk).is_active and not _messages(r, messages.ERROR), target.pk)


def _admin_enable(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    User.objects.filter(pk=target.pk).update(is_active=False)  # setup: something to enable
    r = _user_action(c, target, "enable_accounts")
    return Result(User.objects.get(pk=target.pk).is_active and not _messages(r, messages.ERROR), target.pk)


ENROLMENT_IN_MESSAGE = re.compile(r"Enrolment code for \S+: (\S+)")


def admin_role_action(role: str, assign: bool) -> Callable[[Ctx], Iterator[Attempt]]:
    level = "privileged" if role in PRIVILEGED else "basic"
    power = f"role.{'assign' if assign else 'remove'}.{level}"

    def run(c: Ctx, kind: str) -> Result:
        target = c.target(kind)
        holds = target.groups.filter(name=role).exists()
        if not assign and not holds:
            raise NotApplicable(f"does not hold {role}")
        if assign and holds:  # nothing to change: success could not be told from a refusal
            raise NotApplicable(f"already holds {role}")
        r = _user_action(c, target, f"{'assign' if assign else 'remove'}_{role}")
        held = target.groups.filter(name=role).exists()
        refused = _messages(r, messages.ERROR)  # run_service shows the service's refusal
        codes = [m.group(1) for text in _messages(r) if (m := ENROLMENT_IN_MESSAGE.search(text))]
        return Result(held == assign and not refused, target.pk, enrolment=(target.pk, codes[0]) if codes else None)

    return kinds(power, run)


TOKEN_IN_MESSAGE = re.compile(r"(svt_[A-Za-z0-9_\-]{20,})")


def _admin_issue_token(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    r = _admin_post(c, reverse("admin:accounts_apitoken_add"), {"user": target.pk, "name": "closure", "days": 30})
    found = [m.group(1) for text in _messages(r) if (m := TOKEN_IN_MESSAGE.search(text))]
    if r.status_code != 302 or not found:
        return Result(False, target.pk)
    owner = ApiToken.objects.get(digest=digest_token(found[0])).user_id
    return Result(owner == target.pk, target.pk, token=(owner, found[0]))


def _admin_revoke_token(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    token = setup_token(target)
    _admin_post(c, reverse("admin:accounts_apitoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    return Result(token.revoked_at is not None, target.pk)


# The access pages of issue 17: one's own tokens, the user page's Roles section, a model's grants
# page and the break-glass admin. Each probe tries every kind of target, as the API probes do.


def _page_issue_token(c: Ctx, kind: str) -> Result:
    """/accounts/tokens/ issues for the signed-in person only: naming another in the POST must not
    give a token of theirs."""
    target = c.target(kind)
    data = {"name": "closure", "days": 1, "scopes": ALL_SCOPES, "user": target.pk}
    c.last = c.cred.client.post(reverse("accounts:tokens"), data)
    found = TOKEN_IN_MESSAGE.search(c.last.content.decode()) if c.last.status_code == 200 else None
    if found is None:
        return Result(False, target.pk)
    owner = ApiToken.objects.get(digest=digest_token(found.group(1))).user_id
    return Result(owner == target.pk, target.pk, token=(owner, found.group(1)))


def _page_revoke_token(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    token = setup_token(target)
    c.last = c.cred.client.post(reverse("accounts:token-revoke", args=[token.pk]))
    token.refresh_from_db()
    return Result(token.revoked_at is not None, target.pk)


def admin_role_page(role: str, assign: bool) -> Callable[[Ctx], Iterator[Attempt]]:
    """The user page's Roles section (POST admin:auth_user_roles), as admin_role_action does the
    user list's actions."""
    level = "privileged" if role in PRIVILEGED else "basic"
    power = f"role.{'assign' if assign else 'remove'}.{level}"

    def run(c: Ctx, kind: str) -> Result:
        target = c.target(kind)
        holds = target.groups.filter(name=role).exists()
        if holds != (not assign):
            raise NotApplicable(f"{'already holds' if assign else 'does not hold'} {role}")
        data = {"role": role, "op": "assign" if assign else "remove"}
        r = _admin_post(c, reverse("admin:auth_user_roles", args=[target.pk]), data)
        held = target.groups.filter(name=role).exists()
        refused = r.status_code != 302 or _messages(r, messages.ERROR)
        codes = [m.group(1) for text in _messages(r) if (m := ENROLMENT_IN_MESSAGE.search(text))]
        return Result(held == assign and not refused, target.pk, enrolment=(target.pk, codes[0]) if codes else None)

    return kinds(power, run)


def _grants_page(c: Ctx, model: str, data: dict) -> bool:
    """Post to a model's grants page; True when the page accepted it (a redirect, no error message)."""
    r = _admin_post(c, reverse("admin:registry_model_grants", args=[c.world["models"][model]]), data)
    return r.status_code == 302 and not _messages(r, messages.ERROR)


def _page_grant_user(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    for perm in ("invoke_model", "view_model"):
        ok = _grants_page(c, "secret", {"user": target.pk, "permission": perm})
        if ok and ModelUserGrant.objects.filter(user=target, content_object_id=c.world["models"]["secret"]).exists():
            return Result(True, target.pk)
    return Result(False, target.pk)


def _page_grant_reidentify(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    ok = _grants_page(c, "chat-theirs", {"user": target.pk, "permission": "reidentify"})
    held = ModelUserGrant.objects.filter(
        user=target, content_object_id=c.world["models"]["chat-theirs"], permission__codename="reidentify"
    )
    return Result(ok and held.exists(), target.pk)


def _page_grant_group(c: Ctx, kind: str) -> Result:
    group = c.group(kind)
    for perm in ("invoke_model", "view_model"):
        ok = _grants_page(c, "secret", {"group": group.pk, "permission": perm})
        if ok and ModelGroupGrant.objects.filter(group=group, content_object_id=c.world["models"]["secret"]).exists():
            return Result(True)
    return Result(False)


def _page_group_reidentify(c: Ctx, kind: str) -> Result:
    group = c.group(kind)
    ok = _grants_page(c, "chat-theirs", {"group": group.pk, "permission": "reidentify"})
    held = ModelGroupGrant.objects.filter(
        group=group, content_object_id=c.world["models"]["chat-theirs"], permission__codename="reidentify"
    )
    return Result(ok and held.exists())


def _page_revoke_user_grant(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    grant = _setup_grant(ModelUserGrant, user=target, model=c.world["models"]["secret"])
    ok = _grants_page(c, "secret", {"revoke": "1", "kind": "user", "grantee": target.pk, "permission": "view_model"})
    return Result(ok and not ModelUserGrant.objects.filter(pk=grant.pk).exists(), target.pk)


def _page_revoke_group_grant(c: Ctx, kind: str) -> Result:
    group = c.group(kind)
    grant = _setup_grant(ModelGroupGrant, group=group, model=c.world["models"]["secret"])
    ok = _grants_page(c, "secret", {"revoke": "1", "kind": "group", "grantee": group.pk, "permission": "view_model"})
    return Result(ok and not ModelGroupGrant.objects.filter(pk=grant.pk).exists())


def admin_break_glass(ctx: Ctx) -> Iterator[Attempt]:
    """The break-glass admin's add form, as api_break_glass does the API."""
    for role in (ANALYST, SECURITY_OFFICER, ADMIN):
        for kind in TARGET_KINDS:

            def run(c: Ctx, kind=kind, role=role) -> Result:
                target = c.target(kind)
                data = {"user": target.pk, "role": role, "minutes": 60, "reason": "closure probe"}
                r = _admin_post(c, reverse("admin:accounts_emergencyaccess_add"), data)
                ok = r.status_code == 302 and not _messages(r, messages.ERROR)
                return Result(ok and role in emergency_roles(target), target.pk)

            yield Attempt("breakglass.grant", kind, run)


def _admin_break_glass_revoke(c: Ctx, kind: str) -> Result:
    target = c.target(kind)
    now = timezone.now()
    access = EmergencyAccess.objects.create(
        user=target, role=GUEST, reason="setup", granted_at=now, expires_at=now + timedelta(hours=1)
    )
    url = reverse("admin:accounts_emergencyaccess_changelist")
    _admin_post(c, url, {"action": "revoke", "_selected_action": [access.pk]})
    access.refresh_from_db()
    return Result(access.revoked_at is not None, target.pk)


# Admin site: every other model, and the API's non-account writes (reached = authorised) -----------


def _admin_object(verb: str, label: str, action: str | None = None) -> Callable[[Ctx], Iterator[Attempt]]:
    app, model_name = label.split(".")
    power = f"admin.{verb}:{label}" + (f".{action}" if action else "")

    def run(c: Ctx) -> Result:
        model = admin.site._registry[_model_class(label)].model
        obj = model._default_manager.order_by("pk").first()
        if verb == "add":
            r = _admin_post(c, reverse(f"admin:{app}_{model_name}_add"), {})
            return Result(_admin_reached(r))
        if obj is None:
            raise NotApplicable(f"no {label} in the world")
        if verb == "change":
            r = _admin_post(c, reverse(f"admin:{app}_{model_name}_change", args=[obj.pk]), {})
            return Result(_admin_reached(r))
        if verb == "delete":
            r = _admin_post(c, reverse(f"admin:{app}_{model_name}_delete", args=[obj.pk]), {"post": "yes"})
            return Result(_admin_reached(r))
        url = reverse(f"admin:{app}_{model_name}_changelist")
        page = c.cred.client.get(url)
        form = page.context.get("action_form") if page.status_code == 200 and page.context else None
        if form is None or action not in dict(form.fields["action"].choices):
            return Result(False)  # not offered: the admin ignores or refuses the POST
        data = {
            "action": action,
            "_selected_action": [obj.pk],
            **({"post": "yes"} if action == "delete_selected" else {}),
        }
        r = _admin_post(c, url, data)
        return Result(_admin_reached(r))

    def attempts(ctx: Ctx) -> Iterator[Attempt]:
        yield Attempt(power, "object", run)

    return attempts


def _model_class(label: str):
    from django.apps import apps

    return apps.get_model(label)


def _api_object(power: str, method: str, url: Callable[[dict], str], body=None, multipart=False):
    """Writes outside accounts: reached when the caller got past authorisation (a 400 for an
    empty body or a 409 for the object's state still means the caller may do this)."""

    def run(c: Ctx) -> Result:
        r = _api(c, method, url(c.world), body, multipart)
        assert r.status_code != 429, f"rate limited while probing {power}: the closure would be incomplete"
        return Result(r.status_code not in (401, 403, 404, 405))

    def attempts(ctx: Ctx) -> Iterator[Attempt]:
        yield Attempt(power, "object", run)

    return attempts


def _admin_page(power: str, name: str, body: dict | None = None):
    """An admin page of its own (a ModelAdmin's extra URL) whose POST calls a service: reached when
    the admin let the POST through (the service may still refuse it for the world's state)."""

    def run(c: Ctx) -> Result:
        return Result(_admin_reached(_admin_post(c, reverse(name), body or {})))

    def attempts(ctx: Ctx) -> Iterator[Attempt]:
        yield Attempt(power, "object", run)

    return attempts


@dataclass(frozen=True)
class Inert:
    """A changing route that exercises no power over anyone but the caller's own session or
    password (or is the gateway's invoke, which effective_powers measures)."""

    reason: str


def _u(name: str, *args: str):
    return lambda w: reverse(name, args=[w.get(a, a) for a in args])


def classify() -> dict[tuple[str, str], Callable | Inert]:
    """(route key, method or method:action) -> its probe builder. Keys are what changing_routes() yields."""
    table: dict[tuple[str, str], Callable | Inert] = {
        # Accounts API
        ("user-list", "post"): api_user_create,
        ("user-active", "post"): kinds("account.active", _active),
        ("user-add-role", "post"): api_add_role,
        ("user-remove-role", "delete"): api_remove_role,
        ("user-password", "post"): kinds("password.reset", _api_password),
        ("break-glass-list", "post"): api_break_glass,
        ("break-glass-revoke", "post"): kinds("breakglass.revoke", _break_glass_revoke),
        ("grant-list", "post"): both(kinds("grant.create", _grant_user), kinds("grant.reidentify", _grant_reidentify)),
        ("grant-detail", "delete"): kinds("grant.revoke", _revoke_user_grant),
        ("group-grant-list", "post"): both(
            kinds("grant.create", _grant_group, GROUP_KINDS),
            kinds("grant.reidentify", _grant_group_reidentify, GROUP_KINDS),
        ),
        ("group-grant-detail", "delete"): kinds("grant.revoke", _revoke_group_grant, GROUP_KINDS),
        ("token-list", "post"): kinds("token.issue", _issue_token),
        ("token-revoke", "post"): kinds("token.revoke", _revoke_token),
        ("service-account-list", "post"): api_service_account,
        ("login", "post"): Inert("logs the caller in with credentials it already has"),
        # Registry, deployments, keys, compliance (authorisation only)
        ("model-version-list", "post"): _api_object("model.upload", "post", _u("model-version-list", "mine"), {}, True),
        # a GGUF import is an upload of a version (registry.add_modelversion), staged then converted
        ("import-list", "post"): _api_object("model.upload", "post", _u("import-list"), {}, True),
        ("model-version-triton-layout", "post"): Inert("renders a GPU host's configuration; stores nothing"),
        ("model-version-shred", "post"): _api_object(
            "model.shred", "post", lambda w: reverse("model-version-shred", args=["mine", 1]), {"reason": "probe"}
        ),
        ("server-list", "post"): _api_object("server.register", "post", _u("server-list"), {}),
        # who registers a server sets its restricted-API credential (deployments.add_inferenceserver)
        ("server-credential", "post"): _api_object(
            "server.register", "post", _u("server-credential", "server"), {"credential": None}
        ),
        ("deployment-list", "post"): _api_object("deployment.create", "post", _u("deployment-list"), {}),
        ("deployment-redeploy", "post"): _api_object(
            "deployment.redeploy", "post", _u("deployment-redeploy", "deployment")
        ),
        ("deployment-undeploy", "post"): _api_object(
            "deployment.undeploy", "post", _u("deployment-undeploy", "deployment")
        ),
        ("rollout-list", "post"): _api_object("rollout.start", "post", _u("rollout-list"), {}),
        ("rollout-promote", "post"): _api_object("rollout.promote", "post", _u("rollout-promote", "rollout")),
        ("rollout-rollback", "post"): _api_object("rollout.rollback", "post", _u("rollout-rollback", "rollout")),
        ("rollout-abort", "post"): _api_object("rollout.abort", "post", _u("rollout-abort", "rollout")),
        # servers change and go (refused while they hold replicas: still reached), replica sets
        # are placed, scaled and retired (docs/fleet.md)
        ("server-detail", "patch"): _api_object("server.change", "patch", _u("server-detail", "server"), {}),
        ("server-detail", "delete"): _api_object("server.delete", "delete", _u("server-detail", "server")),
        ("replicaset-list", "post"): _api_object("replica_set.create", "post", _u("replicaset-list"), {}),
        ("replicaset-scale", "post"): _api_object(
            "replica_set.scale", "post", _u("replicaset-scale", "replica_set"), {}
        ),
        ("replicaset-retire", "post"): _api_object(
            "replica_set.retire", "post", _u("replicaset-retire", "replica_set")
        ),
        ("replicaset-autoscale", "patch"): _api_object(
            "replica_set.autoscale", "patch", _u("replicaset-autoscale", "replica_set"), {}
        ),
        ("batchingsweep-list", "post"): _api_object("sweep.request", "post", _u("batchingsweep-list"), {}),
        ("batchingsweep-apply", "post"): _api_object("sweep.apply", "post", _u("batchingsweep-apply", "sweep"), {}),
        ("kek-rotate", "post"): _api_object("kek.rotate", "post", _u("kek-rotate"), {"reason": "probe"}),
        ("kek-retire", "post"): _api_object("kek.retire", "post", _u("kek-retire", "kek")),
        ("kek-rotation-resume", "post"): _api_object("kek.resume", "post", _u("kek-rotation-resume", "rotation")),
        ("compliance-evaluate", "post"): _api_object("compliance.evaluate", "post", _u("compliance-evaluate"), {}),
        ("compliance-attachment-list", "post"): _api_object(
            "compliance.attach", "post", _u("compliance-attachment-list"), {}
        ),
        ("compliance-attachment-detail", "delete"): _api_object(
            "compliance.detach", "delete", _u("compliance-attachment-detail", "attachment")
        ),
        ("compliance-policy-list", "post"): _api_object("compliance.policy", "post", _u("compliance-policy-list"), {}),
        ("compliance-attestation-list", "post"): _api_object(
            "compliance.attest", "post", _u("compliance-attestation-list"), {}, True
        ),
        ("compliance-report-list", "post"): _api_object("compliance.report", "post", _u("compliance-report-list"), {}),
        # Chat-model governance (docs/llm.md)
        ("llm-chat-policy-list", "post"): _api_object("llm.policy", "post", _u("llm-chat-policy-list"), {}),
        ("llm-quota-list", "post"): _api_object("llm.quota.set", "post", _u("llm-quota-list"), {}),
        ("llm-quota-detail", "delete"): _api_object("llm.quota.delete", "delete", _u("llm-quota-detail", "quota")),
        ("llm-exchange-detail", "delete"): _api_object(
            "llm.exchange.delete", "delete", _u("llm-exchange-detail", "exchange"), {"reason": "probe"}
        ),
        # Plain views
        ("path:", "post"): Inert("a redirect to /admin/"),
        ("healthz", "post"): Inert("liveness probe"),
        ("metrics", "post"): Inert("GET only (405): Prometheus figures, read with the metrics token"),
        ("metrics-triton", "post"): Inert("GET only (405): a Triton server's metrics, relayed"),
        ("admin:index", "post"): Inert("a page"),
        ("admin:dashboard-data", "post"): Inert("the dashboard's figures: GET only (a POST is 405)"),
        # Issue 17's jobs in the admin: the same services (and powers) as their API routes
        ("admin:compliance_controlresult_evaluate", "post"): _admin_page(
            "admin.page:compliance.evaluate", "admin:compliance_controlresult_evaluate"
        ),
        ("admin:keys_kekrotation_start", "post"): _admin_page(
            "admin.page:keys.rotate", "admin:keys_kekrotation_start", {"reason": "probe"}
        ),
        ("admin:compliance_compliancereport_download", "post"): Inert("a report file: GET only (a POST is 405)"),
        ("admin:audit_auditevent_export", "post"): Inert(
            "downloads the export of the events the caller may read (a read, recorded as audit.export)"
        ),
        ("admin:app_list", "post"): Inert("a page"),
        ("admin:jsi18n", "post"): Inert("a script"),
        ("admin:autocomplete", "post"): Inert("a search"),
        ("admin:view_on_site", "post"): Inert("a redirect"),
        ("path:admin/(?P<url>.*)$", "post"): Inert("the admin's 404"),
        ("admin:login", "post"): Inert("logs the caller in with credentials it already has"),
        ("admin:logout", "post"): Inert("ends the caller's own session"),
        ("accounts:login", "post"): Inert("logs the caller in with credentials it already has (everyone's login)"),
        ("accounts:logout", "post"): Inert("ends the caller's own session"),
        ("admin:password_change", "post"): Inert("changes the caller's own password"),
        ("admin:password_change_done", "post"): Inert("a page"),
        ("accounts:password-change", "post"): Inert("changes the caller's own password"),
        ("accounts:password-change-done", "post"): Inert("a page"),
        ("accounts:2fa-setup", "post"): Inert("enrols the caller's own device (used by login())"),
        ("accounts:2fa-verify", "post"): Inert("verifies the caller's own second factor"),
        ("accounts:preferences", "post"): Inert("sets the caller's own language and time zone (docs/i18n.md)"),
        # The access pages of issue 17 (docs/access-control.md)
        ("accounts:tokens", "post"): kinds("token.issue", _page_issue_token),
        ("accounts:token-revoke", "post"): kinds("token.revoke", _page_revoke_token),
        ("admin:auth_user_roles", "post"): both(*[admin_role_page(r, a) for r in ROLES for a in (True, False)]),
        ("admin:registry_model_grants", "post"): both(
            kinds("grant.create", _page_grant_user),
            kinds("grant.reidentify", _page_grant_reidentify),
            kinds("grant.create", _page_grant_group, GROUP_KINDS),
            kinds("grant.reidentify", _page_group_reidentify, GROUP_KINDS),
            kinds("grant.revoke", _page_revoke_user_grant),
            kinds("grant.revoke", _page_revoke_group_grant, GROUP_KINDS),
        ),
    }
    # The gateway's invoke is not a portal route: the data plane serves /v2/ (apps/gateway/dataplane),
    # and effective_powers() measures it there.
    for model, modeladmin in admin.site._registry.items():
        table.update(_admin_model_rows(model._meta.label_lower, modeladmin))
    return table


def _admin_model_rows(label: str, modeladmin) -> dict:
    app, name = label.split(".")
    prefix = f"admin:{app}_{name}"
    rows: dict = {
        (f"{prefix}_changelist", "post"): Inert("no list_editable (checked by the test); actions are rows below"),
        (f"{prefix}_history", "post"): Inert("a page"),
        (f"path:admin/{app}/{name}/<path:object_id>/", "post"): Inert("a redirect"),
        (f"{prefix}_add", "post"): _admin_object("add", label),
        (f"{prefix}_change", "post"): _admin_object("change", label),
        (f"{prefix}_delete", "post"): _admin_object("delete", label),
    }
    for _func, action, _desc in modeladmin._get_base_actions():
        rows[(f"{prefix}_changelist", f"post:{action}")] = _admin_object("action", label, action)
    if label == "auth.user":

        def change(ctx: Ctx) -> Iterator[Attempt]:
            yield from kinds("user.edit", _admin_edit)(ctx)
            yield from kinds("account.active", _admin_deactivate)(ctx)

        rows.update(
            {
                (f"{prefix}_add", "post"): admin_user_add,
                (f"{prefix}_change", "post"): change,
                (f"{prefix}_delete", "post"): kinds("user.delete", _admin_delete_user),
                (f"{prefix}_password_change", "post"): kinds("password.reset", _admin_password),
            }
        )
        if (f"{prefix}_changelist", "post:delete_selected") in rows:
            rows[(f"{prefix}_changelist", "post:delete_selected")] = kinds("user.delete", _admin_delete_user_action)
        for name, build in (("disable_accounts", _admin_disable), ("enable_accounts", _admin_enable)):
            if (f"{prefix}_changelist", f"post:{name}") in rows:
                rows[(f"{prefix}_changelist", f"post:{name}")] = kinds("account.active", build)
        for role in ROLES:
            for assign in (True, False):
                key = (f"{prefix}_changelist", f"post:{'assign' if assign else 'remove'}_{role}")
                if key in rows:
                    rows[key] = admin_role_action(role, assign)
    if label == "accounts.emergencyaccess":
        rows[(f"{prefix}_add", "post")] = admin_break_glass
        rows[(f"{prefix}_changelist", "post:revoke")] = kinds("breakglass.revoke", _admin_break_glass_revoke)
    if label == "accounts.apitoken":
        rows[(f"{prefix}_add", "post")] = kinds("token.issue", _admin_issue_token)
        rows[(f"{prefix}_changelist", "post:revoke")] = kinds("token.revoke", _admin_revoke_token)
    return rows


# ---------------------------------------------------------------------------------------------
# Route enumeration


def _walk(resolver=None, prefix: str = "", namespace: str = ""):
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern).removeprefix("^") if prefix else str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern, route, ":".join(filter(None, (namespace, pattern.namespace))))
        else:
            name = pattern.name and ":".join(filter(None, (namespace, pattern.name)))
            yield (name or f"path:{route}"), pattern.callback


def changing_routes() -> set[tuple[str, str]]:
    """Every (route, method) that may change something: DRF actions and APIView handlers for
    unsafe methods, POST for every plain Django view, and one entry per admin action."""
    found: set[tuple[str, str]] = set()
    for key, callback in _walk():
        actions = getattr(callback, "actions", None)
        cls = getattr(callback, "cls", None)
        if actions:
            found |= {(key, m) for m in actions if m not in SAFE_METHODS}
        elif cls is not None and issubclass(cls, APIView):
            found |= {(key, m) for m in cls.http_method_names if m not in SAFE_METHODS and hasattr(cls, m)}
        else:
            found.add((key, "post"))
    for model, modeladmin in admin.site._registry.items():
        changelist = f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"
        found |= {(changelist, f"post:{name}") for _f, name, _d in modeladmin._get_base_actions()}
    return found


def attempts_for(ctx: Ctx, table: dict) -> Iterator[tuple[tuple[str, str], Attempt]]:
    for key in sorted(table):
        entry = table[key]
        if isinstance(entry, Inert):
            continue
        for attempt in entry(ctx):
            yield key, attempt


# ---------------------------------------------------------------------------------------------
# Running probes


@dataclass
class Stats:
    requests: int = 0
    probes: int = 0
    rounds: list[tuple] = field(default_factory=list)  # (principal, rounds, requests, probes so far)
    kept: list[str] = field(default_factory=list)


# Refusals that DRF's permission check (or the account gate) gives before the view reads its
# input: they cannot depend on the target, so the rest of that route is refused too.
ROUTE_CLOSED = {
    "not_authenticated",
    "permission_denied",
    "insufficient_scope",
    "token_not_allowed",
    "token_cannot_issue_tokens",
    "otp_required",
    "otp_enrolment_required",
    "password_expired",
}


def perform(p: Principal, cred: Cred, key, attempt: Attempt, world: dict, stats: Stats, keep_all=False) -> str:
    """Run one attempt in a savepoint. Record the power if it succeeded; keep the change when it is
    the principal's gain (or always, with keep_all, for the stateful walk). Returns "ok", "refused",
    "closed" (refused before the view: the route is closed to this credential) or "n/a"."""
    ctx = Ctx(world, p, cred)
    cookies = SimpleCookie(cred.client.cookies)
    before = p.held if p.held is not None else holdings(p)
    sid = transaction.savepoint()
    try:
        result = attempt.run(ctx)
    except NotApplicable:
        transaction.savepoint_rollback(sid)
        return "n/a"
    stats.probes += 1
    if not result.ok:
        transaction.savepoint_rollback(sid)
        cred.client.cookies = cookies
        last = ctx.last
        closed = last is not None and last.status_code in (401, 403) and _code(last) in ROUTE_CLOSED
        return "closed" if closed else "refused"
    witness = f"{key[0]} {key[1]} as {cred.origin}"
    p.add((attempt.power, attempt.kind), witness)
    gain = result.password or result.token
    after = holdings(p)
    controlled = result.target_id in p.accounts
    if keep_all or (after >= before and (gain or after > before or controlled)):
        transaction.savepoint_commit(sid)
        p.held = None
        stats.kept.append(f"{p.name}: {attempt.power}/{attempt.kind} ({witness})")
        _acquire(p, result, f"{attempt.power}/{attempt.kind} by [{cred.origin}]")
    else:
        transaction.savepoint_rollback(sid)
        cred.client.cookies = cookies
        p.held = before
    return "ok"


def _acquire(p: Principal, result: Result, origin: str) -> None:
    if result.enrolment:
        p.enrolment[result.enrolment[0]] = result.enrolment[1]
    if result.token:
        uid, plaintext = result.token
        p.creds.append(token_client(uid, plaintext, f"token of {User.objects.get(pk=uid).username} <- {origin}"))
    if result.password:
        p.passwords[result.password[0]] = result.password[1]
    # A new password, or a change to an account whose password it knows (a role that now needs a
    # second factor): log in afresh, as that person would.
    uid = result.password[0] if result.password else result.target_id
    if uid in p.passwords and User.objects.filter(pk=uid, is_active=True).exists():
        cred = login(p, uid, f"session of {User.objects.get(pk=uid).username} <- {origin}")
        if cred is not None:
            p.creds.append(cred)


# ---------------------------------------------------------------------------------------------
# The world


def new_token(user, scopes=ALL_SCOPES) -> str:
    """A starting credential, written directly: how it came to exist is not under test."""
    plaintext = "svt_" + secrets.token_urlsafe(32)
    ApiToken.objects.create(
        user=user,
        name="start",
        digest=digest_token(plaintext),
        hint=plaintext[:10],
        scopes=list(scopes),
        expires_at=timezone.now() + timedelta(days=1),
    )
    return plaintext


def build_world(onnx_bytes: bytes) -> tuple[dict, dict[str, Principal]]:
    """The accounts, models and objects the principals act in, and the principals themselves."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from apps.accounts.services import create_service_account, grant_model_access
    from tests.conftest import make_user
    from tests.factories import ModelVersionFactory
    from tests.gateway.helpers import deploy

    people = {
        "ops": ADMIN, "sofia": SECURITY_OFFICER, "audrey": AUDITOR, "alice": ANALYST, "gus": GUEST,
        "ops2": ADMIN, "sofia2": SECURITY_OFFICER, "pat": ANALYST, "pete": GUEST, "pia": AUDITOR, "pim": ADMIN,
    }  # fmt: skip
    u = {name: make_user(name, role) for name, role in people.items()}
    u["root"] = User.objects.create_superuser("root", "root@example.org", PASSWORD)
    for user in u.values():
        if user.is_superuser or people.get(user.username) in PRIVILEGED:
            TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    svc = {}
    for owner in ("ops", "sofia", "audrey", "alice", "gus", "ops2", "sofia2", "pat", "pia"):
        role = GUEST if owner == "gus" else ANALYST
        svc[owner] = create_service_account(name=f"svc-{owner}", owner_id=u[owner].pk, role=role, actor=None)
    svc["ci"] = create_service_account(name="svc-ci", owner_id=u["alice"].pk, role=ANALYST, actor=None)
    Group.objects.create(name="radiology")

    models, deployment = {}, None
    for name, grantees in (("mine", [u["alice"], svc["ci"]]), ("theirs", [u["pat"], svc["pat"]]), ("secret", [])):
        version = ModelVersionFactory(model_name=name, data=onnx_bytes, actor=u["ops"])
        deployment = deploy(version)
        models[name] = version.model.pk
        for grantee in grantees:
            grant_model_access(model_id=version.model.pk, permission="invoke_model", user_id=grantee.pk, actor=None)
    for name, grantees in (("chat-mine", [u["alice"], svc["ci"]]), ("chat-theirs", [u["pat"]])):
        models[name] = make_chat_model(name, u["ops"]).pk
        for grantee in grantees:
            grant_model_access(model_id=models[name], permission="invoke_model", user_id=grantee.pk, actor=None)
        # the analysts themselves hold reidentify; the CI account only invokes
        for grantee in (u["alice"] if name == "chat-mine" else u["pat"],):
            grant_model_access(model_id=models[name], permission="reidentify", user_id=grantee.pk, actor=None)
    from apps.deployments.models import BatchingSweep, SweepState
    from apps.deployments.services import request_replica_set

    fleet = ModelVersionFactory(model_name="fleet", data=onnx_bytes, actor=u["ops"])
    replica_set = request_replica_set(model_version_id=fleet.pk, replicas=1, actor=u["ops"])
    world = {
        "users": {k: v.pk for k, v in u.items()},
        "models": models,
        "mine": "mine",
        "deployment": deployment.pk,
        "replica_set": replica_set.pk,
        # a finished sweep that chose nothing: applying it is refused (409) once allowed
        "sweep": BatchingSweep.objects.create(
            replica_set=replica_set, rate_per_second=5, slo_p99_ms=100, state=SweepState.DONE
        ).pk,
        "server": deployment.server_id,
        "rollout": _rollout_of("secret", u["ops"]),
        "other_person": [u["pat"].pk, u["pete"].pk],
        "privileged_person": [u["pia"].pk, u["pim"].pk],
        "superuser": [u["root"].pk],
        "other_service_accounts": [svc["pat"].pk, svc["pia"].pk],
        **_objects(),
        **llm_governance_rows(Model.objects.get(name="mine"), u["alice"]),
    }
    principals = {name: Principal(name) for name in ("admin", "officer", "auditor", "analyst", "guest")}
    for name, user in zip(principals, ("ops", "sofia", "audrey", "alice", "gus"), strict=True):
        principals[name].creds.append(session_client(u[user], f"{name}'s own session"))
    for name, user in (("admin_token", u["ops2"]), ("officer_token", u["sofia2"]), ("svc_token", svc["ci"])):
        principals[name] = Principal(name, creds=[token_client(user.pk, new_token(user), f"{name}")])
    return world, principals


LLM_SIGNATURE = {
    "kind": "llm",
    "architecture": "llama",
    "context_length": 512,
    "quantization": "int4",
    "chat_template": None,  # ChatML
    "bos_token": "",
    "eos_token": "<|im_end|>",
    "generation_defaults": {"max_new_tokens": 64},
    "files": [],
}


def make_chat_model(name: str, actor) -> Model:
    """A chat model in surrogate mode (a PHI model), deployed on the echo upstream."""
    from apps.compliance.services import set_model_policy
    from apps.registry.models import ModelVersion
    from tests.factories import ModelVersionFactory
    from tests.gateway.helpers import deploy
    from tests.security import echo_upstream

    version = ModelVersionFactory(model_name=name, actor=actor)
    ModelVersion.objects.filter(pk=version.pk).update(signature=LLM_SIGNATURE)
    deploy(ModelVersion.objects.get(pk=version.pk), url=echo_upstream.url(), max_batch_size=8)
    set_model_policy(model_id=version.model_id, phi=True, deid_mode="surrogate", actor=None)
    return version.model


def _rollout_of(model_name: str, actor) -> int:
    """An ended rollout of `model_name` (steering it is then a 409 once allowed: nothing moves)."""
    from apps.registry.models import ModelVersion
    from tests.factories import rollout_of

    live = ModelVersion.objects.filter(model__name=model_name).order_by("version").last()
    return rollout_of(live, actor, finished=True).pk


def _objects() -> dict:
    """One object of every model the admin site shows, for its change and delete views."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    from apps.compliance.models import ComplianceReport, ControlResult, EvaluationRun, ProfileAttachment
    from apps.keys.models import KekRotation, KekState, KeyEncryptionKey, RotationState
    from apps.registry.models import Model

    kek = KeyEncryptionKey.objects.get(state=KekState.ACTIVE)
    attempt = dict(user_agent="closure", ip_address="127.0.0.1", username="x", http_accept="*/*", path_info="/")
    AccessAttempt.objects.create(**attempt, get_data="", post_data="", failures_since_start=1)
    AccessLog.objects.create(**attempt)
    AccessFailureLog.objects.create(**attempt)
    now = timezone.now()
    run = EvaluationRun.objects.create(finished_at=now)
    ControlResult.objects.create(run=run, profile="hipaa", control_id="164.312(b)", family="x", status="pass")
    ComplianceReport.objects.create(profile="hipaa", period_start=now, period_end=now, language="en")
    attachment = ProfileAttachment.objects.create(profile="hipaa", model=Model.objects.get(name="secret"))
    rotation = KekRotation.objects.create(to_kek=kek, state=RotationState.DONE)
    return {"kek": kek.pk, "rotation": rotation.pk, "attachment": attachment.pk}


# ---------------------------------------------------------------------------------------------
# The fixpoint


# A replayed success must run again when it may give this principal something: a credential, or a
# change to an account it controls (what is "self" or "own" differs from principal to principal).
GAINFUL = {"user.create", "token.issue", "password.reset"}
OWN_KINDS = {"self", "own_service_account", "own_group", "role_group", "other_group"}


def probe(p: Principal, cred: Cred, world: dict, table: dict, stats: Stats, memo: dict) -> None:
    """Every attempt of every classified route with this credential. A signature already probed
    (by any principal) replays only its successes that may be gains, and the attempts that the
    first prober skipped as known to it; the rest are recorded without a request."""
    _verify_again(cred)
    sig = signature(cred)
    if sig in memo:
        for key, attempt, seen in memo[sig]:
            ctx = Ctx(world, p, cred)
            try:
                target = ctx.target(attempt.kind).pk if attempt.kind in TARGET_KINDS else None
            except NotApplicable:
                continue
            if seen == "skipped":
                if not _known(p, cred, world, attempt):
                    perform(p, cred, key, attempt, world, stats)
            elif attempt.power in GAINFUL or attempt.kind in OWN_KINDS or target in p.accounts:
                perform(p, cred, key, attempt, world, stats)
            else:
                p.add((attempt.power, attempt.kind), f"{key[0]} {key[1]} as {cred.origin} (replayed)")
        return
    admin_site = cred.client.get(reverse("admin:index")).status_code == 200
    closed, seen = set(), []
    for key, attempt in attempts_for(Ctx(world, p, cred), table):
        if key in closed or (key[0].startswith("admin:") and not admin_site):
            continue
        if _known(p, cred, world, attempt):
            seen.append((key, attempt, "skipped"))
            continue
        outcome = perform(p, cred, key, attempt, world, stats)
        if outcome == "closed":
            closed.add(key)
        elif outcome == "ok":
            seen.append((key, attempt, "ok"))
    memo[sig] = seen


def _verify_again(cred: Cred) -> None:
    """A session that passed the second factor passes it again before its probes, as the person
    holding the device would: issuing a token needs one within TOKEN_OTP_FRESH (5 minutes), and the
    closure takes longer than that, so a late principal's token probes would otherwise measure the
    run's speed instead of its powers."""
    from django.contrib.sessions.backends.db import SessionStore

    from apps.accounts.otp import OTP_AT

    morsel = cred.client.cookies.get("sessionid") if cred.kind == "session" else None
    if morsel is None:
        return
    store = SessionStore(session_key=morsel.value)
    if store.get(OTP_AT):
        store[OTP_AT] = timezone.now().timestamp()
        store.save()


def _known(p: Principal, cred: Cred, world: dict, attempt: Attempt) -> bool:
    """The principal already has this power over a target it does not control: trying another
    variant, or the same with another credential, can teach it nothing new."""
    if (attempt.power, attempt.kind) not in p.powers or attempt.kind in OWN_KINDS:
        return False
    if attempt.kind not in TARGET_KINDS:
        return True
    try:
        return Ctx(world, p, cred).target(attempt.kind).pk not in p.accounts
    except NotApplicable:
        return True


def closure(world: dict, principals: dict[str, Principal], max_rounds: int = 8) -> tuple[int, Stats]:
    """Each principal alone (no collusion: its world is rolled back after it), round after round:
    probe every classified route with every credential whose signature is new, for every target
    kind; add what succeeded; stop when a round adds no power and no credential (at least two
    rounds). Returns the most rounds any principal needed, and the counters."""
    table, stats, memo = classify(), Stats(), {}
    CountingClient.sent = 0
    logging.disable(logging.WARNING)  # thousands of refusals, each logged with a traceback
    try:
        for p in principals.values():
            sid = transaction.savepoint()
            rounds = _fixpoint(p, world, table, stats, memo, max_rounds, {})
            transaction.savepoint_rollback(sid)
            stats.rounds.append((p.name, rounds, CountingClient.sent, stats.probes))
    finally:
        logging.disable(logging.NOTSET)
    stats.requests = CountingClient.sent
    return max(r for _n, r, _q, _p in stats.rounds), stats


def _fixpoint(p: Principal, world: dict, table: dict, stats: Stats, memo: dict, max_rounds: int, measured: dict) -> int:
    for round_no in range(1, max_rounds + 1):
        size = (len(p.powers), len(p.creds))
        for cred in list(p.creds):
            sig = alive(cred) and signature(cred)
            if sig and sig not in p.probed:
                p.probed.add(sig)
                probe(p, cred, world, table, stats, memo)
        for pair, witness in effective_powers(p, memo=measured).items():
            p.add(pair, witness)
        if round_no >= 2 and (len(p.powers), len(p.creds)) == size:
            return round_no
    raise AssertionError(f"{p.name}: no fixpoint after {max_rounds} rounds")
