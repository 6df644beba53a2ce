"""Writes of the observability app: the rollup of gateway calls into CallSeries.

The rollup writes no audit event: its rows are derived figures, rebuilt from the audit log itself
(like the sealer's hash chain), and nothing governed changes. It reads only sealed events and
follows their `sequence`, which the sealer assigns in commit order: an event committed late, after
events with higher ids, still gets a higher sequence than everything already sealed, so a high-water
mark on the sequence never skips one (a mark on the id would).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, Outcome

from . import histogram
from .models import CallSeries, Period, RollupCursor

CURSOR = "calls"
# The events that are calls of a model (metadata and readiness reads are not; a streamed chat's
# `.started` event is followed by its final one, which carries the tokens).
CALL_TYPES = ("inference.infer", "inference.chat", "inference.completion")
FIELDS = ("calls", "errors", "denied", "latency_count", "latency_sum_ms", "latency_buckets", "tokens_in", "tokens_out")


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


@dataclass
class RollupResult:
    events: int = 0  # call events added to the series
    sequence: int = 0  # where the cursor stands now
    busy: bool = False  # another worker holds the cursor


def _add(point: Point, outcome: str, details: dict) -> None:
    count = int(details.get("count") or 1)  # collapsed anonymous refusals count several calls
    point.calls += count
    if outcome == Outcome.DENIED:
        point.denied += count
        return
    if outcome == Outcome.FAILURE:
        point.errors += count
    latency = details.get("latency_ms")
    if isinstance(latency, int | float):
        point.latency_count += count
        point.latency_sum_ms += latency * count
        point.latency_buckets[histogram.bucket_of(latency)] += count
    llm = details.get("llm")
    if isinstance(llm, dict):
        point.tokens_in += int(llm.get("prompt_tokens") or 0)
        point.tokens_out += int(llm.get("completion_tokens") or 0)


def aggregate(rows) -> dict[tuple, Point]:
    """(timestamp, outcome, details) rows → points keyed (period, start, model, version), minute
    and hour alike; `start` aligned to its period in UTC."""
    points: dict[tuple, Point] = {}
    for at, outcome, details in rows:
        details = details if isinstance(details, dict) else {}
        model = str(details.get("model") or "")[:200]
        version = details.get("version") or 0
        version = int(version) if str(version).isdigit() else 0
        seconds = int(at.timestamp())
        for period in (Period.MINUTE, Period.HOUR):
            key = (int(period), seconds // period * period, model, version)
            _add(points.setdefault(key, Point()), outcome, details)
    return {(p, datetime.fromtimestamp(s, tz=UTC), m, v): point for (p, s, m, v), point in points.items()}


def _merge(points: dict[tuple, Point]) -> None:
    """Add `points` to the stored series: existing rows updated, missing rows created."""
    if not points:
        return
    starts = {key[1] for key in points}
    names = {key[2] for key in points}
    stored = {
        (row.period, row.start, row.model_name, row.version): row
        for row in CallSeries.objects.filter(start__in=starts, model_name__in=names)
    }
    updates, creates = [], []
    for key, point in points.items():
        row = stored.get(key)
        if row is None:
            creates.append(CallSeries(period=key[0], start=key[1], model_name=key[2], version=key[3], **vars(point)))
            continue
        for name in FIELDS:
            if name == "latency_buckets":
                merged = histogram.add(histogram.empty(), row.latency_buckets)
                row.latency_buckets = histogram.add(merged, point.latency_buckets)
            else:
                setattr(row, name, getattr(row, name) + getattr(point, name))
        updates.append(row)
    CallSeries.objects.bulk_create(creates)
    CallSeries.objects.bulk_update(updates, FIELDS)


def _sealed_head() -> int:
    head = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").values_list("sequence", flat=True)
    return head.first() or 0


def _locked_cursor() -> RollupCursor | None:
    rows = RollupCursor.objects.filter(name=CURSOR)
    if connection.features.has_select_for_update_skip_locked:
        return rows.select_for_update(skip_locked=True).first()
    return rows.select_for_update().first()  # SQLite: its write lock (IMMEDIATE) serialises instead


def _step(batch_size: int) -> tuple[int, int, bool] | None:
    """One batch in one transaction: (events added, cursor, more to do); None when busy."""
    with transaction.atomic():
        cursor = _locked_cursor()
        if cursor is None:
            return None
        upto = min(cursor.sequence + batch_size, _sealed_head())
        if upto <= cursor.sequence:
            return 0, cursor.sequence, False
        rows = list(
            AuditEvent.objects.filter(
                sequence__gt=cursor.sequence, sequence__lte=upto, event_type__in=CALL_TYPES
            ).values_list("timestamp", "outcome", "details")
        )
        _merge(aggregate(rows))
        RollupCursor.objects.filter(name=CURSOR).update(sequence=upto, updated_at=timezone.now())
        return len(rows), upto, upto < _sealed_head()


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
    """Drop minute points older than OBSERVABILITY_MINUTE_RETENTION_HOURS and hour points older
    than OBSERVABILITY_HOUR_RETENTION_DAYS (the audit log keeps the calls themselves)."""
    now = now or timezone.now()
    minutes = now - timedelta(hours=settings.OBSERVABILITY_MINUTE_RETENTION_HOURS)
    hours = now - timedelta(days=settings.OBSERVABILITY_HOUR_RETENTION_DAYS)
    deleted, _ = CallSeries.objects.filter(period=Period.MINUTE, start__lt=minutes).delete()
    more, _ = CallSeries.objects.filter(period=Period.HOUR, start__lt=hours).delete()
    return deleted + more


def record_dashboard_read(*, actor, source, shown: int) -> None:
    """The dashboard showed `actor` recent privileged actions from the audit log: a read of the
    log, recorded like any other (`audit.search`, as the audit admin pages do)."""
    from apps.audit.services import record_event

    with transaction.atomic():
        details = {"admin": True, "dashboard": True, "shown": shown}
        record_event("audit.search", actor=actor, source=source, details=details)
