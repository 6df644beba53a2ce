"""Group commit of the data plane's audit events (issue 12): each call's event is durable before
its answer, concurrent calls share a transaction, a lone call is not delayed, a killed database
connection fails the calls of its batch closed with nothing half-written and the next batch
reconnects, and unauthenticated refusals collapse as they do in the portal.

The committer runs on an event loop driven by `async_to_sync` from the test's main thread, as
the data plane's tests drive it, so its writes (thread-sensitive) run on the main thread."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from datetime import timedelta
from types import SimpleNamespace

import psycopg
import pytest
import redis.asyncio
import time_machine
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.utils import timezone

from apps.audit import refusals
from apps.audit.models import AuditEvent, Outcome
from apps.audit.services import (
    AuditUnavailable,
    PendingEvent,
    Source,
    async_refusal_counter,
    async_refusals,
    record_events,
)
from apps.gateway.dataplane.auditsink import AuditSink, GroupCommitter, call_outcome

MINUTE = timedelta(seconds=60)
postgres_only = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("sqlite"), reason="PostgreSQL backends and locks"
)


def call_event(request_id: str, i: int = 0) -> PendingEvent:
    """An authenticated inference call's event, as the gateway records it (views._Call.finish)."""
    return PendingEvent(
        "inference.infer",
        actor_id=1,
        actor_name="alice",
        actor_roles=["analyst"],
        source=Source(ip="198.51.100.7", user_agent="tritonclient", token_id=9, token_issuer_id=1, token_issuer="al"),
        request_id=request_id,
        target_type="registry.model",
        target_id="3",
        target_display="iris",
        details={"model": "iris", "status": 200, "latency_ms": 0.8 + i, "version": 1, "server": "e", "deployment": 4},
    )


def run(scenario):
    return async_to_sync(scenario)()


def other_connection_params() -> dict:
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    return params


async def other_connection() -> psycopg.AsyncConnection:
    """A connection of its own, not the committer's: what it sees is committed."""
    return await psycopg.AsyncConnection.connect(**other_connection_params(), autocommit=True)


async def rows(conn: psycopg.AsyncConnection, prefix: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM audit_auditevent WHERE request_id LIKE %s", [prefix + "%"])
    return (await cur.fetchone())[0]


async def writer_pid(committer: GroupCommitter) -> int:
    """The PostgreSQL backend of the committer's connection (the thread-sensitive thread's)."""

    def pid():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    return await sync_to_async(pid, thread_sensitive=True)()


async def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll `predicate` (plain or async) on the loop until it is truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := await _value(predicate())):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


async def _value(value):
    return await value if inspect.isawaitable(value) else value


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_share_commits_and_each_returns_once_visible_elsewhere():
    visible_on_return: list[bool] = []

    async def scenario():
        committer = GroupCommitter()
        other = await other_connection()
        try:

            async def call(i: int):
                await committer.submit(call_event(f"cc-{i:02d}-", i))
                visible_on_return.append(await rows(other, f"cc-{i:02d}-") == 1)

            await asyncio.gather(*(call(i) for i in range(50)))
            await committer.stop()
        finally:
            await other.close()
        return committer.stats()

    stats = run(scenario)

    assert visible_on_return == [True] * 50
    assert stats["events"] == 50
    assert 1 <= stats["batches"] < 50
    assert AuditEvent.objects.filter(request_id__startswith="cc-").count() == 50


@pytest.mark.django_db
def test_each_commit_takes_whatever_arrived_while_the_previous_one_ran():
    """No timer: the first call is written alone, the 49 that arrive while its commit runs are
    the next batch, whole."""
    sizes: list[int] = []

    async def scenario():
        release, first_running = asyncio.Event(), asyncio.Event()
        write = sync_to_async(record_events, thread_sensitive=True)

        async def observed(events):
            sizes.append(len(events))
            if len(sizes) == 1:
                first_running.set()
                await release.wait()  # the first commit is still running while the others arrive
            await write(events)

        committer = GroupCommitter(run_sync=observed)
        first = asyncio.ensure_future(committer.submit(call_event("arrive-first")))
        await first_running.wait()
        rest = [asyncio.ensure_future(committer.submit(call_event(f"arrive-{i}"))) for i in range(49)]
        await wait_until(lambda: committer.queued == 49, what="49 queued events")
        release.set()
        await asyncio.gather(first, *rest)
        await committer.stop()
        return committer.stats()

    stats = run(scenario)

    assert sizes == [1, 49]
    assert (stats["batches"], stats["events"], stats["mean_batch"], stats["largest_batch"]) == (2, 50, 25.0, 49)
    assert AuditEvent.objects.filter(request_id__startswith="arrive-").count() == 50


