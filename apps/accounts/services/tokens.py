"""API tokens: issue (shown once), revoke, and bearer authentication on every API and gateway call."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django_otp import match_token

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.errors import NotFound, ServiceError, _, get_or_404
from apps.core.rawsql import aware

from ..models import TOKEN_PREFIX, ApiToken, Profile, Scope, digest_token
from ..roles import PRIVILEGED
from .roles import roles_of

# Writing last_used on every call would add an UPDATE to each inference; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(seconds=60)


DEFAULT_SCOPES = (Scope.INVOKE, Scope.READ)


def issue_token(
    *,
    user,
    name: str,
    days: int | None = None,
    scopes=None,
    model_ids=None,
    actor,
    source: Source = SYSTEM,
    otp_verified_at: datetime | None = None,
    otp: str = "",
) -> tuple[ApiToken, str]:
    """Create a token for `user`; return it with its plaintext, which is never available again.

    Who may (docs/access-control.md, "Tokens"), checked here so that the API, the admin site and
    the host command obey the same rules:
    - a person issues for themselves or for a service account they own, and for nobody else,
      whatever their permissions (anyone else: 404 `user_not_found`);
    - never with a token (`source.token_id` set): 403 `token_cannot_issue_tokens`;
    - a privileged person or the superuser needs a second factor passed within TOKEN_OTP_FRESH
      (`otp_verified_at`, from the session) or a valid `otp` code now: 403 `fresh_otp_required`;
    - `actor=None` is the host (management commands, the launcher): any active account, audited
      with no actor and `via: host`.

    `scopes` defaults to invoke + read; `model_ids`, when given, restricts the token to those
    models (each must exist). Expiry defaults to TOKEN_DEFAULT_DAYS (capped at TOKEN_MAX_DAYS) and
    may not exceed TOKEN_MAX_DAYS; a privileged person's or the superuser's token lives at most
    SESSION_ABSOLUTE_TIMEOUT, like their session.
    """
    if source.token_id is not None:
        raise ServiceError("token_cannot_issue_tokens", _("tokens cannot issue tokens: log in to the portal"), 403)
    _check_may_issue_for(actor, user)
    _check_second_factor(actor, otp_verified_at, otp, source)
    # A deployment that lowers the maximum below the default still issues tokens without `days`.
    days = min(settings.TOKEN_DEFAULT_DAYS, settings.TOKEN_MAX_DAYS) if days is None else days
    if not 1 <= days <= settings.TOKEN_MAX_DAYS:
        raise ServiceError(
            "invalid_expiry",
            _("expiry must be between 1 and %(token_max_days)s days") % {"token_max_days": settings.TOKEN_MAX_DAYS},
            field="days",
        )
    if not user.is_active:
        raise ServiceError(
            "user_inactive",
            _("user %(user)s is inactive") % {"user": user.get_username()},
            field="user",
        )
    scopes = sorted(set(DEFAULT_SCOPES if scopes is None else scopes))
    unknown = set(scopes) - set(Scope.values)
    if unknown or not scopes:
        raise ServiceError(
            "invalid_scope",
            _("scopes must be a non-empty subset of %(values)s") % {"values": ", ".join(Scope.values)},
            field="scopes",
        )
    models = _existing_models(model_ids or [])
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    expires_at = now + timedelta(days=days)
    if is_privileged(user):
        expires_at = min(expires_at, now + settings.SESSION_ABSOLUTE_TIMEOUT)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name.strip() or "token",
            digest=digest_token(plaintext),
            hint=plaintext[:10],
            scopes=scopes,
            restricted=bool(models),
            created_by=acting_user(actor),
            created_at=now,
            expires_at=expires_at,
        )
        token.allowed_models.set(models)
        after = {
            "user": user.get_username(),
            "scopes": scopes,
            "models": [m.name for m in models],
            "expires_at": token.expires_at.isoformat(),
            "issued_by": actor.get_username() if acting_user(actor) else None,
        }
        details = {"after": after, **({"via": "host"} if actor is None else {})}
        record_event("auth.token.create", actor=actor, source=source, target=token, details=details)
    return token, plaintext


def is_privileged(user) -> bool:
    """The superuser, or a standing or break-glass admin / security_officer / auditor."""
    return bool(user.is_superuser or roles_of(user) & PRIVILEGED)


def _check_may_issue_for(actor, user) -> None:
    """Self, or a service account the actor owns. The host (actor None) may issue for anyone."""
    if actor is None or user.pk == actor.pk:
        return
    if not Profile.objects.filter(user_id=user.pk, is_service_account=True, owner_id=actor.pk).exists():
        raise NotFound(
            "user_not_found", _("no user with id %(user)s that you may issue tokens for") % {"user": user.pk}
        )


def _check_second_factor(actor, otp_verified_at: datetime | None, otp: str, source: Source) -> None:
    if actor is None or not is_privileged(actor):
        return
    now = timezone.now()
    if otp_verified_at is not None and now - otp_verified_at <= settings.TOKEN_OTP_FRESH:
        return
    minutes = int(settings.TOKEN_OTP_FRESH.total_seconds() // 60)
    if otp:
        if match_token(actor, otp.strip()) is not None:
            return
        from .security import record_2fa_failure  # late: security imports this module

        record_2fa_failure(user=actor, source=source)
        raise ServiceError("fresh_otp_required", _("the one-time code is wrong"), 403, "otp")
    raise ServiceError(
        "fresh_otp_required",
        _(
            "privileged accounts issue tokens only within %(minutes)s minutes of a second factor: "
            "send your current one-time code as `otp`, or verify it again at /accounts/2fa/verify/"
        )
        % {"minutes": minutes},
        403,
        "otp",
    )


def _existing_models(model_ids) -> list:
    # The registry's Model, reached through the token's own relation: accounts sits below registry
    # and does not import it (docs/architecture.md); the M2M field already names the table.
    Model = ApiToken._meta.get_field("allowed_models").related_model
    ids = {int(i) for i in model_ids}
    models = list(Model.objects.filter(pk__in=ids))
    missing = ids - {m.pk for m in models}
    if missing:
        raise NotFound("model_not_found", _("no model with id %(ids)s") % {"ids": ", ".join(map(str, sorted(missing)))})
    return models


def revoke_token(*, token_id: int, actor, source: Source = SYSTEM) -> ApiToken:
    """Revoke a token (idempotent: revoking a revoked token changes nothing but is recorded).

    Who may: the token's user, the owner of the service account it belongs to, anyone holding
    `accounts.manage_tokens` (the security officer), the host (actor None). For anyone else the
    token does not exist (404 `token_not_found`)."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(pk=token_id).first()
        if token is None or not _may_revoke(actor, token):
            raise NotFound("token_not_found", _("no token with id %(token_id)s") % {"token_id": token_id})
        _revoke(token, actor=actor, source=source)
    return token


