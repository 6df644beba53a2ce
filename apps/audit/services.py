"""The one way anything is written to the audit log.

Callers invoke record_event inside the transaction of the action it describes: if the insert
fails, the exception propagates and the action rolls back (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, models
from django.utils import timezone

from apps.core.context import current_request_id, request_var
from apps.core.errors import ServiceError
from apps.core.source import SYSTEM, Source  # callers of record_event import them from here too

from . import offline_verify
from .catalogue import EVENT_TYPES, group_of
from .models import AuditEvent, Outcome


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