@pytest.mark.django_db
def test_batches_are_capped():
    sizes: list[int] = []
    write = sync_to_async(record_events, thread_sensitive=True)

    async def observed(events):
        sizes.append(len(events))
        await write(events)

    async def scenario():
        committer = GroupCommitter(max_batch=8, run_sync=observed)
        await asyncio.gather(*(committer.submit(call_event(f"cap-{i}")) for i in range(20)))
        await committer.stop()

    run(scenario)

    assert sum(sizes) == 20 and max(sizes) == 8
    assert AuditEvent.objects.filter(request_id__startswith="cap-").count() == 20


@pytest.mark.django_db
def test_a_lone_call_is_not_delayed():
    """Not a benchmark: there is no fixed wait for company, so a lone call's commit starts at once."""

    async def scenario():
        committer = GroupCommitter()
        await committer.submit(call_event("lone-warm-up"))  # the connection is opened here
        timings = []
        for i in range(5):
            started = time.perf_counter()
            await committer.submit(call_event(f"lone-{i}"))
            timings.append(time.perf_counter() - started)
        await committer.stop()
        return timings, committer.stats()

    timings, stats = run(scenario)

    assert min(timings) < 0.05, timings
    assert stats["largest_batch"] == 1


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_killed_connection_fails_its_batch_closed_and_the_next_batch_reconnects():
    """The writer's backend is terminated while its COPY waits (a lock held by another session
    keeps the batch in flight): each call of that batch is refused with AuditUnavailable, none of
    its events is in the table, and the calls after it are written on a new connection."""

    async def scenario():
        committer = GroupCommitter()
        await committer.submit(call_event("kill-before"))
        pid = await writer_pid(committer)
        other = await other_connection()
        try:
            async with other.transaction():
                await other.execute("LOCK TABLE audit_auditevent IN SHARE MODE")  # writers wait, readers do not
                in_flight = [asyncio.ensure_future(committer.submit(call_event(f"kill-lost-{i}"))) for i in range(10)]

                async def writer_waits():
                    cur = await other.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", [pid]
                    )
                    return (await cur.fetchone())[0] == 1

                await wait_until(writer_waits, what="the writer's batch to wait for the lock")
                assert committer.queued == 0  # all ten are in the batch being written
                cur = await other.execute("SELECT pg_terminate_backend(%s)", [pid])
                assert (await cur.fetchone())[0]
            outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
            lost = await rows(other, "kill-lost-")

            await asyncio.gather(*(committer.submit(call_event(f"kill-after-{i}")) for i in range(3)))
            after = await rows(other, "kill-after-")
            new_pid = await writer_pid(committer)
        finally:
            await other.close()
        await committer.stop()
        return outcomes, lost, after, pid, new_pid, committer.stats()

    outcomes, lost, after, pid, new_pid, stats = run(scenario)

    assert all(isinstance(o, AuditUnavailable) for o in outcomes), outcomes
    assert lost == 0  # nothing of the failed batch
    assert after == 3
    assert new_pid != pid  # reconnected
    assert (stats["failures"], stats["failed_events"]) == (1, 10)


@pytest.mark.django_db
def test_a_failed_batch_fails_only_its_callers_and_the_writer_goes_on():
    calls = {"n": 0}
    write = sync_to_async(record_events, thread_sensitive=True)

    async def flaky(events):
        calls["n"] += 1
        if calls["n"] == 1:
            raise AuditUnavailable()
        await write(events)

    async def scenario():
        committer = GroupCommitter(run_sync=flaky)
        with pytest.raises(AuditUnavailable):
            await committer.submit(call_event("flaky-lost"))
        await committer.submit(call_event("flaky-kept"))
        await committer.stop()
        return committer.stats()

    stats = run(scenario)

    assert list(AuditEvent.objects.filter(request_id__startswith="flaky-").values_list("request_id", flat=True)) == [
        "flaky-kept"
    ]
    assert (stats["batches"], stats["failures"]) == (1, 1)


@pytest.mark.django_db
def test_stop_drains_then_refuses():
    async def scenario():
        committer = GroupCommitter()
        pending = [asyncio.ensure_future(committer.submit(call_event(f"drain-{i}"))) for i in range(5)]
        await asyncio.sleep(0)  # queued, not yet written
        await committer.stop()
        assert all(p.done() and p.exception() is None for p in pending)
        with pytest.raises(AuditUnavailable):
            await committer.submit(call_event("drain-late"))

    run(scenario)

    assert AuditEvent.objects.filter(request_id__startswith="drain-").count() == 5


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_own_thread_writes_on_its_own_connection():
    async def scenario():
        committer = GroupCommitter(own_thread=True)
        main_pid = await writer_pid(committer)
        await asyncio.gather(*(committer.submit(call_event(f"own-{i}")) for i in range(10)))
        other = await other_connection()
        try:
            seen = await rows(other, "own-")
            cur = await other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s "
                "AND pid <> pg_backend_pid()",
                [main_pid],
            )
            writers = (await cur.fetchone())[0]
        finally:
            await other.close()
        await committer.stop()
        return seen, writers

    seen, writers = run(scenario)

    assert seen == 10
    assert writers >= 1  # the writer thread's own connection


