"""The one way anything is written to the audit log.

Callers invoke record_event inside the transaction of the action it describes: if the insert
fails, the exception propagates and the action rolls back (fail closed).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, Error, connection, models, transaction
from django.utils import timezone

from apps.core.context import current_request_id, request_var
from apps.core.errors import ServiceError, _
from apps.core.source import SYSTEM, Source  # callers of record_event import them from here too

from . import alerts, offline_verify
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
            _(
                "the action could not be recorded in the audit log, so it was not carried out; "
                "try again, and if it persists ask an administrator to check the audit database"
            ),
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


def _display_of(target) -> str:
    """How the audit log names a target: its `audit_display()` when it has one (a name in one language
    and UTC, whatever the page's: apps.compliance.models names its rows in the reader's language on
    the pages), else str()."""
    named = getattr(target, "audit_display", None)
    return (named() if callable(named) else str(target))[:200]


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
        target_display = target_display or _display_of(target)
    authenticated = actor is not None and getattr(actor, "is_authenticated", False)
    request = request_var.get()
    if request is not None:  # lets AuditRefusalsMiddleware see that this request was recorded
        request.audit_events = getattr(request, "audit_events", 0) + 1
    try:
        event = AuditEvent.objects.create(
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
        if alerts.is_alerting(event_type, details):
            alerts.queue_for(event)  # the outbox row, in this transaction; sent after commit
        return event
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


# --- Batches: the data plane's group commit (apps/gateway/dataplane/auditsink.py) ----------------

_FIELDS = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
_MAX_LENGTH = {f.attname: f.max_length for f in _FIELDS if getattr(f, "max_length", None)}
_COPY_SQL = 'COPY "{}" ({}) FROM STDIN'.format(AuditEvent._meta.db_table, ", ".join(f'"{f.column}"' for f in _FIELDS))
_INSERT_SQL = 'INSERT INTO "{}" ({}) VALUES ({})'.format(  # noqa: S608 - names from the model's metadata
    AuditEvent._meta.db_table, ", ".join(f'"{f.column}"' for f in _FIELDS), ", ".join(["%s"] * len(_FIELDS))
)
_IP_FIELD = AuditEvent._meta.get_field("source_ip")
# In json.dumps output (ASCII): an escaped NUL or surrogate, which PostgreSQL's jsonb refuses.
_BAD_JSON_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])")


def _text(value: str, name: str) -> str:
    """A text column's value that cannot fail the shared batch: cut to the column (PostgreSQL
    would refuse it), NUL and unencodable surrogates replaced (PostgreSQL text cannot hold them)."""
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode()
    limit = _MAX_LENGTH.get(name)
    return value[:limit] if limit is not None else value


def _clean_json(value):
    if isinstance(value, str):
        return _text(value, "")
    if isinstance(value, dict):
        return {_clean_json(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return value


def _json(value) -> tuple[object, str]:
    """(value, its JSON text as the jsonb column takes it); a value PostgreSQL would refuse (an
    escaped NUL or lone surrogate) is cleaned first. Raises TypeError for what is not JSON."""
    text = json.dumps(value)
    if _BAD_JSON_ESCAPE.search(text):
        value = _clean_json(value)
        text = json.dumps(value)
    return value, text


@functools.lru_cache(maxsize=4096)  # callers come back: a lookup instead of a parse
def _address(ip: str | None) -> str | None:
    """The client address as the model field stores it (IPv6 normalised, "" as NULL); an invalid one
    raises ValueError here rather than fail the batch it would be written in."""
    if not ip:
        return None
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"not an IP address: {ip!r}") from None
    return _IP_FIELD.get_prep_value(ip)


@dataclass(slots=True)
class PendingEvent:
    """One audit event, built without touching the database, for record_events: the facts
    record_event stores, given as plain values. The actor is given as it is at the time (id, user
    name, roles — as record_event freezes them with roles_at_the_time); no actor (None, "", [])
    for an unauthenticated caller or the system.

    Built eagerly, so that one bad event can never fail the batch it would share with others: an
    unknown type, an invalid address or details that are not JSON raise here (ValueError,
    TypeError); text longer than its column is cut, and NULs or lone surrogates (which PostgreSQL
    refuses) are replaced by U+FFFD / "?". Otherwise the row is exactly what record_event writes."""

    event_type: str
    actor_id: int | None = None
    actor_name: str = ""
    actor_roles: list[str] = field(default_factory=list)
    source: Source = SYSTEM
    request_id: str = field(default_factory=current_request_id)
    target_type: str = ""
    target_id: str = ""
    target_display: str = ""
    outcome: str = Outcome.SUCCESS
    error_code: str = ""
    details: dict = field(default_factory=dict)
    timestamp: datetime = field(default_factory=timezone.now)
    # The row in the model's field order, JSON columns as text, encoding_version left out (it is
    # read when the batch is written, as record_event reads it at insert); and the JSON values.
    copy_row: tuple = field(init=False, repr=False, compare=False, default=())
    json_values: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"unknown audit event type {self.event_type!r}; add it to apps/audit/catalogue.py")
        source = self.source
        roles, roles_text = _json([str(role) for role in self.actor_roles])
        details, details_text = _json({**(self.details or {}), **source.token_details()})
        self.json_values = (roles, details)
        self.copy_row = (  # in _ROW_ORDER
            self.timestamp,
            None,
            self.actor_id,
            _text(self.actor_name, "actor_name"),
            roles_text,
            source.token_id,
            _address(source.ip),
            _text(source.user_agent, "user_agent"),
            _text(self.request_id, "request_id"),
            self.event_type,
            group_of(self.event_type),
            _text(self.target_type, "target_type"),
            _text(self.target_id, "target_id"),
            _text(self.target_display, "target_display"),
            _text(self.outcome, "outcome"),
            _text(self.error_code, "error_code"),
            details_text,
            "",
            "",
        )

    @property
    def row(self) -> dict:
        """The column values by attribute name (JSON columns as values), encoding_version left out."""
        row = dict(zip(_ROW_ORDER, self.copy_row, strict=True))
        row["actor_roles"], row["details"] = self.json_values
        return row


_ROW_ORDER = (
    "timestamp",
    "sequence",
    "actor_id",
    "actor_name",
    "actor_roles",
    "token_id",
    "source_ip",
    "user_agent",
    "request_id",
    "event_type",
    "event_group",
    "target_type",
    "target_id",
    "target_display",
    "outcome",
    "error_code",
    "details",
    "prev_hash",
    "hash",
)
if tuple(f.attname for f in _FIELDS) != (*_ROW_ORDER, "encoding_version"):  # a new column must be given a value
    raise ImproperlyConfigured("AuditEvent's fields changed: update PendingEvent.copy_row and _ROW_ORDER to match")


def record_events(events: Sequence[PendingEvent]) -> None:
    """Write every event in one transaction, one statement (PostgreSQL: COPY; SQLite: a bulk
    INSERT), with the column values record_event would write. All or nothing: any database error
    becomes AuditUnavailable and nothing of the batch is written. A broken connection (killed
    backend, restarted server) is closed so that the next call reconnects."""
    if not events:
        return
    version = offline_verify.CURRENT_ENCODING  # read now: the version their hashes will use
    try:
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            # One COPY in autocommit is its own transaction, all or nothing: two round trips, not
            # four with BEGIN and COMMIT around it (the common case: the data plane's writer).
            _copy(events, version)
        else:
            with transaction.atomic():  # inside a caller's transaction: a savepoint
                if connection.vendor == "postgresql":
                    _copy(events, version)
                else:
                    AuditEvent.objects.bulk_create([AuditEvent(**e.row, encoding_version=version) for e in events])
    except Error as exc:
        _drop_broken_connection()
        raise AuditUnavailable() from exc


def _copy(events: Sequence[PendingEvent], version: int) -> None:
    # psycopg's own cursor (COPY is not in Django's API), its errors mapped to Django's so that
    # the connection is marked as having failed (close_if_unusable_or_obsolete then checks it).
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(_COPY_SQL) as copy:
        for event in events:
            copy.write_row((*event.copy_row, version))


class AsyncEventWriter:
    """record_events for an asyncio process on PostgreSQL: the same COPY over its own psycopg
    AsyncConnection (autocommit: the COPY is its own transaction, all or nothing), so a batch costs
    no thread hop. `await writer(events)` raises AuditUnavailable when the batch was not written; a
    broken connection is dropped and the next batch opens a new one."""

    def __init__(self, using: str = "default"):
        from django.db import connections

        params = connections[using].get_connection_params()
        for key in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(key, None)
        self._params = {**params, "autocommit": True}
        self._conn = None

    async def __call__(self, events: Sequence[PendingEvent]) -> None:
        if not events:
            return
        import psycopg

        version = offline_verify.CURRENT_ENCODING  # read now: the version their hashes will use
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(**self._params)
            if len(events) == 1:
                # A lone event (a quiet system): one prepared INSERT is one round trip where COPY takes
                # two (1.5 ms against 0.8 ms here); under load batches grow and COPY is cheaper per row.
                await self._conn.execute(_INSERT_SQL, (*events[0].copy_row, version), prepare=True)
                return
            async with self._conn.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
                for event in events:
                    await copy.write_row((*event.copy_row, version))
        except psycopg.Error as exc:
            await self.close()
            raise AuditUnavailable() from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _drop_broken_connection() -> None:
    if connection.in_atomic_block:  # the caller's transaction owns the connection (tests): leave it
        return
    with contextlib.suppress(Error):
        connection.close_if_unusable_or_obsolete()


def async_refusals(submit: Callable[[PendingEvent], Awaitable[None]], counter=None):
    """The data plane's record_refusal: `await async_refusals(committer.submit).record(...)`
    collapses an unauthenticated caller's refusals exactly as record_refusal does (same buckets,
    counted in Redis through `counter` — an AsyncRedisCounter, see async_refusal_counter — or in
    process), writing the first of each bucket through `submit` (the group committer) and the
    remainders when their window has closed. See apps/audit/refusals.py, AsyncRefusals."""
    from .refusals import AsyncRefusals

    return AsyncRefusals(submit, counter)


def async_refusal_counter(client=None):
    """The refusal counter for the async data plane: Redis (`client`: a redis.asyncio.Redis, else
    one made from REDIS_URL) shared with the portal's buckets, or this process's in-memory counter
    without Redis."""
    from .refusals import async_counter

    return async_counter(client)


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


# --- Alerts (apps/audit/alerts.py, docs/alerts.md) -----------------------------------------------


def send_test_alert(*, actor, source: Source = SYSTEM, note: str = "") -> AuditEvent:
    """Record an `alert.test` event, which alerts like any security event: its delivery row is
    written in the same transaction and sent after commit, through the same channel, task and
    retries. Refuses (nothing saved) when no channel is configured or its address is not allowed.
    Returns the event; its delivery is `apps.audit.selectors.delivery_of(event)`."""
    url = alerts.channel_url()
    if not url:
        raise ServiceError("no_alert_channel", _("no alert channel configured: set SOVEREIGN_ALERT_WEBHOOK_URL"), 409)
    alerts.check_channel_url(url)
    with transaction.atomic():
        return record_event(
            "alert.test",
            actor=actor,
            source=source,
            details={"alert": True, "channel": alerts.channel_id(url), "note": note[:200]},
        )


def deliver_alert(delivery_id: int) -> str:
    """One delivery attempt of an alert (the Celery task's body): the new status, or "transient"
    when it should be retried."""
    return alerts.attempt(delivery_id)


def resend_stalled_alerts() -> int:
    """Re-enqueue alert deliveries that the broker lost (the beat sweep)."""
    return alerts.resend_stalled()


# --- Central collection (apps/audit/shipping.py) --------------------------------------------------


def ship_audit_events() -> dict:
    """Ship sealed events the external collector has not acknowledged (the beat task's body)."""
    from . import shipping

    return shipping.ship_pending()


def raise_purge_floor(days: int, *, actor, source: Source = SYSTEM) -> int:
    """Raise the database purge floor to `days` if it is lower (never lowers it: only the owner
    role does that, in SQL), with the audit event `audit.purge_floor.raise` in the same
    transaction. Returns the floor now in force."""
    from .models import AuditPurgeFloor
    from .retention import purge_floor_days

    with transaction.atomic():
        before = purge_floor_days()
        if days <= before:
            return before
        changed = AuditPurgeFloor.objects.filter(days__lt=days).update(days=days, updated_at=timezone.now())
        if not changed:
            AuditPurgeFloor.objects.create(days=days)  # the migration's row is gone (owner's doing)
        record_event(
            "audit.purge_floor.raise",
            actor=actor,
            source=source,
            target_type="audit.auditpurgefloor",
            target_display=f"audit purge floor {days} days",
            details={"before_days": before, "after_days": days},
        )
    return days
