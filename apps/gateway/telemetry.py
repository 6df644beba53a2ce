"""The data plane's cumulative figures for `/metrics` (docs/metrics.md): per (model, version) calls by
status and error code, a latency histogram, language-model tokens in and out, de-identified entities
by type; per process the audit group commit's backlog.

`record_call()` is what the data plane's audit step calls once per finished call (AuditSink.record_call):
a dict update under a lock, no I/O. A daemon thread per process (as apps/deployments/slo.py's recorder)
adds what accumulated into Redis about once a second in ONE pipelined write of HINCRBY /
HINCRBYFLOAT into a few hashes that never expire (Prometheus counters: they only grow; a Redis
flush is a counter reset, which `rate()` handles). Every data-plane process adds into the same
hashes, so a scrape reads the sum of all of them with a handful of HGETALLs and never touches the
audit log. Without REDIS_URL the figures stay in this process (MemoryStore).

Cardinality is bounded: a call the gateway refused before it chose a deployment (bad token,
unknown model, no grant) is counted under model="" version="" whatever model name the caller sent,
so a caller cannot mint label values; error codes are the gateway's stable codes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Upper bounds of the latency buckets, seconds (Prometheus' unit); one more bucket is +Inf.
LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SEP = "\x1f"  # between the parts of a hash field (model names cannot hold it)
PREFIX = "sv:metrics:"
CALLS = PREFIX + "calls"  # model, version, kind, status, code -> count
LATENCY = PREFIX + "latency"  # model, version, bucket index | "sum" | "count" -> count (sum: seconds, float)
TOKENS = PREFIX + "tokens"  # model, version, direction (in | out) -> tokens
DEID = PREFIX + "deid"  # model, version, entity type -> entities replaced
PROCESS = PREFIX + "proc:"  # + process id: that process's gauges (a hash with a TTL)
PROCESS_TTL = 30


def _fields(*parts) -> str:
    return SEP.join(str(p) for p in parts)


class MemoryStore:
    """The figures of this process only (no Redis)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, float]] = {}
        self.gauges: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def add(self, pending: dict[str, dict[str, float]], gauges: dict[str, float], process: str) -> None:
        with self._lock:
            for name, fields in pending.items():
                have = self.hashes.setdefault(name, {})
                for field, n in fields.items():
                    have[field] = have.get(field, 0) + n
            self.gauges[process] = dict(gauges)

    def read(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        with self._lock:
            return {k: dict(v) for k, v in self.hashes.items()}, {k: dict(v) for k, v in self.gauges.items()}


_memory = MemoryStore()


def _redis():
    from apps.core.throttling import redis_client

    return redis_client()


class Recorder:
    """Aggregates in process; `flush()` adds the increments to Redis (the flusher thread, each second).
    Per call only tuples and small lists are touched; the Redis field names are built at flush."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._calls: dict[tuple, int] = {}
        self._latency: dict[tuple, list] = {}  # (model, version) -> [bucket counts..., sum]
        self._counts: dict[tuple, int] = {}  # (hash name, model, version, part) -> n (tokens, deid)
        self._gauges: dict[str, Callable[[], float]] = {}
        self._pid: int | None = None
        self.process = f"{socket.gethostname()}:{os.getpid()}"

    def watch(self, name: str, read: Callable[[], float]) -> None:
        """A gauge of this process, read at each flush (e.g. the audit backlog)."""
        self._gauges[name] = read
        self._ensure_started()

    def record(self, *, model: str, version: str, kind: str, status: int, code: str, latency_s: float,
               tokens_in: int = 0, tokens_out: int = 0, deid: dict | None = None) -> None:  # fmt: skip
        """Count one finished call. Cheap: no I/O."""
        if self._pid != os.getpid():
            self._ensure_started()
        bucket = bisect_left(LATENCY_BOUNDS_S, latency_s)
        series = (model, version)
        key = (model, version, kind, status, code)
        with self._lock:
            self._calls[key] = self._calls.get(key, 0) + 1
            row = self._latency.get(series)
            if row is None:
                row = self._latency[series] = [0] * (len(LATENCY_BOUNDS_S) + 1) + [0.0]
            row[bucket] += 1
            row[-1] += latency_s
            if tokens_in or tokens_out or deid:
                counts = self._counts
                for part, n in (("in", tokens_in), ("out", tokens_out)):
                    if n:
                        counts[(TOKENS, model, version, part)] = counts.get((TOKENS, model, version, part), 0) + n
                for entity, n in (deid or {}).items():
                    if n:
                        counts[(DEID, model, version, entity)] = counts.get((DEID, model, version, entity), 0) + int(n)

    def _take(self) -> dict[str, dict[str, float]]:
        """What accumulated, as {hash name: {field: increment}} (and reset)."""
        with self._lock:
            calls, latency, counts = self._calls, self._latency, self._counts
            self._calls, self._latency, self._counts = {}, {}, {}
        pending: dict[str, dict[str, float]] = {}
        if calls:
            pending[CALLS] = {_fields(*key): n for key, n in calls.items()}
        if latency:
            fields = pending[LATENCY] = {}
            for (model, version), row in latency.items():
                for i, n in enumerate(row[:-1]):
                    if n:
                        fields[_fields(model, version, i)] = n
                fields[_fields(model, version, "sum")] = row[-1]
        for (name, model, version, part), n in counts.items():
            pending.setdefault(name, {})[_fields(model, version, part)] = n
        return pending

    def _gauge_values(self) -> dict[str, float]:
        out = {}
        for name, read in list(self._gauges.items()):
            try:
                out[name] = float(read())
            except Exception:  # noqa: BLE001 - one unreadable gauge must not stop the others
                logger.debug("gauge %s unreadable", name, exc_info=True)
        return out

    def flush(self) -> int:
        """Add what accumulated, in one pipelined round trip; returns the fields written. A Redis
        failure drops these increments (logged): the data plane never waits on its figures."""
        pending = self._take()
        gauges = self._gauge_values()
        client = _redis()
        if client is None:
            _memory.add(pending, gauges, self.process)
            return sum(len(f) for f in pending.values())
        pipe = client.pipeline(transaction=False)
        for name, fields in pending.items():
            for field, n in fields.items():
                if isinstance(n, float):
                    pipe.hincrbyfloat(name, field, n)
                else:
                    pipe.hincrby(name, field, int(n))
        if gauges:
            pipe.hset(PROCESS + self.process, mapping=gauges)
            pipe.expire(PROCESS + self.process, PROCESS_TTL)
        try:
            pipe.execute()
        except Exception as err:  # noqa: BLE001 - figures are best effort, calls are not
            logger.warning("metrics: %d increments dropped: %s", sum(len(f) for f in pending.values()), err)
            return 0
        return sum(len(f) for f in pending.values())

    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._pid is not None:  # forked: the parent's pending figures are the parent's to write
                self._calls, self._latency, self._counts = {}, {}, {}
            self._pid = os.getpid()
            self.process = f"{socket.gethostname()}:{os.getpid()}"
            threading.Thread(target=self._run, name="metrics-flusher", daemon=True).start()

    def _run(self) -> None:
        me = os.getpid()
        while self._pid == me:
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the flusher must outlive one bad flush
                logger.exception("metrics flush failed")


recorder = Recorder()

_STARTED = ".started"  # a stream's start event: its call is counted once, by its completion event


def record_call(event_type: str, *, status: int, error_code: str, latency_ms: float, route=None,
                deid: dict | None = None, extra: dict | None = None) -> None:  # fmt: skip
    """The data plane's hook, from its audit step: one finished call (the event type names its kind,
    e.g. inference.infer, inference.chat). `route`: the deployment that served it, if any."""
    if event_type.endswith(_STARTED):
        return
    try:
        llm = (extra or {}).get("llm") or {}
        found = (deid or {}).get("found")
        recorder.record(
            model="" if route is None else str(getattr(route, "model", "")),
            version="" if route is None else str(getattr(route, "version", "")),
            kind=event_type.removeprefix("inference."),
            status=int(status),
            code=error_code or "",
            latency_s=max(0.0, latency_ms / 1000),
            tokens_in=int(llm.get("prompt_tokens") or 0),
            tokens_out=int(llm.get("completion_tokens") or 0),
            deid=found if isinstance(found, dict) else None,
        )
    except Exception:  # noqa: BLE001 - figures are best effort: a call never fails for them
        logger.exception("metrics: a call of %s not counted", event_type)


def read() -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Every process's cumulative figures: ({hash name: {field: value}}, {process: {gauge: value}}).
    Raises what Redis raises when it cannot be read (the scrape then says so)."""
    client = _redis()
    if client is None:
        return _memory.read()
    pipe = client.pipeline(transaction=False)
    for name in (CALLS, LATENCY, TOKENS, DEID):
        pipe.hgetall(name)
    raw = pipe.execute()
    hashes = {
        name: {k.decode(): float(v) for k, v in fields.items()}
        for name, fields in zip((CALLS, LATENCY, TOKENS, DEID), raw, strict=True)
    }
    gauges: dict[str, dict[str, float]] = {}
    keys = list(client.scan_iter(match=PROCESS + "*", count=100))
    if keys:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for key, fields in zip(keys, pipe.execute(), strict=True):
            gauges[key.decode().removeprefix(PROCESS)] = {k.decode(): float(v) for k, v in fields.items()}
    return hashes, gauges


def split(field: str) -> list[str]:
    return field.split(SEP)
