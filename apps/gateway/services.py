"""Writes of chat-model governance (issue 13): chat policies, quotas, usage rows, retained
exchanges. Each write that changes a decision runs in one transaction with its audit event and
tells the data plane's policy snapshot to rebuild (apps.core.policy.policy_changed). The /v1
adapter calls `record_usage` / `arecord_usage` once per call and `retain_exchange` /
`aretain_exchange` after it. See docs/llm.md, "Governance: chat policy, quotas, usage, retention".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.services.policy import require_perm
from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import Conflict, ServiceError, _, get_or_404
from apps.core.policy import policy_changed
from apps.keys.models import Purpose
from apps.keys.services import create_data_key, destroy_data_key, open_sealed, seal_with
from apps.registry.models import Model
from inference_backend.stream import StreamError

from . import chatpolicy
from .models import ChatPolicy, ExchangeDataKey, LLMUsage, Quota, QuotaScope, RetainedExchange, Retention, UsageStatus

logger = logging.getLogger(__name__)

QUOTA_LIMITS = ("tokens_per_day", "tokens_per_month", "requests_per_minute", "tokens_per_minute")
MAX_SYSTEM_PROMPT = 8000


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def _bump(sender: type) -> None:
    policy_changed.send(sender=sender)


# --- chat policy --------------------------------------------------------------------------------


def _policy_fields(values: Mapping) -> dict:
    """The ChatPolicy fields from `values` (missing ones: the defaults), checked. 400 with the
    field at fault, nothing saved."""
    out = {**{k: v for k, v in chatpolicy.DEFAULT_POLICY.items() if k != "model_id"}, **values}
    limit = out["max_tokens_per_call"]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
        raise ServiceError(
            "invalid_max_tokens", _("max_tokens_per_call must be 1..1000000"), field="max_tokens_per_call"
        )
    out["allowed_sampling"] = chatpolicy.validate_allowed_sampling(out["allowed_sampling"])
    if not isinstance(out["system_prompt"], str) or len(out["system_prompt"]) > MAX_SYSTEM_PROMPT:
        raise ServiceError(
            "invalid_system_prompt",
            _("system_prompt: text of at most %(max_system_prompt)s characters")
            % {"max_system_prompt": MAX_SYSTEM_PROMPT},
            field="system_prompt",
        )
    if out["system_prompt_mode"] not in chatpolicy.MODES:
        raise ServiceError(
            "invalid_system_prompt_mode", _("system_prompt_mode: prepend or replace"), field="system_prompt_mode"
        )
    if out["retention"] not in chatpolicy.RETENTIONS:
        raise ServiceError("invalid_retention", _("retention: none, digest or full"), field="retention")
    days = out["retention_days"]
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise ServiceError("invalid_retention_days", _("retention_days must be 1..3650"), field="retention_days")
    return out


def _policy_dict(policy: ChatPolicy | None) -> dict | None:
    if policy is None:
        return None
    return {
        "max_tokens_per_call": policy.max_tokens_per_call,
        "allowed_sampling": policy.allowed_sampling,
        "system_prompt_sha256": hashlib.sha256(policy.system_prompt.encode()).hexdigest()
        if policy.system_prompt
        else "",
        "system_prompt_mode": policy.system_prompt_mode,
        "retention": policy.retention,
        "retention_days": policy.retention_days,
    }


def set_chat_policy(*, model_id: int, actor, source: Source = SYSTEM, **values) -> ChatPolicy:
    """Create or replace a chat model's policy (fields not given take the defaults). Audited
    `llm.policy.update` with before / after (the system prompt as its SHA-256: it may be long, and
    the audit log is not where it is read). The data plane applies it at its next snapshot."""
    unknown = set(values) - set(chatpolicy.DEFAULT_POLICY)
    if unknown or "model_id" in values:
        raise ServiceError(
            "invalid_field", _("unknown policy fields: %(unknown)s") % {"unknown": ", ".join(sorted(unknown))}
        )
    fields = _policy_fields(values)
    with transaction.atomic():
        model = get_or_404(
            Model.objects.select_for_update(),
            "model_not_found",
            _("no model with id %(model_id)s") % {"model_id": model_id},
            pk=model_id,
        )
        before = _policy_dict(ChatPolicy.objects.filter(model=model).first())
        policy, _created = ChatPolicy.objects.update_or_create(
            model=model, defaults={**fields, "updated_by": _user(actor), "updated_at": timezone.now()}
        )
        record_event(
            "llm.policy.update",
            actor=actor,
            source=source,
            target=model,
            details={"before": before, "after": _policy_dict(policy)},
        )
        _bump(ChatPolicy)
    return policy


# --- quotas -------------------------------------------------------------------------------------

_SUBJECTS = {
    QuotaScope.USER: (get_user_model, "user", "user_not_found"),
    QuotaScope.GROUP: (lambda: Group, "group", "group_not_found"),
    QuotaScope.TOKEN: (lambda: ApiToken, "token", "token_not_found"),
}


def _limits(values: Mapping) -> dict:
    out = {}
    for name in QUOTA_LIMITS:
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ServiceError(
                "invalid_quota",
                _("%(name)s must be a whole number >= 0 or null (unlimited)") % {"name": name},
                field=name,
            )
        out[name] = value
    if all(v is None for v in out.values()):
        raise ServiceError("invalid_quota", _("a quota needs at least one limit (all null means unlimited: delete it)"))
    return out


def _quota_dict(quota: Quota | None) -> dict | None:
    if quota is None:
        return None
    return {
        "scope": quota.scope,
        "subject": quota.subject_id,
        "model": quota.model_id,
        **{name: getattr(quota, name) for name in QUOTA_LIMITS},
    }


def set_quota(
    *, scope: str, subject_id: int, model_id: int | None = None, actor, source: Source = SYSTEM, **limits
) -> Quota:
    """Create or replace the quota of (scope, subject, model or all models). Limits not given are
    unlimited; at least one must be set. Audited `llm.quota.set` with before / after. Counters of
    the current windows are kept (they belong to the quota's id), so a lowered limit applies to
    what was already used today. The actor must hold `gateway.manage_quota` (the API and the admin
    check it too; this keeps any other caller from setting quotas on its own say-so)."""
    require_perm(actor, "gateway.manage_quota")
    if scope not in QuotaScope.values:
        raise ServiceError("invalid_scope", _("scope: user, group or token"), field="scope")
    unknown = set(limits) - set(QUOTA_LIMITS)
    if unknown:
        raise ServiceError(
            "invalid_field", _("unknown quota fields: %(unknown)s") % {"unknown": ", ".join(sorted(unknown))}
        )
    values = _limits(limits)
    get_model, field, code = _SUBJECTS[scope]
    with transaction.atomic():
        subject = get_or_404(
            get_model(),
            code,
            _("no %(field)s with id %(subject_id)s") % {"field": field, "subject_id": subject_id},
            pk=subject_id,
        )
        model = None
        if model_id is not None:
            model = get_or_404(
                Model, "model_not_found", _("no model with id %(model_id)s") % {"model_id": model_id}, pk=model_id
            )
        lookup = {"scope": scope, field: subject, "model": model}
        existing = Quota.objects.select_for_update().filter(**lookup).first()
        before = _quota_dict(existing)
        try:
            with transaction.atomic():
                quota, _created = Quota.objects.update_or_create(
                    **lookup, defaults={**values, "updated_by": _user(actor), "updated_at": timezone.now()}
                )
        except IntegrityError as err:  # a concurrent set created the same row first
            raise Conflict(
                "quota_conflict", _("another change to this quota happened at the same time; retry")
            ) from err
        record_event(
            "llm.quota.set",
            actor=actor,
            source=source,
            target=quota,
            details={"before": before, "after": _quota_dict(quota)},
        )
        _bump(Quota)
    return quota


def delete_quota(*, quota_id: int, actor, source: Source = SYSTEM) -> None:
    """Remove a quota (its subject is then unlimited there). Audited `llm.quota.delete`. The actor
    must hold `gateway.manage_quota`, as for set_quota."""
    require_perm(actor, "gateway.manage_quota")
    with transaction.atomic():
        quota = get_or_404(
            Quota.objects.select_for_update(),
            "quota_not_found",
            _("no quota with id %(quota_id)s") % {"quota_id": quota_id},
            pk=quota_id,
        )
        record_event(
            "llm.quota.delete", actor=actor, source=source, target=quota, details={"before": _quota_dict(quota)}
        )
        quota.delete()
        _bump(Quota)


# --- usage --------------------------------------------------------------------------------------


def record_usage(
    *,
    request_id: str,
    user_id: int | None,
    username: str,
    token_id: int | None,
    model_id: int | None,
    model_name: str,
    model_version: int | None,
    prompt_tokens: int,
    completion_tokens: int,
    ttft_ms: float | None,
    duration_ms: float,
    finish_reason: str = "",
    status: str = UsageStatus.OK,
    at: datetime | None = None,
) -> bool:
    """Write one call's usage row, once: a second call with the same request id writes nothing
    (returns False). Meant for the end of every chat call, the client gone or not."""
    if status not in UsageStatus.values:
        raise ValueError(f"unknown usage status {status!r}")
    row = LLMUsage(
        request_id=request_id[:64],
        at=at or timezone.now(),
        user_id=user_id,
        username=username[:150],
        token_id=token_id,
        model_id=model_id,
        model_name=model_name[:63],
        model_version=model_version,
        prompt_tokens=max(0, int(prompt_tokens)),
        completion_tokens=max(0, int(completion_tokens)),
        ttft_ms=ttft_ms,
        duration_ms=max(0.0, float(duration_ms)),
        finish_reason=(finish_reason or "")[:16],
        status=status,
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        if LLMUsage.objects.filter(request_id=row.request_id).exists():
            return False  # already recorded: once per call
        raise
    return True


def _fresh_connection(fn):
    """`fn` for an asyncio caller, on a worker thread whose connection is checked first (a
    long-lived data-plane process must not keep a connection the server closed)."""

    def run(**kwargs):
        if not connection.in_atomic_block:  # inside one (a test's transaction) it is the caller's to keep
            close_old_connections()
        return fn(**kwargs)

    return sync_to_async(run, thread_sensitive=True)


arecord_usage = _fresh_connection(record_usage)


# --- retained exchanges ---------------------------------------------------------------------------


def exchange_document(messages: Sequence[Mapping], answer: str) -> bytes:
    """The canonical bytes of one exchange (digest input and plaintext): compact JSON, keys sorted."""
    doc = {"messages": [{"role": m.get("role"), "content": m.get("content")} for m in messages], "answer": answer}
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def exchange_aad(request_id: str, model_id: int) -> bytes:
    return f"sovereign-llm-exchange:v1:{request_id}:{model_id}".encode()


def _day_key(model_id: int, day) -> ExchangeDataKey:
    """The model's data key for `day`, created on first use (its own transaction: the key row
    and `keys.dek.create` commit even if the exchange's insert fails later)."""
    found = ExchangeDataKey.objects.select_related("data_key").filter(model_id=model_id, day=day).first()
    if found is not None and not found.data_key.is_destroyed:
        return found
    if found is not None:
        raise Conflict(
            "exchange_key_destroyed",
            _("the exchange key of model %(model_id)s for %(day)s was destroyed") % {"model_id": model_id, "day": day},
        )
    try:
        with transaction.atomic():
            key = create_data_key(purpose=Purpose.LLM_EXCHANGE, actor=None)
            return ExchangeDataKey.objects.create(model_id=model_id, day=day, data_key=key)
    except IntegrityError:  # another process created the day's key first
        return ExchangeDataKey.objects.select_related("data_key").get(model_id=model_id, day=day)


def retain_exchange(
    *,
    policy: Mapping,
    request_id: str,
    model_id: int,
    model_name: str,
    user_id: int | None,
    username: str,
    messages: Sequence[Mapping],
    answer: str,
    at: datetime | None = None,
) -> RetainedExchange | None:
    """Keep what the chat policy says of one call, after it: nothing (`none`, returns None), the
    SHA-256 of the de-identified exchange (`digest`), or the de-identified messages and answer
    encrypted under the model's data key of the day (`full`). `messages` and `answer` must already
    be de-identified (what the model saw and said). Expires after `retention_days`."""
    retention = policy.get("retention", Retention.NONE)
    if retention == Retention.NONE:
        return None
    at = at or timezone.now()
    document = exchange_document(messages, answer)
    row = RetainedExchange(
        request_id=request_id[:64],
        model_id=model_id,
        model_name=model_name[:63],
        user_id=user_id,
        username=username[:150],
        at=at,
        expires_at=at + timedelta(days=int(policy.get("retention_days", 30))),
        retention=retention,
    )
    if retention == Retention.DIGEST:
        row.digest = hashlib.sha256(document).hexdigest()
    elif retention == Retention.FULL:
        key = _day_key(model_id, at.astimezone(UTC).date())
        row.key = key
        row.ciphertext = seal_with(document, exchange_aad(row.request_id, model_id), data_key=key.data_key)
    else:
        raise ValueError(f"unknown retention {retention!r}")
    row.save()
    return row


aretain_exchange = _fresh_connection(retain_exchange)


def _exchange_target(exchange: RetainedExchange) -> dict:
    return {"request_id": exchange.request_id, "model": exchange.model_name, "user": exchange.username}


def read_exchange(*, exchange_id: int, actor, source: Source = SYSTEM) -> dict:
    """Decrypt one retained exchange for the auditor. The read is audited (`llm.exchange.read`) in
    the transaction that decrypts: no committed event, no plaintext returned. Refusals are audited
    as failures and committed before they are raised: a tombstone is 410 `exchange_deleted`, a
    digest-only row 409 `exchange_not_retained`, a ciphertext that fails authentication (moved from
    another row, altered) 409 `exchange_corrupt`."""
    refusal = None
    with transaction.atomic():
        exchange = get_or_404(
            RetainedExchange.objects.select_related("key__data_key"),
            "exchange_not_found",
            _("no retained exchange with id %(exchange_id)s") % {"exchange_id": exchange_id},
            pk=exchange_id,
        )
        if exchange.is_deleted:
            refusal = ServiceError("exchange_deleted", _("this exchange was deleted; only its tombstone remains"), 410)
        elif exchange.retention != Retention.FULL or exchange.ciphertext is None:
            refusal = Conflict("exchange_not_retained", _("only a digest of this exchange was kept"))
        else:
            try:
                document = json.loads(
                    open_sealed(
                        bytes(exchange.ciphertext),
                        exchange_aad(exchange.request_id, exchange.model_id),
                        data_key=exchange.key.data_key,
                    )
                )
            except (StreamError, ValueError) as err:
                logger.error("retained exchange %s does not open: %s", exchange.pk, type(err).__name__)
                refusal = Conflict("exchange_corrupt", _("this exchange's ciphertext does not authenticate"))
            except ServiceError as err:  # data_key_destroyed, kek_unavailable
                refusal = err
        if refusal is not None:
            _record_read(exchange, actor, source, outcome=Outcome.FAILURE, error_code=refusal.code)
        else:
            _record_read(exchange, actor, source)
    if refusal is not None:
        raise refusal
    return {"id": exchange.pk, **_exchange_target(exchange), "at": exchange.at, **document}


def _record_read(exchange, actor, source, outcome=Outcome.SUCCESS, error_code: str = "") -> None:
    record_event(
        "llm.exchange.read",
        actor=actor,
        source=source,
        target=exchange,
        outcome=outcome,
        error_code=error_code,
        details=_exchange_target(exchange),
    )


def record_exchange_read_refusal(*, exchange_id: int, actor, source: Source, error_code: str) -> None:
    """An exchange read refused before the service (a token, say): its own audited event."""
    with transaction.atomic():
        record_event(
            "llm.exchange.read",
            actor=actor,
            source=source,
            target_type=RetainedExchange._meta.label_lower,
            target_id=str(exchange_id),
            outcome=Outcome.DENIED,
            error_code=error_code,
        )


def delete_exchange(*, exchange_id: int, reason: str, actor, source: Source = SYSTEM) -> RetainedExchange:
    """Deletion on request: the ciphertext and digest are wiped, the row stays as a tombstone
    (who, when, why; the metadata). Audited `llm.exchange.delete`. 409 `already_deleted`."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError(
            "reason_required", _("say why the exchange is deleted (e.g. the request's reference)"), field="reason"
        )
    with transaction.atomic():
        exchange = get_or_404(
            RetainedExchange.objects.select_for_update(),
            "exchange_not_found",
            _("no retained exchange with id %(exchange_id)s") % {"exchange_id": exchange_id},
            pk=exchange_id,
        )
        if exchange.is_deleted:
            raise Conflict(
                "already_deleted",
                _("exchange %(request_id)s was already deleted") % {"request_id": exchange.request_id},
            )
        exchange.ciphertext, exchange.digest, exchange.key = None, "", None
        exchange.deleted_at, exchange.deleted_by, exchange.deletion_reason = timezone.now(), _user(actor), reason[:300]
        exchange.save(update_fields=["ciphertext", "digest", "key", "deleted_at", "deleted_by", "deletion_reason"])
        record_event(
            "llm.exchange.delete",
            actor=actor,
            source=source,
            target=exchange,
            details={**_exchange_target(exchange), "reason": exchange.deletion_reason},
        )
    return exchange


def purge_expired_exchanges(*, now: datetime | None = None, batch: int = 1000) -> dict:
    """The retention task: delete every exchange past `expires_at` (tombstones included), then
    destroy (crypto-shred) each day key older than yesterday that no ciphertext uses any more.
    One `llm.exchange.purge` event with the counts when anything was done."""
    now = now or timezone.now()
    deleted = 0
    while True:
        ids = list(RetainedExchange.objects.filter(expires_at__lte=now).values_list("pk", flat=True)[:batch])
        if not ids:
            break
        deleted += RetainedExchange.objects.filter(pk__in=ids).delete()[0]
    in_use = RetainedExchange.objects.filter(key__isnull=False).values("key_id")
    idle = ExchangeDataKey.objects.filter(
        day__lt=(now - timedelta(days=1)).date(), data_key__destroyed_at__isnull=True
    ).exclude(pk__in=in_use)
    shredded = 0
    for key in idle.select_related("model"):
        with transaction.atomic():
            if RetainedExchange.objects.filter(key=key).exists():
                continue
            destroy_data_key(
                data_key_id=key.data_key_id,
                reason="retention: every exchange of this day was purged or deleted",
                actor=None,
                details={"model": key.model.name, "day": key.day.isoformat()},
            )
            shredded += 1
    if deleted or shredded:
        with transaction.atomic():
            record_event("llm.exchange.purge", actor=None, details={"deleted": deleted, "keys_destroyed": shredded})
    return {"deleted": deleted, "keys_destroyed": shredded}


def exchange_key_labels(ids: list[int]) -> dict[int, str]:
    """Labels of llm_exchange data keys for the key inventory (apps.keys.selectors)."""
    return {
        k.data_key_id: f"chat exchanges of {k.model.name} on {k.day.isoformat()}"
        for k in ExchangeDataKey.objects.filter(data_key_id__in=ids).select_related("model")
    }
