"""Group commit of the data plane's audit events: every call's event is durable before the caller
gets its answer (fail closed), but concurrent calls share one transaction.

One writer coroutine takes everything queued, writes it with `record_events` (one transaction,
one COPY) in a thread, wakes each submitter, and takes whatever arrived while that commit ran.
There is no timer: a lone call is committed at once, alone; under load the batches grow by
themselves to what arrives during one commit (capped at `max_batch`). A failed batch fails each
of its submitters with AuditUnavailable and writes none of its events; the next batch starts
afresh (record_events drops a broken connection, so it reconnects).

`AuditSink` is what the pipeline calls once per call: the call's event as the Django gateway
recorded it (apps/gateway/views.py, `_Call.finish`), through the committer for an authenticated
caller, collapsed per (address, code, minute) for an unauthenticated one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async

from apps.audit.models import Outcome
from apps.audit.services import AuditUnavailable, PendingEvent, Source, async_refusals, record_events

from .. import telemetry

logger = logging.getLogger(__name__)
RunSync = Callable[[Sequence[PendingEvent]], Awaitable[None]]


class GroupCommitter:
    """`await committer.submit(event)` returns once `event` is committed; raises AuditUnavailable if
    its batch could not be written (or the committer is stopped).

    `run_sync(events)` writes a batch; by default `sync_to_async(record_events,
    thread_sensitive=True)`: Django's one thread-sensitive thread, which is the test's main thread
    when the app is driven by `async_to_sync` (so a test's transaction sees the events).
    `own_thread=True` gives the writer its own thread and database connection instead, so that a
    slow snapshot load on the shared thread cannot hold up the calls' commits."""

    def __init__(
        self, *, max_batch: int = 500, run_sync: RunSync | None = None, own_thread: bool = False, on_stop=None
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self._executor: ThreadPoolExecutor | None = None
        if run_sync is None:
            if own_thread:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
                run_sync = sync_to_async(record_events, thread_sensitive=False, executor=self._executor)
            else:
                run_sync = sync_to_async(record_events, thread_sensitive=True)
        self._run = run_sync
        self._on_stop = on_stop  # e.g. close the writer's own connection
        self._queue: deque[tuple[PendingEvent, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._stopping = False
        # Counters, for the bench and the metrics: batches and events committed, batches and
        # events failed, the largest batch, the time spent writing (seconds, wall clock).
        self.batches = self.events = self.failures = self.failed_events = self.largest_batch = 0
        self.write_seconds = 0.0

    @property
    def queued(self) -> int:
        """Events waiting for the next batch (not counting the one being written)."""
        return len(self._queue)

    def stats(self) -> dict:
        return {
            "batches": self.batches,
            "events": self.events,
            "mean_batch": round(self.events / self.batches, 2) if self.batches else 0.0,
            "largest_batch": self.largest_batch,
            "failures": self.failures,
            "failed_events": self.failed_events,
            "mean_write_ms": round(self.write_seconds * 1000 / self.batches, 3) if self.batches else 0.0,
        }

    async def start(self) -> None:
        """Start the writer on the running loop (submit starts it too, if need be)."""
        self._start()

    def _start(self) -> None:
        if self._stopping:
            raise AuditUnavailable()
        if self._writer is None:
            self._wake = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="audit-group-commit")

    async def stop(self) -> None:
        """Refuse new events, commit every queued one, then end the writer (and its own thread)."""
        self._stopping = True
        if self._writer is not None:
            self._wake.set()
            await self._writer
        if self._executor is not None:
            from django.db import connections

            await sync_to_async(connections.close_all, thread_sensitive=False, executor=self._executor)()
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._on_stop is not None:
            await self._on_stop()

    async def submit(self, event: PendingEvent) -> None:
        """Queue `event` for the next batch and wait until that batch is committed. Cancelling the
        wait does not withdraw the event: a caller who went away still has its call recorded."""
        if self._writer is None or self._writer.done():
            if self._writer is not None:  # only a bug ends the writer early: say so, fail closed
                raise AuditUnavailable()
            self._start()
        future = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        self._wake.set()
        await future

    async def _write_loop(self) -> None:
        batch: list[tuple[PendingEvent, asyncio.Future]] = []
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
                await self._commit(batch)
                batch = []
        finally:  # cancelled (the loop is closing): nobody may wait for ever, nor be told "durable"
            for _, future in [*batch, *self._queue]:
                if not future.done():
                    future.set_exception(AuditUnavailable())
            self._queue.clear()

    async def _commit(self, batch: list[tuple[PendingEvent, asyncio.Future]]) -> None:
        started = time.perf_counter()
        try:
            await self._run([event for event, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every submitter of the batch is told; the writer goes on
            self.failures += 1
            self.failed_events += len(batch)
            if not isinstance(exc, AuditUnavailable):
                logger.error("audit batch of %d events not written", len(batch), exc_info=exc)
            for _, future in batch:
                if not future.done():
                    error = AuditUnavailable()  # one each: a shared exception's traceback would grow
                    error.__cause__ = exc
                    future.set_exception(error)
            return
        finally:
            self.write_seconds += time.perf_counter() - started
        self.batches += 1
        self.events += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for _, future in batch:
            if not future.done():
                future.set_result(None)


def call_outcome(status: int, error_code: str) -> str:
    """success without an error; denied for 401/403/404/429; failure otherwise (as the gateway)."""
    if not error_code:
        return Outcome.SUCCESS
    return Outcome.DENIED if status in (401, 403, 404, 429) else Outcome.FAILURE


def call_details(model: str, status: int, latency_ms: float, *, caller=None, route=None, deid=None) -> dict:
    """The details of a gateway call's event: the model asked for, the status answered, the
    latency; the deployment that served it; de-identification counts (never values); `alert`
    for the sealed superuser, whose every call alerts."""
    details = {"model": model, "status": status, "latency_ms": round(latency_ms, 3)}
    if route is not None:
        details.update(version=route.version, server=route.server, deployment=route.deployment_id)
    if deid is not None:
        details["deid"] = deid
    if caller is not None and caller.superuser:
        details["alert"] = True
    return details


def call_event(
    event_type: str,
    *,
    model: str,
    status: int,
    latency_ms: float,
    source: Source,
    request_id: str,
    caller=None,
    route=None,
    error_code: str = "",
    deid: dict | None = None,
    extra: dict | None = None,
) -> PendingEvent:
    """An authenticated gateway call's event. `caller`: who (user_id, username, roles, superuser —
    the snapshot's Caller); `route`: the deployment chosen, if any (model_id, version, server,
    deployment_id — the snapshot's Route); `source`: address, user agent and token (with its
    issuer); `extra`: further details (e.g. the protocol)."""
    details = call_details(model, status, latency_ms, caller=caller, route=route, deid=deid)
    if extra:
        details.update(extra)
    return PendingEvent(
        event_type,
        actor_id=caller.user_id if caller is not None else None,
        actor_name=caller.username if caller is not None else "",
        actor_roles=list(caller.roles) if caller is not None else [],
        source=source,
        request_id=request_id,
        target_type="registry.model",
        target_id=str(route.model_id) if route is not None else "",
        target_display=model[:200],
        outcome=call_outcome(status, error_code),
        error_code=error_code,
        details=details,
    )


class AuditSink:
    """The pipeline's audit step: `await sink.record_call(...)` returns once the call is recorded
    (its own event, committed; or, for an unauthenticated caller, counted in its refusal bucket
    and, if first of the bucket, committed) and raises AuditUnavailable otherwise: no answer then.

    `refusal_counter`: `apps.audit.services.async_refusal_counter(redis_client)`; default: from
    REDIS_URL, or in process without Redis."""

    def __init__(self, committer: GroupCommitter | None = None, refusal_counter=None):
        self.committer = committer or GroupCommitter()
        self.refusals = async_refusals(self.committer.submit, refusal_counter)
        # /metrics: events waiting for the next group commit, per process (docs/metrics.md)
        telemetry.recorder.watch("audit_backlog", lambda: self.committer.queued)

    async def start(self) -> None:
        await self.committer.start()

    async def stop(self, *, final: bool = True) -> None:
        """Write the refusal remainders still counted in process (`final`: the process ends), then
        drain the committer."""
        if final and hasattr(self.refusals.counter, "store"):  # counted in process: nobody else will write them
            try:
                await self.refusals.flush_all()
            except AuditUnavailable:
                logger.exception("collapsed refusal counts not written at stop; process exit tries again")
        await self.refusals.wait_flushed()
        await self.committer.stop()

    async def record_call(
        self,
        event_type: str,
        *,
        model: str,
        status: int,
        latency_ms: float,
        source: Source,
        request_id: str,
        caller=None,
        route=None,
        error_code: str = "",
        deid: dict | None = None,
        extra: dict | None = None,
    ) -> None:
        # /metrics counts every finished call here, the one step every adapter's calls go through
        telemetry.record_call(
            event_type, status=status, error_code=error_code, latency_ms=latency_ms, route=route, deid=deid, extra=extra
        )
        if caller is not None:
            event = call_event(
                event_type,
                model=model,
                status=status,
                latency_ms=latency_ms,
                source=source,
                request_id=request_id,
                caller=caller,
                route=route,
                error_code=error_code,
                deid=deid,
                extra=extra,
            )
            await self.committer.submit(event)
            return
        details = call_details(model, status, latency_ms, route=route, deid=deid)
        if extra:
            details.update(extra)
        await self.refusals.record(
            event_type,
            source=source,
            outcome=call_outcome(status, error_code),
            error_code=error_code,
            target_type="registry.model",
            target_id=str(route.model_id) if route is not None else "",
            target_display=model[:200],
            details=details,
            request_id=request_id,
        )
