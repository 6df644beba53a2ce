"""The one way anything is written to the audit log.

Callers invoke record_event inside the transaction of the action it describes: if the insert
fails, the exception propagates and the action rolls back (fail closed).
"""

from __future__ import annotations

from django.db import DatabaseError, models
from django.utils import timezone

from apps.core.context import current_request_id, request_var
from apps.core.errors import ServiceError
from apps.core.source import SYSTEM, Source  # callers of record_event import them from here too

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


def roles_at_the_time(actor) -> list[str]:
    """The actor's roles (standing and unexpired break-glass), frozen into the event."""
    from apps.accounts.services.roles import roles_for_audit  # accounts records events through this module

    return roles_for_audit(actor) if actor is not None else []


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
        )
    except DatabaseError as exc:
        raise AuditUnavailable() from exc
