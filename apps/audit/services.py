"""The one way anything is written to the audit log.

Callers invoke record_event inside the transaction of the action it describes: if the insert
fails, the exception propagates and the action rolls back (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, models
from django.utils import timezone

from apps.core.context import current_request_id, request_var
from apps.core.errors import ServiceError
from apps.core.netaddr import request_client_address

from . import offline_verify
from .catalogue import EVENT_TYPES, group_of
from .models import AuditEvent, Outcome


@dataclass(frozen=True)
class Source:
    """Where a call came from: the client address, user agent and the API token used, if any,
    with the token's issuer (its `created_by`: id and user name, or None and "host" when the host
    issued it; `token_issuer` None: not known), so that every event made with a token says who put
    that token into the world."""

    ip: str | None = None
    user_agent: str = ""
    token_id: int | None = None
    token_issuer_id: int | None = None
    token_issuer: str | None = None

    @classmethod
    def from_request(cls, request, token_id: int | None = None, *, token=None) -> Source:
        """`token`: the ApiToken the request authenticated with (default: DRF's `request.auth`,
        which DRF also sets on the Django request). `token_id` is the older spelling of the same."""
        if request is None:
            return cls()
        if token is None and token_id is None:
            auth = getattr(request, "auth", None)
            token = auth if hasattr(auth, "created_by_id") else None
        base = cls(ip=request_client_address(request), user_agent=request.META.get("HTTP_USER_AGENT", "")[:300])
        return base.with_token(token) if token is not None else replace(base, token_id=token_id)

    def with_token(self, token) -> Source:
        """This source, for a call made with `token` (its issuer read from `created_by`, which the
        token lookups load in the same statement: no query here)."""
        issuer = token.created_by if token.created_by_id is not None else None
        return replace(
            self,
            token_id=token.pk,
            token_issuer_id=token.created_by_id,
            token_issuer=issuer.get_username() if issuer is not None else "host",
        )

    def token_details(self) -> dict:
        """What record_event adds to the details of an event made with a token."""
        if self.token_issuer is None:
            return {}
        return {"token_issuer_id": self.token_issuer_id, "token_issuer": self.token_issuer}


SYSTEM = Source()


def acting_user(actor):
    """The actor as a User to store in a foreign key, or None for the system / anonymous."""
    return actor if actor is not None and getattr(actor, "is_authenticated", False) else None


class AuditUnavailable(ServiceError):
    """The audit event could not be written, so the action it describes is refused (fail closed)."""

    def __init__(self):
        super().__init__(
            "audit_unavailable",
            "the action could not be recorded in the audit log, so it was not carried out; "
            "try again, and if it persists ask an administrator to check the audit database",
            503,
        )


# The one provider of "the actor's roles at the time" (apps.accounts registers it in its AppConfig.ready()):
# audit is a sink and imports no other app, so the app that owns roles hands them in through this hook.
_actor_roles_provider: Callable[[object], list[str]] | None = None


def register_actor_roles_provider(provider: Callable[[object], list[str]]) -> None:
    """Install the function that returns an authenticated actor's roles (sorted role names, standing
    and unexpired break-glass), frozen into each event. The app that owns roles calls this once, in
    its AppConfig.ready(); a second registration replaces the first."""
    global _actor_roles_provider
    _actor_roles_provider = provider


def roles_at_the_time(actor) -> list[str]:
    """The actor's roles, frozen into the event. Fails closed: an authenticated actor with no
    roles provider registered raises, rather than record an event whose roles are missing."""
    if actor is None or not getattr(actor, "is_authenticated", False):
        return []
    if _actor_roles_provider is None:
        raise ImproperlyConfigured(
            "no actor-roles provider is registered with apps.audit.services.register_actor_roles_provider; "
            "an event with an authenticated actor cannot be recorded without the actor's roles"
        )
    return list(_actor_roles_provider(actor))


def govern(model: type[models.Model], *, exclude: Iterable[str] = ()) -> None:
    """Put `model` under field-level history: every create, change and delete of a row, by any code
    path, is recorded by django-auditlog and bridged into the chain as an `audit.field_change` event
    (apps/audit/fieldlog.py). `exclude`: fields never recorded (secrets, and noise that changes on
    every use); fields named like secrets (fieldlog.SECRET_FIELDS) are excluded whatever is passed.
    The app that owns the model calls this in its AppConfig.ready()."""
    from .fieldlog import govern as register  # fieldlog records through this module

    register(model, exclude)


def record_event(
    event_type: str,
    *,
    actor,
    source: Source = SYSTEM,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_display: str = "",
    outcome: str = Outcome.SUCCESS,
    error_code: str = "",
    details: dict | None = None,
) -> AuditEvent:
    """Insert one audit event. Raises on any failure, never swallows it: a database error becomes
    AuditUnavailable (503 `audit_unavailable`) and the caller's transaction rolls back."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown audit event type {event_type!r}; add it to apps/audit/catalogue.py")
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
        target_display = target_display or str(target)[:200]
    authenticated = actor is not None and getattr(actor, "is_authenticated", False)
    request = request_var.get()
    if request is not None:  # lets AuditRefusalsMiddleware see that this request was recorded
        request.audit_events = getattr(request, "audit_events", 0) + 1
    try:
        return AuditEvent.objects.create(
            timestamp=timezone.now(),
            actor=actor if authenticated else None,
            actor_name=actor.get_username() if authenticated else "",
            actor_roles=roles_at_the_time(actor) if authenticated else [],
            token_id=source.token_id,
            source_ip=source.ip,
            user_agent=source.user_agent,
            request_id=current_request_id(),
            event_type=event_type,
            event_group=group_of(event_type),
            target_type=target_type,
            target_id=target_id,
            target_display=target_display,
            outcome=outcome,
            error_code=error_code,
            details={**(details or {}), **source.token_details()},
            encoding_version=offline_verify.CURRENT_ENCODING,  # read now: the version its hash will use
        )
    except DatabaseError as exc:
        raise AuditUnavailable() from exc


def record_refusal(
    event_type: str,
    *,
    source: Source,
    outcome: str,
    error_code: str,
    target_type: str = "",
    target_id: str = "",
    target_display: str = "",
    details: dict | None = None,
) -> None:
    """Record a refused call of an unauthenticated caller: collapsed per (type, address, code,
    outcome, window) instead of one row per call (docs/audit.md, "Collapsed anonymous refusals").
    Raises AuditUnavailable like record_event when the event cannot be written."""
    from .refusals import record_refusal as collapse  # refusals writes through record_event above

    collapse(
        event_type,
        source=source,
        outcome=outcome,
        error_code=error_code,
        target_type=target_type,
        target_id=target_id,
        target_display=target_display,
        details=details,
    )


@dataclass(frozen=True)
class AuditSigner:
    """The audit signing key, as other apps use it to sign their documents (compliance reports):
    its id, its signature algorithm ("ecdsa-p256-sha256" or "sm2-sm3"), its public key as verifiers
    take it (PEM, or an SM2 point's hex), and `sign(payload) -> DER signature`."""

    key_id: str
    sig_alg: str
    public_key: str
    sign: Callable[[bytes], bytes]


def audit_signer() -> AuditSigner:
    """The key that signs the audit checkpoints (in the HSM with PKCS#11; SM2 in 国密 mode). Raises
    signing.SigningError (a RuntimeError) when the key is unavailable."""
    from .signing import get_signer, public_key_text

    signer = get_signer()
    return AuditSigner(signer.key_id, signer.sig_alg, public_key_text(signer), signer.sign)