def _revoke(token: ApiToken, *, actor, source: Source, reason: str | None = None) -> None:
    """Mark `token` revoked (if it is not already) and record the event, in the caller's transaction."""
    before = token.status
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    details = {"before": before, "after": "revoked"}
    if reason:
        details["reason"] = reason
    record_event("auth.token.revoke", actor=actor, source=source, target=token, details=details)


def _may_revoke(actor, token: ApiToken) -> bool:
    if actor is None or token.user_id == actor.pk or actor.has_perm("accounts.manage_tokens"):
        return True
    return Profile.objects.filter(user_id=token.user_id, is_service_account=True, owner_id=actor.pk).exists()


def revoke_all_tokens(*, user, reason: str, actor, source: Source = SYSTEM) -> list[int]:
    """Revoke every live token of `user` (not those of the service accounts it owns), one
    `auth.token.revoke` event each. Called inside the transaction that disables the account or
    resets its password, so the account and its tokens change together or not at all."""
    tokens = list(ApiToken.objects.select_for_update().filter(user=user, revoked_at__isnull=True))
    for token in tokens:
        _revoke(token, actor=actor, source=source, reason=reason)
    return [t.pk for t in tokens]


class TokenRejected(ServiceError):
    def __init__(self, code: str, detail: str, status_code: int = 401):
        super().__init__(code, detail, status_code)


