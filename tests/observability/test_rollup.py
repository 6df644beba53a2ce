"""The rollup of gateway calls into the dashboard's series (docs/dashboard.md): counts, errors,
refusals, percentiles read from the histogram, tokens; incremental, idempotent, and one worker at a
time. Events are written by the audit service's batched path and sealed, as in production."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.selectors import is_catalogued
from apps.observability import histogram
from apps.observability.models import LATENCY_BOUNDS_MS, CallSeries, Period, RollupCursor
from apps.observability.selectors import PRIVILEGED_TYPES, call_series
from apps.observability.services import _groups_in_python, _groups_in_sql, aggregate, roll_up_calls

from .helpers import call, record_sealed

# Recent (older points are pruned), a quarter past an hour: T0 + 1 minute is the same hour.
T0 = datetime.now(UTC).replace(minute=15, second=0, microsecond=0) - timedelta(hours=3)
LATENCIES = [float(ms) for ms in range(1, 101)]  # 1..100 ms: p50 50 ms, p95 95 ms


def point(period, start, model="iris", version=1) -> CallSeries:
    return CallSeries.objects.get(period=period, start=start, model_name=model, version=version)


@pytest.mark.django_db
def test_counts_errors_refusals_and_percentiles_per_minute_and_hour():
    events = [call("iris", 1, ms, T0 + timedelta(seconds=i % 50)) for i, ms in enumerate(LATENCIES)]
    events += [call("iris", 1, 900.0, T0 + timedelta(seconds=5), status=503, code="triton_unavailable")] * 2
    events += [call("iris", 0, 0.4, T0 + timedelta(seconds=7), status=403, code="invoke_not_permitted")] * 3
    events += [call("iris", 1, 20.0, T0 + timedelta(minutes=1, seconds=3))]  # the next minute, same hour
    events += [call("iris", 2, 30.0, T0 + timedelta(hours=1))]  # another version, the next hour
    record_sealed(events)

    result = roll_up_calls()

    assert result.events == len(events) and not result.busy
    minute = point(Period.MINUTE, T0)
    assert (minute.calls, minute.errors, minute.denied, minute.latency_count) == (102, 2, 0, 102)
    assert sum(minute.latency_buckets) == 102 and minute.latency_buckets[histogram.bucket_of(900.0)] == 2
    refused = point(Period.MINUTE, T0, version=0)
    assert (refused.calls, refused.denied, refused.latency_count) == (3, 3, 0)  # refusals: no latency
    hour = point(Period.HOUR, T0.replace(minute=0))
    assert (hour.calls, hour.errors, hour.latency_count) == (103, 2, 103)
    assert point(Period.HOUR, T0.replace(minute=0) + timedelta(hours=1), version=2).calls == 1
    quarter = T0.replace(hour=T0.hour // 6 * 6, minute=0)
    assert point(Period.SIX_HOURS, quarter).calls == 103  # the 7-day view's points
    later = T0 + timedelta(hours=1)
    assert point(Period.SIX_HOURS, later.replace(hour=later.hour // 6 * 6, minute=0), version=2).calls == 1
    # percentiles from the buckets fall in the bucket that holds the exact value
    exact = sorted([*LATENCIES, 900.0, 900.0])
    for q in (0.50, 0.95):
        true = exact[int(q * len(exact)) - 1]
        i = histogram.bucket_of(true)
        low, high = (0 if i == 0 else LATENCY_BOUNDS_MS[i - 1]), LATENCY_BOUNDS_MS[i]
        assert low <= histogram.percentile(minute.latency_buckets, q) <= high, (q, true)


@pytest.mark.django_db
def test_tokens_of_chat_calls():
    llm = {"prompt_tokens": 12, "completion_tokens": 30, "ttft_ms": 5.0, "duration_ms": 80.0}
    record_sealed(
        [call("smollm2", 1, 80.0, T0, llm=llm), call("smollm2", 1, 60.0, T0, llm={**llm, "prompt_tokens": 8})]
    )

    roll_up_calls()

    minute = point(Period.MINUTE, T0, model="smollm2")
    assert (minute.calls, minute.tokens_in, minute.tokens_out) == (2, 20, 60)


@pytest.mark.django_db
def test_incremental_and_idempotent():
    record_sealed([call("iris", 1, 10.0, T0)] * 3)
    roll_up_calls()
    cursor = RollupCursor.objects.get(name="calls").sequence

    again = roll_up_calls()  # nothing new: nothing added
    assert again.events == 0 and RollupCursor.objects.get(name="calls").sequence == cursor
    assert point(Period.MINUTE, T0).calls == 3

    record_sealed([call("iris", 1, 10.0, T0 + timedelta(seconds=30))] * 2)  # same minute, later
    roll_up_calls(batch_size=1)  # one sequence number per transaction: the cursor moves with each
    assert point(Period.MINUTE, T0).calls == 5
    assert RollupCursor.objects.get(name="calls").sequence > cursor


@pytest.mark.django_db
def test_unsealed_events_wait_for_the_sealer():
    from apps.audit.services import record_events

    with transaction.atomic():
        record_events([call("iris", 1, 10.0, T0)])  # committed, not sealed yet
    assert roll_up_calls().events == 0 and not CallSeries.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks: SQLite serialises whole-database writes")
@pytest.mark.django_db(transaction=True)
def test_a_second_worker_finds_the_cursor_busy_and_counts_nothing():
    record_sealed([call("iris", 1, 10.0, T0)] * 4)
    RollupCursor.objects.get_or_create(name="calls")  # a flush by an earlier transactional test removes it
    locked, release = threading.Event(), threading.Event()

    def other_worker():
        with transaction.atomic():
            RollupCursor.objects.select_for_update().get(name="calls")
            locked.set()
            release.wait(30)
        connection.close()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert locked.wait(30)
    try:
        assert roll_up_calls().busy
        assert not CallSeries.objects.exists()
    finally:
        release.set()
        worker.join()
    assert roll_up_calls().events == 4
    assert roll_up_calls().events == 0
    assert point(Period.MINUTE, T0).calls == 4


@pytest.mark.django_db
def test_old_points_are_pruned():
    old = T0 - timedelta(days=3)
    record_sealed([call("iris", 1, 10.0, old)])

    roll_up_calls()

    assert not CallSeries.objects.filter(period=Period.MINUTE).exists()  # 48 h of minutes
    assert point(Period.HOUR, old.replace(minute=0)).calls == 1  # 90 days of hours
    assert point(Period.SIX_HOURS, old.replace(hour=old.hour // 6 * 6, minute=0)).calls == 1  # and of 6 hours


@pytest.mark.django_db
def test_series_for_the_dashboard():
    now = T0 + timedelta(seconds=20)
    record_sealed(
        [call("iris", 1, ms, T0 - timedelta(minutes=1)) for ms in (10.0, 20.0, 30.0)]
        + [call("iris", 1, 40.0, T0, status=500, code="internal_error")]
    )
    roll_up_calls()

    series = call_series("1h", now=now)

    assert series["period_seconds"] == 60 and len(series["labels"]) == 60
    assert series["labels"][-1] == T0.isoformat()
    (iris,) = series["models"]
    assert iris["calls_per_second"][-2:] == [round(3 / 60, 4), round(1 / 60, 4)]
    assert iris["error_rate"][-2:] == [0.0, 1.0] and iris["error_rate"][0] is None
    assert 20 <= iris["p50_ms"][-2] <= 30 and 30 <= iris["p95_ms"][-2] <= 50  # buckets [20, 30) and [30, 50)
    (total,) = series["versions"]
    assert (total["calls"], total["errors"], total["error_rate"]) == (4, 1, 0.25)


def test_privileged_types_are_catalogued():
    assert [t for t in PRIVILEGED_TYPES if not is_catalogued(t)] == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="compares PostgreSQL's grouping with SQLite's path")
@pytest.mark.django_db
def test_grouping_in_postgresql_equals_the_python_path():
    from apps.audit.services import PendingEvent

    llm = {"prompt_tokens": 7, "completion_tokens": 9}
    events = [call("iris", 1, ms, T0 + timedelta(seconds=ms % 60)) for ms in (0.2, 1.0, 2.0, 7.5, 59999.0, 90000.0)]
    events += [call("smollm2", 2, 33.3, T0, llm=llm), call("iris", 0, 1.0, T0, status=404, code="model_not_found")]
    events += [call("iris", 1, 10.0, T0, status=502, code="triton_unavailable")]
    collapsed = PendingEvent(
        "inference.infer", target_display="iris", outcome="denied", error_code="missing_token",
        details={"model": "iris", "status": 401, "latency_ms": 0.1, "count": 17}, timestamp=T0,
    )  # fmt: skip
    record_sealed([*events, collapsed])
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()

    in_sql = aggregate(_groups_in_sql(0, head))
    in_python = aggregate(_groups_in_python(0, head))

    assert in_sql.keys() == in_python.keys()
    for key, point in in_sql.items():
        other = in_python[key]
        assert point.latency_sum_ms == pytest.approx(other.latency_sum_ms)
        assert point.sums()[:4] + point.sums()[5:] == other.sums()[:4] + other.sums()[5:], key
    assert in_sql[(60, T0, "iris", 0)].denied == 18  # the collapsed refusal counts its 17 calls
