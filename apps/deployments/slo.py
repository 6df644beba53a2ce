"""The gateway's own figures per (model, version): what the rollout controller judges a canary by.

The data plane calls `record()` once per completed inference call (model id, version number,
whether it failed, latency). A call fails when the answer is a 5xx or the upstream could not be
reached: a 4xx is the caller's mistake, not the model's, and counts as a call without an error.

`record()` costs a dict update under a lock: no network per call. A daemon thread per process
flushes what accumulated to Redis about once a second, in ONE pipelined write: per second and
(model, version) one hash `sv:slo:<model id>:<version>:<epoch second>` (and per replica that answered
`sv:slo:d:<deployment id>:<epoch second>`, what a batching-config rollout judges by) with the fields `c` (calls),
`e` (errors) and `h0..hN` (a fixed latency histogram, LATENCY_BOUNDS_MS), each with a TTL
(settings.SLO_RETENTION_SECONDS). Several data-plane processes add into the same hashes (HINCRBY).

`window(model_id, version, seconds)` sums the last `seconds` seconds into calls, errors,
error_rate and p95_ms (the upper bound of the histogram bucket holding the 95th percentile: a
conservative figure, at most one bucket above the true value).

Without REDIS_URL (`make run` on SQLite) the figures stay in this process (MemoryStore): a
controller in another process then sees no calls, and a rollout holds until `min_calls` is met.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger(__name__)

# Upper bounds of the latency buckets (ms); one more bucket holds everything slower.
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10000, 30000)
_FIELDS = ("c", "e", *(f"h{i}" for i in range(len(LATENCY_BOUNDS_MS) + 1)))
_PREFIX = "sv:slo"


def _key(model_id: int, version: int, second: int) -> str:
    return f"{_PREFIX}:{int(model_id)}:{int(version)}:{int(second)}"


def _replica_key(deployment_id: int, second: int) -> str:
    """One replica's figures (a config rollout judges reconfigured replicas by these)."""
    return f"{_PREFIX}:d:{int(deployment_id)}:{int(second)}"


@dataclass(frozen=True)
class Window:
    """What the gateway saw of one model version over a window of seconds."""

    calls: int
    errors: int
    error_rate: float  # errors / calls, 0.0 without calls
    p95_ms: float | None  # None without calls

    def as_dict(self) -> dict:
        return {"calls": self.calls, "errors": self.errors, "error_rate": self.error_rate, "p95_ms": self.p95_ms}


def _p95(histogram: list[int], calls: int) -> float | None:
    if calls <= 0:
        return None
    wanted = 0.95 * calls
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= wanted:
            return float(LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)])
    return float(LATENCY_BOUNDS_MS[-1])


class MemoryStore:
    """The figures of this process only (no Redis)."""

    def __init__(self) -> None:
        self._rows: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def add(self, rows: dict[str, list[int]]) -> None:
        with self._lock:
            for key, row in rows.items():
                have = self._rows.setdefault(key, [0] * len(_FIELDS))
                for i, n in enumerate(row):
                    have[i] += n

    def read(self, keys: list[str]) -> list[list[int]]:
        with self._lock:
            return [list(self._rows.get(k, ())) for k in keys]


_memory = MemoryStore()


def _redis():
    from apps.core.throttling import redis_client

    return redis_client()