# --- Unauthenticated refusals, collapsed through the async path --------------------------------


@pytest.fixture(params=["redis", "in-process"])
def counter_kind(request, settings):
    if request.param == "in-process":
        settings.REDIS_URL = ""
        refusals.counter().reset()
    return request.param


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now().replace(second=10, microsecond=0), tick=False) as traveller:
        yield traveller


def refused_calls():
    return AuditEvent.objects.filter(event_type="auth.token.denied").order_by("id")


async def refuse(recorder, ip: str, request_id: str = "") -> None:
    await recorder.record(
        "auth.token.denied",
        source=Source(ip=ip, user_agent="curl/8"),
        outcome=Outcome.DENIED,
        error_code="invalid_token",
        target_type="registry.model",
        target_display="iris",
        details={"model": "iris", "status": 401},
        request_id=request_id,
    )


@pytest.mark.django_db
def test_refusals_collapse_through_the_group_committer(counter_kind, clock):
    async def scenario():
        client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"]) if counter_kind == "redis" else None
        committer = GroupCommitter()
        recorder = async_refusals(committer.submit, async_refusal_counter(client))
        await asyncio.gather(*(refuse(recorder, "198.51.100.7", f"rf-{i}") for i in range(5)))
        first_batches = committer.batches
        clock.shift(MINUTE)
        await refuse(recorder, "203.0.113.5", "rf-next")  # sees the closed window: flushes it
        await recorder.wait_flushed()
        await committer.stop()
        if client is not None:
            await client.aclose()
        return first_batches

    first_batches = run(scenario)

    first, other, rest = refused_calls()  # the remainder is flushed after the call that closed its window
    assert first_batches == 1  # one event written for five refusals
    assert (first.source_ip, first.details["count"], first.error_code, first.outcome) == (
        "198.51.100.7",
        1,
        "invalid_token",
        "denied",
    )
    assert first.request_id.startswith("rf-") and first.details["model"] == "iris"
    assert (rest.source_ip, rest.details["count"], rest.details["collapsed"], rest.request_id) == (
        "198.51.100.7",
        4,
        True,
        "",
    )
    assert rest.details["window_start"] == first.details["window_start"]
    assert (other.source_ip, other.details["count"]) == ("203.0.113.5", 1)
    assert sum(e.details["count"] for e in refused_calls()) == 6


@pytest.mark.django_db
def test_the_async_first_refusal_is_the_portals_event(settings, clock):
    """Same facts, same row as record_refusal writes (but the address and request id)."""
    settings.REDIS_URL = ""
    refusals.counter().reset()
    refusals.record_refusal(
        "auth.token.denied",
        source=Source(ip="198.51.100.8", user_agent="curl/8"),
        outcome=Outcome.DENIED,
        error_code="invalid_token",
        target_type="registry.model",
        target_display="iris",
        details={"model": "iris", "status": 401},
    )

    async def scenario():
        committer = GroupCommitter()
        await refuse(async_refusals(committer.submit), "198.51.100.7")
        await committer.stop()

    run(scenario)

    portal, dataplane = (AuditEvent.objects.values().get(pk=e.pk) for e in refused_calls())
    for row in (portal, dataplane):
        del row["id"], row["source_ip"]
    assert dataplane == portal


@pytest.mark.django_db
def test_a_refusal_that_cannot_be_audited_is_not_counted(counter_kind, clock):
    async def scenario():
        client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"]) if counter_kind == "redis" else None
        committer = GroupCommitter()

        async def broken(event):
            raise AuditUnavailable()

        counter = async_refusal_counter(client)
        with pytest.raises(AuditUnavailable):
            await refuse(async_refusals(broken, counter), "198.51.100.7")
        await refuse(async_refusals(committer.submit, counter), "198.51.100.7")
        await committer.stop()
        if client is not None:
            await client.aclose()

    run(scenario)

    assert [e.details["count"] for e in refused_calls()] == [1]  # written as the first: the failed one never counted


