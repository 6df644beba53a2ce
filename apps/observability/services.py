"""Writes of the observability app: the rollup of gateway calls into CallSeries.

The rollup writes no audit event: its rows are derived figures, rebuilt from the audit log itself
(like the sealer's hash chain), and nothing governed changes. It reads only sealed events and
follows their `sequence`, which the sealer assigns in commit order: an event committed late, after
events with higher ids, still gets a higher sequence than everything already sealed, so a high-water
mark on the sequence never skips one (a mark on the id would).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, Outcome

from . import histogram
from .models import BUCKET_FIELDS, LATENCY_BOUNDS_MS, CallSeries, Period, RollupCursor

CURSOR = "calls"
# The events that are calls of a model (metadata and readiness reads are not; a streamed chat's
# `.started` event is followed by its final one, which carries the tokens).
CALL_TYPES = ("inference.infer", "inference.chat", "inference.completion")
SUMS = ("calls", "errors", "denied", "latency_count", "latency_sum_ms", "tokens_in", "tokens_out", *BUCKET_FIELDS)


@dataclass
class Point:
    calls: int = 0
    errors: int = 0
    denied: int = 0
    latency_count: int = 0
    latency_sum_ms: float = 0.0
    latency_buckets: list[int] = field(default_factory=histogram.empty)
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, outcome: str, count: int, bucket: int | None, latency_sum: float, tokens: tuple[int, int]) -> None:
        """`count` calls of one outcome; their latencies (all in `bucket`) and tokens."""
        self.calls += count
        if outcome == Outcome.DENIED:  # refusals: no latency (they would pull p50 to zero), no tokens
            self.denied += count
            return
        if outcome == Outcome.FAILURE:
            self.errors += count
        if bucket is not None:
            self.latency_count += count
            self.latency_sum_ms += latency_sum
            self.latency_buckets[bucket] += count
        self.tokens_in += tokens[0]
        self.tokens_out += tokens[1]

    def sums(self) -> tuple:
        return (self.calls, self.errors, self.denied, self.latency_count, self.latency_sum_ms, self.tokens_in,
                self.tokens_out, *self.latency_buckets)  # fmt: skip


@dataclass
class RollupResult:
    events: int = 0  # calls added to the series (a collapsed refusal event counts its calls)
    sequence: int = 0  # where the cursor stands now
    busy: bool = False  # another worker holds the cursor


def _number(value) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _groups_in_python(first: int, last: int):
    """(minute, model, version, outcome, bucket, count, latency sum, tokens in, tokens out) per call
    event with sequence in (first, last]: SQLite's path, the same rows as _groups_in_sql ungrouped."""
    rows = AuditEvent.objects.filter(sequence__gt=first, sequence__lte=last, event_type__in=CALL_TYPES)
    for at, outcome, details in rows.values_list("timestamp", "outcome", "details").iterator(chunk_size=2000):
        details = details if isinstance(details, dict) else {}
        count = int(_number(details.get("count")) or 1)  # collapsed anonymous refusals count several calls
        version = details.get("version")
        version = int(version) if isinstance(version, int) and version > 0 else 0
        latency = _number(details.get("latency_ms"))
        llm = details.get("llm") if isinstance(details.get("llm"), dict) else {}
        tokens = (int(_number(llm.get("prompt_tokens")) or 0), int(_number(llm.get("completion_tokens")) or 0))
        bucket = None if latency is None else histogram.bucket_of(latency)
        latency_sum = 0.0 if latency is None else latency * count
        minute = int(at.timestamp()) // 60 * 60
        yield minute, str(details.get("model") or "")[:200], version, outcome, bucket, count, latency_sum, *tokens


_NUMBER = "CASE WHEN jsonb_typeof({path}) = 'number' THEN ({text})::float8 END"


def _groups_in_sql(first: int, last: int):
    """The same rows, grouped by PostgreSQL (one row per minute, model, version, outcome and latency
    bucket): the events never travel to Python, which matters when catching up on millions."""
    latency = _NUMBER.format(path="details->'latency_ms'", text="details->>'latency_ms'")
    count = "COALESCE(" + _NUMBER.format(path="details->'count'", text="details->>'count'") + ", 1)"
    prompt = _NUMBER.format(path="details->'llm'->'prompt_tokens'", text="details->'llm'->>'prompt_tokens'")
    completion = _NUMBER.format(path="details->'llm'->'completion_tokens'", text="details->'llm'->>'completion_tokens'")
    version = "CASE WHEN jsonb_typeof(details->'version') = 'number' THEN (details->>'version')::numeric ELSE 0 END"
    sql = f"""
        SELECT (floor(extract(epoch FROM timestamp) / 60) * 60)::bigint, left(COALESCE(details->>'model', ''), 200),
               GREATEST(floor({version}), 0)::bigint, outcome,
               CASE WHEN {latency} IS NOT NULL THEN width_bucket({latency}, %s::float8[]) END,
               sum({count})::bigint, COALESCE(sum({latency} * {count}), 0), COALESCE(sum({prompt}), 0)::bigint,
               COALESCE(sum({completion}), 0)::bigint
        FROM {AuditEvent._meta.db_table}
        WHERE sequence > %s AND sequence <= %s AND event_type = ANY(%s)
        GROUP BY 1, 2, 3, 4, 5
    """  # noqa: S608 - only constants are formatted in
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(map(float, LATENCY_BOUNDS_MS)), first, last, list(CALL_TYPES)])
        yield from cursor.fetchall()