class Recorder:
    """Aggregates calls in process; `flush()` writes them (the flusher thread calls it each second)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        self._pid: int | None = None
        self._stop = threading.Event()

    def record(
        self,
        model_id: int,
        version: int,
        *,
        ok: bool,
        latency_ms: float,
        at: float | None = None,
        deployment_id: int | None = None,
    ) -> None:
        """Count one completed call of (model, version), and of the replica that answered when known.
        Cheap: no I/O."""
        second = int(at if at is not None else time.time())
        bucket = bisect_left(LATENCY_BOUNDS_MS, latency_ms)
        keys = [_key(model_id, version, second)]
        if deployment_id is not None:
            keys.append(_replica_key(deployment_id, second))
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            for key in keys:
                row = self._pending.get(key)
                if row is None:
                    row = self._pending[key] = [0] * len(_FIELDS)
                row[0] += 1
                if not ok:
                    row[1] += 1
                row[2 + bucket] += 1

    def flush(self) -> int:
        """Write what accumulated in one pipelined Redis round trip; returns the rows written.
        A Redis failure drops this second's figures (logged): the data plane never waits on it."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        client = _redis()
        if client is None:
            _memory.add(pending)
            return len(pending)
        ttl = int(settings.SLO_RETENTION_SECONDS)
        pipe = client.pipeline(transaction=False)
        for key, row in pending.items():
            for field, count in zip(_FIELDS, row, strict=True):
                if count:
                    pipe.hincrby(key, field, count)
            pipe.expire(key, ttl)
        try:
            pipe.execute()
        except Exception as err:  # noqa: BLE001 - figures are best effort, calls are not
            logger.warning("SLO figures for %d (model, version, second) rows dropped: %s", len(pending), err)
            return 0
        return len(pending)

    def _start(self) -> None:
        """One flusher per process (a forked worker starts its own; the parent's pending figures,
        copied by the fork, are dropped there so they are not counted twice)."""
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._pid is not None:
                self._pending = {}
            self._pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._run, args=(self._stop,), name="slo-flusher", daemon=True).start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the flusher must outlive one bad flush
                logger.exception("SLO flush failed")


recorder = Recorder()


def record(model_id: int, version: int, *, ok: bool, latency_ms: float, deployment_id: int | None = None) -> None:
    """The data plane's hook: one completed inference call of (model, version), answered (or failed)
    by the replica `deployment_id` when the data plane knows it."""
    recorder.record(model_id, version, ok=ok, latency_ms=latency_ms, deployment_id=deployment_id)


def failed(status: int) -> bool:
    """Whether an answer's status counts against the model: a 5xx (upstream error, unreachable,
    gateway failure) does; a 4xx (the caller's request) does not."""
    return status >= 500


def window(model_id: int, version: int, seconds: float, *, now: float | None = None) -> Window:
    """The figures of the last `seconds` seconds (the current second included), summed over every
    data-plane process that flushed them."""
    return _total(_rows(model_id, version, seconds, now))


def replica_window(deployment_ids, seconds: float, *, now: float | None = None) -> Window:
    """As `window`, for the calls the replicas `deployment_ids` answered (summed over them): what a
    batching-config rollout judges its reconfigured replicas by."""
    ids = [int(pk) for pk in deployment_ids]
    return _total(_read([_replica_key(pk, s) for s in _seconds(seconds, now) for pk in ids]))


def _total(rows: list[list[int]]) -> Window:
    totals = [0] * len(_FIELDS)
    for row in rows:
        for i, n in enumerate(row):
            totals[i] += n
    calls, errors = totals[0], totals[1]
    return Window(
        calls=calls,
        errors=errors,
        error_rate=(errors / calls) if calls else 0.0,
        p95_ms=_p95(totals[2:], calls),
    )


def _seconds(seconds: float, now: float | None) -> range:
    end = int(now if now is not None else time.time())
    span = max(1, min(int(seconds + 0.999), int(settings.SLO_RETENTION_SECONDS)))
    return range(end - span + 1, end + 1)


def _read(keys: list[str]) -> list[list[int]]:
    if not keys:
        return []
    client = _redis()
    if client is None:
        return _memory.read(keys)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, _FIELDS)
    return [[int(v or 0) for v in values] for values in pipe.execute()]


def _rows(model_id: int, version: int, seconds: float, now: float | None) -> list[list[int]]:
    """One row of _FIELDS per second of the window, oldest first (an empty row where nothing was recorded)."""
    rows = _read([_key(model_id, version, s) for s in _seconds(seconds, now)])
    return [row or [0] * len(_FIELDS) for row in rows]


def calls_per_second(model_id: int, version: int, seconds: float, *, now: float | None = None) -> list[int]:
    """The version's calls in each second of the last `seconds` seconds, oldest first: the arrival
    pattern the batching tuner replays (apps/deployments/tuning.py derives rate and burstiness)."""
    return [row[0] for row in _rows(model_id, version, seconds, now)]