@pytest.mark.django_db
def test_a_failed_remainder_flush_puts_the_counts_back(counter_kind, clock):
    async def scenario():
        client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"]) if counter_kind == "redis" else None
        committer = GroupCommitter()
        counter = async_refusal_counter(client)
        recorder = async_refusals(committer.submit, counter)
        for _ in range(4):
            await refuse(recorder, "198.51.100.7")
        clock.shift(MINUTE)

        async def broken(event):
            raise AuditUnavailable()

        with pytest.raises(AuditUnavailable):
            await async_refusals(broken, counter).flush()
        written = await recorder.flush()
        await committer.stop()
        if client is not None:
            await client.aclose()
        return written

    assert run(scenario) == 1
    assert [e.details["count"] for e in refused_calls()] == [1, 3]


@pytest.mark.django_db
def test_with_redis_down_every_refusal_is_still_written(settings):
    from tests.factories import closed_port

    async def scenario():
        client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=0.5)
        committer = GroupCommitter()
        recorder = async_refusals(committer.submit, async_refusal_counter(client))
        for _ in range(3):
            await refuse(recorder, "198.51.100.7")
        await committer.stop()
        await client.aclose()

    run(scenario)

    assert [e.details["count"] for e in refused_calls()] == [1, 1, 1]  # uncollapsed, but complete


# --- AuditSink: the pipeline's audit step, recording what the Django gateway recorded ------------

CALLER = SimpleNamespace(user_id=7, username="alice", roles=("analyst", "auditor"), superuser=False)
ROUTE = SimpleNamespace(model_id=3, version=2, server="edge-1", deployment_id=11)
TOKEN = Source(ip="198.51.100.7", user_agent="tritonclient", token_id=9, token_issuer_id=1, token_issuer="root")


@pytest.mark.django_db
def test_an_authenticated_call_is_recorded_as_the_gateway_recorded_it():
    async def scenario():
        sink = AuditSink()
        await sink.record_call(
            "inference.infer",
            model="iris",
            status=200,
            latency_ms=1.23456,
            source=TOKEN,
            request_id="sink-ok",
            caller=CALLER,
            route=ROUTE,
            deid={"mode": "pseudonymise", "counts": {"email": 1}},
            extra={"protocol": "grpc"},
        )
        await sink.record_call(
            "inference.infer",
            model="iris",
            status=403,
            latency_ms=0.5,
            source=TOKEN,
            request_id="sink-refused",
            caller=SimpleNamespace(**{**vars(CALLER), "superuser": True}),
            error_code="invoke_not_permitted",
        )
        await sink.stop()

    run(scenario)

    ok = AuditEvent.objects.get(request_id="sink-ok")
    assert (ok.actor_id, ok.actor_name, ok.actor_roles, ok.token_id, ok.source_ip) == (
        7,
        "alice",
        ["analyst", "auditor"],
        9,
        "198.51.100.7",
    )
    assert (ok.event_type, ok.target_type, ok.target_id, ok.target_display, ok.outcome, ok.error_code) == (
        "inference.infer",
        "registry.model",
        "3",
        "iris",
        "success",
        "",
    )
    assert ok.details == {
        "model": "iris",
        "status": 200,
        "latency_ms": 1.235,
        "version": 2,
        "server": "edge-1",
        "deployment": 11,
        "deid": {"mode": "pseudonymise", "counts": {"email": 1}},
        "protocol": "grpc",
        "token_issuer_id": 1,
        "token_issuer": "root",
    }
    refused = AuditEvent.objects.get(request_id="sink-refused")
    assert (refused.outcome, refused.error_code, refused.target_id) == ("denied", "invoke_not_permitted", "")
    assert refused.details["alert"] is True  # the sealed superuser's every call alerts


@pytest.mark.django_db
def test_an_unauthenticated_callers_refusals_are_collapsed(settings, clock):
    settings.REDIS_URL = ""
    refusals.counter().reset()

    async def scenario():
        sink = AuditSink()
        for i in range(3):
            await sink.record_call(
                "auth.token.denied",
                model="iris",
                status=401,
                latency_ms=0.2,
                source=Source(ip="198.51.100.9"),
                request_id=f"anon-{i}",
                error_code="invalid_token",
            )
        await sink.stop()  # in process: the open bucket's remainder is written at stop

    run(scenario)

    first, rest = refused_calls()
    assert (first.request_id, first.outcome, first.details["count"], first.details["model"]) == (
        "anon-0",
        "denied",
        1,
        "iris",
    )
    assert (rest.details["count"], rest.details["collapsed"]) == (2, True)


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [(200, "", "success"), (401, "invalid_token", "denied"), (429, "rate_limited", "denied"), (503, "x", "failure")],
)
def test_call_outcome(status, code, outcome):
    assert call_outcome(status, code) == outcome
