"""Unlocking a login that the failed-login lockout (django-axes, apps/accounts/lockout.py) holds:
a security officer clears the failures counted against a user name, and optionally against the
address they came from. Never their own user name: an officer under a password-guessing attack
does not lift the lock that slows the attacker down."""

from __future__ import annotations

from axes.models import AccessAttempt, AccessFailureLog
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import ServiceError, _

from .devices import require_security_officer
from .policy import Forbidden


def unlock_login(*, username: str, ip_address: str | None = None, actor, source: Source = SYSTEM) -> dict:
    """Delete the lockout records (attempts and the failure log the sliding window counts) of
    `username`, and of `ip_address` when given. Returns what was deleted, as the event records it."""
    if not username and not ip_address:
        raise ServiceError("invalid", _("name a user name or an address to unlock"), field="username")
    account = get_user_model().objects.filter(username=username).first() if username else None
    require_security_officer(actor, account, what="lift a login lockout")
    if username and actor is not None and username == actor.get_username():
        raise Forbidden("self_change_forbidden", _("nobody may lift a login lockout on their own account"))
    who = Q(username=username) if username else Q()
    if ip_address:
        who |= Q(ip_address=ip_address)
    with transaction.atomic():
        deleted = {}
        for model in (AccessAttempt, AccessFailureLog):
            rows = model.objects.select_for_update().filter(who)
            ids = sorted(rows.values_list("pk", flat=True))
            model.objects.filter(pk__in=ids).delete()
            deleted[model._meta.label_lower] = ids
        record_event(
            "auth.lockout.clear",
            actor=actor,
            source=source,
            target=account,
            target_type="" if account else "axes.username",
            target_id="" if account else username,
            target_display=username or ip_address or "",
            details={"username": username, "ip_address": ip_address, "deleted": deleted},
        )
    return deleted