def authenticate_bearer(header: str | None, ip: str | None = None, *, lean: bool = False) -> tuple:
    """Resolve an `Authorization` header value to (user, token) or raise TokenRejected.

    One indexed query (token joined with its user, the user's profile, its roles now and the
    token's issuer); last-used bookkeeping at most once a minute. `lean=True` (the inference
    gateway) runs that query as fixed SQL, which spares ≈0.4 ms of ORM query building per call, and
    returns a user holding only id, username, is_active and is_superuser: enough for grants and
    audit, not for anything that reads other fields. Both paths decide through `token_refusal`, and
    both leave what they learned on `user.account_facts` (AccountFacts), so that the access policy
    asks no second query for the caller's roles.
    """
    value = bearer_value(header)
    now = timezone.now()
    found = _lean_lookup(digest_token(value), now) if lean else _orm_lookup(digest_token(value), now)
    if found is None:
        raise TokenRejected("invalid_token", _("the token is not valid"))
    token, facts = found
    refusal = token_refusal(token, now, facts)
    if refusal is not None:
        raise refusal
    token.user.account_facts = facts  # the principal's facts for the access policy (apps.registry.access)
    # Once a minute at most, whatever the address: a token used from several hosts must not turn
    # this into an UPDATE (and a row lock) on every call.
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=ip)
    return token.user, token


def bearer_value(header: str | None) -> str:
    """The token in an `Authorization` header value, or 401 `missing_token` /
    `malformed_authorization` (shared with the data plane's in-memory token lookup)."""
    if not header:
        raise TokenRejected("missing_token", _("authentication required: send 'Authorization: Bearer <token>'"))
    scheme, _sep, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        raise TokenRejected("malformed_authorization", _("the Authorization header must be 'Bearer <token>'"))
    return value


@dataclass(frozen=True)
class AccountFacts:
    """What the token lookup learned about the token's user besides the user row itself: its roles
    now (standing and unexpired break-glass), its standing roles alone, and its profile."""

    roles: frozenset[str]
    standing_roles: frozenset[str]
    service_account: bool
    password_changed_at: datetime | None


def token_refusal(token: ApiToken, now: datetime, facts: AccountFacts) -> TokenRejected | None:
    """The one decision for both lookups: tokens do not bypass what a session obeys.

    - revoked, expired, inactive user: as ever;
    - a person whose password is older than PASSWORD_MAX_AGE: 403 `password_expired` (service
      accounts have no password and are exempt);
    - a privileged person or the superuser (standing or break-glass role now): the token lives at
      most SESSION_ABSOLUTE_TIMEOUT from its creation (`token_expired`, whatever it was issued
      with: the person may have become privileged since) and is refused after SESSION_IDLE_TIMEOUT
      without use (`token_idle`; last use is recorded to the minute).
    """
    if token.revoked_at is not None:
        return TokenRejected("token_revoked", _("the token has been revoked"))
    if token.is_expired(now):
        return TokenRejected("token_expired", _("the token has expired"))
    if not token.user.is_active:
        return TokenRejected("user_inactive", _("the token's user is inactive"))
    if (
        not facts.service_account
        and facts.password_changed_at is not None
        and now - facts.password_changed_at > settings.PASSWORD_MAX_AGE
    ):
        return TokenRejected(
            "password_expired", _("the password of the token's user has expired; change it in the portal"), 403
        )
    if token.user.is_superuser or facts.roles & PRIVILEGED:
        if now - token.created_at > settings.SESSION_ABSOLUTE_TIMEOUT:
            return TokenRejected("token_expired", _("a privileged account's token lives no longer than a session"))
        if now - (token.last_used_at or token.created_at) > settings.SESSION_IDLE_TIMEOUT:
            return TokenRejected(
                "token_idle", _("the token of a privileged account was unused too long; issue another")
            )
    return None


def _roles_sql(vendor: str, user_ref: str) -> str:
    """The user's roles now as one comma-separated string (parameters: now, now)."""
    from .roles import current_roles_sql

    concat = "string_agg(r, ',')" if vendor == "postgresql" else "group_concat(r, ',')"
    return f"(SELECT {concat} FROM ({current_roles_sql(user_ref)}) x)"  # noqa: S608


def _standing_roles_sql(vendor: str, user_ref: str) -> str:
    """The user's standing roles as one comma-separated string (no parameters)."""
    from .roles import standing_roles_sql

    concat = "string_agg(r, ',')" if vendor == "postgresql" else "group_concat(r, ',')"
    return f"(SELECT {concat} FROM ({standing_roles_sql(user_ref)}) x)"  # noqa: S608


