"""Field-level history of governed models: django-auditlog records each change, and every
LogEntry it writes is bridged into the audit chain as an `audit.field_change` event, in the same
transaction, with the request id, the actor and before/after values. Secrets never enter either:
password hashes, token digests and wrapped data keys are excluded at registration and dropped
again here by name, should a model ever be registered without its exclusions.

Which models are governed is each owning app's decision: it calls apps.audit.services.govern in
its AppConfig.ready(). This module names no other app's model."""

from __future__ import annotations

from collections.abc import Iterable

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.db.models import Model
from django.db.models.signals import post_save, pre_save

from apps.core.context import current_actor_id, request_var

from .services import SYSTEM, Source, record_event

# Every field of these names is kept out of the field log, whoever registers the model and whatever
# it excludes itself: the safety net under each app's own exclusions (applied at registration, so
# django-auditlog's LogEntry never holds them either, and again in the bridge, by name).
SECRET_FIELDS = frozenset(
    {"password", "digest", "wrapped_dek", "wrapped", "dek", "secret", "token", "pin", "otp_secret", "key"}
)
ACTIONS = {LogEntry.Action.CREATE: "create", LogEntry.Action.UPDATE: "update", LogEntry.Action.DELETE: "delete"}

# model label -> the fields it keeps out of its history, as registered by the app that owns the model
_governed: dict[str, tuple[str, ...]] = {}


def govern(model: type[Model], exclude: Iterable[str] = ()) -> None:
    """Give `model` field-level history in the chain (see apps.audit.services.govern)."""
    secret = {f.name for f in model._meta.concrete_fields if f.name in SECRET_FIELDS}
    fields = tuple(sorted({*exclude, *secret}))
    if auditlog.contains(model):
        auditlog.unregister(model)  # registered again (tests, reloads): the latest exclusions hold
    auditlog.register(model, exclude_fields=list(fields))
    _governed[model._meta.label] = fields


def governed_models() -> dict[str, tuple[str, ...]]:
    """Model label -> the fields excluded from its history, for every governed model."""
    return dict(_governed)


def _actor():
    actor_id = current_actor_id()
    if actor_id is None:
        return None
    request_user = getattr(request_var.get(), "user", None)
    if request_user is not None and request_user.pk == actor_id:
        return request_user
    return get_user_model().objects.filter(pk=actor_id).first()


def _source() -> Source:
    request = request_var.get()
    return Source.from_request(request) if request is not None else SYSTEM


def _fill_actor(sender, instance: LogEntry, **kwargs) -> None:
    if instance.actor_id is None:
        actor = _actor()
        if actor is not None:
            instance.actor = actor


def _bridge(sender, instance: LogEntry, created: bool, **kwargs) -> None:
    if not created or instance.action not in ACTIONS:
        return
    changes = {
        field: {"before": values[0], "after": values[1]}
        for field, values in (instance.changes_dict or {}).items()
        if field not in SECRET_FIELDS
    }
    ct = instance.content_type
    record_event(
        "audit.field_change",
        actor=instance.actor,
        source=_source(),
        target_type=f"{ct.app_label}.{ct.model}",
        target_id=str(instance.object_pk),
        target_display=(instance.object_repr or "")[:200],
        details={"action": ACTIONS[instance.action], "changes": changes, "log_entry": instance.pk},
    )


def connect() -> None:
    pre_save.connect(_fill_actor, sender=LogEntry, dispatch_uid="sovereign-auditlog-actor")
    post_save.connect(_bridge, sender=LogEntry, dispatch_uid="sovereign-auditlog-bridge")