def aggregate(groups) -> dict[tuple, Point]:
    """Rows of _groups_in_python / _groups_in_sql → points keyed (period, start, model, version),
    minute and hour alike, `start` aligned to its period in UTC."""
    points: dict[tuple, Point] = {}
    for minute, model, version, outcome, bucket, count, latency_sum, tokens_in, tokens_out in groups:
        for period in (Period.MINUTE, Period.HOUR, Period.SIX_HOURS):
            point = points.setdefault((int(period), minute // period * period, model, version), Point())
            point.add(outcome, count, bucket, latency_sum, (tokens_in, tokens_out))
    return {(p, datetime.fromtimestamp(s, tz=UTC), m, v): point for (p, s, m, v), point in points.items()}


def _merge(points: dict[tuple, Point]) -> None:
    """Add `points` to the stored series: INSERT … ON CONFLICT DO UPDATE adding each sum. PostgreSQL
    takes a chunk as one JSON document (json_populate_recordset: one parameter, which the driver
    neither parses nor adapts value by value); SQLite one row at a time."""
    table = CallSeries._meta.db_table
    columns = ("period", "start", "model_name", "version", *SUMS)
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in SUMS)
    upsert = f"ON CONFLICT (period, start, model_name, version) DO UPDATE SET {adds}"
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            adapt = connection.ops.adapt_datetimefield_value
            rows = [(p, adapt(start), m, v, *point.sums()) for (p, start, m, v), point in points.items()]
            values = ", ".join(["%s"] * len(columns))
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) {upsert}"  # noqa: S608 - constants
            cursor.executemany(sql, rows)
            return
        names = ", ".join(columns)
        sql = (
            f"INSERT INTO {table} ({names}) SELECT {names} "  # noqa: S608 - constants only
            f"FROM json_populate_recordset(NULL::{table}, %s::json) {upsert}"
        )
        rows = [
            dict(zip(columns, (p, start.isoformat(), m, v, *point.sums()), strict=True))
            for (p, start, m, v), point in points.items()
        ]
        for first in range(0, len(rows), 5000):
            cursor.execute(sql, [json.dumps(rows[first : first + 5000])])


def _sealed_head() -> int:
    head = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").values_list("sequence", flat=True)
    return head.first() or 0


def _locked_cursor() -> RollupCursor | None:
    """The cursor, locked; None when another worker holds it. Made if missing (the migration makes
    it, but a database flushed since has none): get_or_create settles a race between two makers."""
    rows = RollupCursor.objects.filter(name=CURSOR)
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True)
    else:
        rows = rows.select_for_update()  # SQLite: its write lock (IMMEDIATE) serialises instead
    cursor = rows.first()
    if cursor is None and not RollupCursor.objects.filter(name=CURSOR).exists():
        RollupCursor.objects.get_or_create(name=CURSOR)
        cursor = rows.first()
    return cursor


def _step(batch_size: int) -> tuple[int, int, bool] | None:
    """One batch in one transaction: (events added, cursor, more to do); None when busy."""
    with transaction.atomic():
        cursor = _locked_cursor()
        if cursor is None:
            return None
        upto = min(cursor.sequence + batch_size, _sealed_head())
        if upto <= cursor.sequence:
            return 0, cursor.sequence, False
        groups = _groups_in_sql if connection.vendor == "postgresql" else _groups_in_python
        points = aggregate(groups(cursor.sequence, upto))
        _merge(points)
        RollupCursor.objects.filter(name=CURSOR).update(sequence=upto, updated_at=timezone.now())
        added = sum(point.calls for (period, *_), point in points.items() if period == Period.MINUTE)
        return added, upto, upto < _sealed_head()


def roll_up_calls(*, batch_size: int | None = None, budget_seconds: float | None = None) -> RollupResult:
    """Add the gateway calls sealed since the last run to the minute and hour series, batch by
    batch (each batch and its cursor move in one transaction: a crash loses nothing and counts
    nothing twice), until caught up or `budget_seconds` have passed. A second worker finding the
    cursor locked returns at once with `busy=True`. Then drops points older than their retention."""
    batch = batch_size or settings.OBSERVABILITY_ROLLUP_BATCH
    deadline = time.monotonic() + (budget_seconds or settings.OBSERVABILITY_ROLLUP_BUDGET_SECONDS)
    result = RollupResult()
    while True:
        step = _step(batch)
        if step is None:
            result.busy = True
            return result
        added, result.sequence, more = step
        result.events += added
        if not more or time.monotonic() > deadline:
            break
    prune_series()
    return result


def prune_series(now: datetime | None = None) -> int:
    """Drop minute points older than OBSERVABILITY_MINUTE_RETENTION_HOURS and hour and 6-hour points
    older than OBSERVABILITY_HOUR_RETENTION_DAYS (the audit log keeps the calls themselves)."""
    now = now or timezone.now()
    minutes = now - timedelta(hours=settings.OBSERVABILITY_MINUTE_RETENTION_HOURS)
    hours = now - timedelta(days=settings.OBSERVABILITY_HOUR_RETENTION_DAYS)
    deleted, _ = CallSeries.objects.filter(period=Period.MINUTE, start__lt=minutes).delete()
    more, _ = CallSeries.objects.filter(period__in=(Period.HOUR, Period.SIX_HOURS), start__lt=hours).delete()
    return deleted + more


def record_dashboard_read(*, actor, source, shown: int) -> None:
    """The dashboard showed `actor` recent privileged actions from the audit log: a read of the
    log, recorded like any other (`audit.search`, as the audit admin pages do)."""
    from apps.audit.services import record_event

    with transaction.atomic():
        details = {"admin": True, "dashboard": True, "shown": shown}
        record_event("audit.search", actor=actor, source=source, details=details)