def _split_roles(roles: str | None) -> frozenset[str]:
    return frozenset(roles.split(",")) if roles else frozenset()


def _orm_lookup(digest: str, now: datetime) -> tuple[ApiToken, AccountFacts] | None:
    qn = connection.ops.quote_name
    user_ref = f"{qn(ApiToken._meta.db_table)}.{qn('user_id')}"
    stamp = connection.ops.adapt_datetimefield_value(now)
    token = (
        ApiToken.objects.select_related("user", "user__profile", "created_by")
        .annotate(
            sv_roles=RawSQL(_roles_sql(connection.vendor, user_ref), [stamp, stamp]),  # noqa: S611
            sv_standing=RawSQL(_standing_roles_sql(connection.vendor, user_ref), []),  # noqa: S611
        )
        .filter(digest=digest)
        .first()
    )
    if token is None:
        return None
    profile = getattr(token.user, "profile", None)  # RelatedObjectDoesNotExist is an AttributeError
    return token, AccountFacts(
        roles=_split_roles(token.sv_roles),
        standing_roles=_split_roles(token.sv_standing),
        service_account=bool(profile and profile.is_service_account),
        password_changed_at=profile.password_changed_at if profile else None,
    )


@cache
def _lean_sql(vendor: str) -> str:
    """The token, its user, the user's profile and roles now (standing and unexpired break-glass,
    the same question as roles_for_audit) and the token's issuer in one statement: the gateway's
    audit event freezes the roles and names the issuer; `token_refusal` and the access policy read
    the rest."""
    tokens, users = ApiToken._meta.db_table, get_user_model()._meta.db_table
    profiles = Profile._meta.db_table
    return (
        "SELECT t.id, t.user_id, t.scopes, t.restricted, t.created_at, t.expires_at, t.revoked_at,"  # noqa: S608
        " t.last_used_at, t.created_by_id, ib.username,"
        f" u.username, u.is_active, u.is_superuser, {_roles_sql(vendor, 'u.id')},"
        f" {_standing_roles_sql(vendor, 'u.id')},"
        " p.is_service_account, p.password_changed_at"
        f" FROM {tokens} t JOIN {users} u ON u.id = t.user_id"
        f" LEFT JOIN {profiles} p ON p.user_id = u.id LEFT JOIN {users} ib ON ib.id = t.created_by_id"
        " WHERE t.digest = %s"
    )


def _lean_lookup(digest: str, now: datetime) -> tuple[ApiToken, AccountFacts] | None:
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(_lean_sql(connection.vendor), [stamp, stamp, digest])
        row = cursor.fetchone()
    if row is None:
        return None
    (pk, user_id, scopes, restricted, created_at, expires_at, revoked_at, last_used_at, issuer_id, issuer) = row[:10]
    username, is_active, superuser, roles, standing, service_account, password_changed_at = row[10:]
    User = get_user_model()
    token = ApiToken(
        id=pk,
        user_id=user_id,
        scopes=json.loads(scopes) if isinstance(scopes, str) else scopes,
        restricted=bool(restricted),
        created_at=aware(created_at),
        expires_at=aware(expires_at),
        revoked_at=aware(revoked_at),
        last_used_at=aware(last_used_at),
        created_by=User(id=issuer_id, username=issuer) if issuer_id is not None else None,
    )
    token.user = User(id=user_id, username=username, is_active=bool(is_active), is_superuser=bool(superuser))
    token.user.audit_roles = sorted(_split_roles(roles))  # read by roles_for_audit
    return token, AccountFacts(
        roles=_split_roles(roles),
        standing_roles=_split_roles(standing),
        service_account=bool(service_account),
        password_changed_at=aware(password_changed_at),
    )


def get_user_by_name(username: str):
    return get_or_404(
        get_user_model(),
        "user_not_found",
        _("no user named %(username)s") % {"username": repr(username)},
        username=username,
    )


def record_denied(error: ServiceError, *, source: Source, details: dict | None = None) -> None:
    """A refused token is an unauthenticated refusal: collapsed per (address, code, minute)."""
    from apps.audit.services import record_refusal

    record_refusal("auth.token.denied", source=source, outcome=Outcome.DENIED, error_code=error.code, details=details)
