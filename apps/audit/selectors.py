"""Who may read which audit events: the auditor reads everything; the security officer reads the
`keys` group (key management is theirs to answer for); nobody else reads any."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from apps.core.errors import ServiceError

from .models import AuditEvent

KEY_GROUP = "keys"


def events_visible_to(user) -> QuerySet:
    if user.has_perm("audit.view_auditevent"):
        return AuditEvent.objects.all()
    if user.has_perm("audit.view_key_events"):
        return AuditEvent.objects.filter(event_group=KEY_GROUP)
    raise ServiceError("permission_denied", "reading the audit log needs the auditor role", 403)


def export_limit(user) -> int:
    """How many rows one export may hold for this caller (settings AUDIT_EXPORT_MAX_ROWS*)."""
    if user.has_perm("audit.export_auditevent"):
        return settings.AUDIT_EXPORT_MAX_ROWS
    return settings.AUDIT_KEY_EXPORT_MAX_ROWS


def latest_event(event_type: str) -> dict | None:
    """The latest event of `event_type` as {id, timestamp, details}, or None. Not filtered by
    caller: for the platform's own bookkeeping and checks, never to answer a person's request."""
    rows = AuditEvent.objects.filter(event_type=event_type).order_by("-timestamp", "-id")
    return rows.values("id", "timestamp", "details").first()
