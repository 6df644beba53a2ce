"""Unauthenticated refusals, collapsed: one counted event per (event type, address, code, outcome,
window) instead of one per call (docs/audit.md, "Collapsed anonymous refusals").

The log is append-only and hash-chained, so a row cannot be bumped later. Instead each bucket is
counted (in Redis, or in process without it) and written at most twice: the first refusal of the
bucket is written at once (`details.count` = 1, so an alert or a search sees it immediately), and
when the window has closed the rest are written as one event with `details.count` = their number.
A closed bucket is flushed by the next refusal (any bucket), by the `flush_refused_buckets` beat
task, by every request in process mode, and at process exit in process mode. Counts always add
up: sum(details.count) over these events is the number of refused calls.

Bounded: at most SOVEREIGN_AUDIT_REFUSAL_MAX_BUCKETS distinct buckets per window; past that, new
addresses share one overflow bucket per (type, code) with no address (`details.addresses` =
"overflow"), so even an attacker with a whole IPv6 prefix of addresses cannot grow the log.

Only refusals of callers that are not authenticated come here; an authenticated caller's every
call keeps its own event.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from apps.core.context import request_id_var, request_var

from .services import Source, record_event

logger = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")
_state: dict = {}


@dataclass(frozen=True)
class Bucket:
    window: int  # start of the window, in windows since the epoch
    event_type: str
    ip: str  # "" for the overflow bucket
    code: str
    outcome: str

    def key(self) -> str:
        return "|".join((str(self.window), self.event_type, self.ip or "-", self.code, self.outcome))

    @classmethod
    def from_key(cls, key: str) -> Bucket:
        window, event_type, ip, code, outcome = key.split("|")
        return cls(int(window), event_type, "" if ip == "-" else ip, code, outcome)

    def overflow(self) -> Bucket:
        return Bucket(self.window, self.event_type, "", self.code, self.outcome)


class MemoryCounter:
    """In-process counts (`make run` without Redis): a dict under a lock."""

    def __init__(self):
        self._counts: dict[Bucket, int] = {}
        self._distinct: dict[int, int] = {}
        self._lock = threading.Lock()
        self.oldest: int | None = None  # read without the lock by `tick` (a stale value only delays a flush)

    def count(self, bucket: Bucket, max_buckets: int) -> tuple[Bucket, int, bool]:
        with self._lock:
            if bucket not in self._counts:
                seen = self._distinct[bucket.window] = self._distinct.get(bucket.window, 0) + 1
                if seen > max_buckets:
                    bucket = bucket.overflow()
            n = self._counts[bucket] = self._counts.get(bucket, 0) + 1
            self.oldest = bucket.window if self.oldest is None else min(self.oldest, bucket.window)
            return bucket, n, self.oldest < bucket.window

    def add(self, bucket: Bucket, n: int) -> None:
        with self._lock:
            self._counts[bucket] = self._counts.get(bucket, 0) + n
            self.oldest = bucket.window if self.oldest is None else min(self.oldest, bucket.window)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._distinct.clear()
            self.oldest = None

    def take_closed(self, before: int, limit: int = 1000) -> list[tuple[Bucket, int]]:
        with self._lock:
            closed = [b for b in self._counts if b.window < before][:limit]
            taken = [(b, self._counts.pop(b)) for b in closed]
            for window in [w for w in self._distinct if w < before]:
                del self._distinct[window]
            self.oldest = min((b.window for b in self._counts), default=None)
            return taken


# KEYS: bucket, overflow bucket, pending set, distinct counter of the window.
# ARGV: window, max buckets, ttl seconds. Returns {count, overflowed, closed buckets pending}.
COUNT_LUA = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  local distinct = redis.call('INCR', KEYS[4])
  if distinct == 1 then redis.call('EXPIRE', KEYS[4], ARGV[3]) end
  if distinct > tonumber(ARGV[2]) then key = KEYS[2] end
end
local n = redis.call('INCR', key)
if n == 1 then
  redis.call('EXPIRE', key, ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[1], key)
end
local closed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1)
return {n, key == KEYS[2] and 1 or 0, #closed}
"""
# KEYS: pending set. ARGV: first open window, max buckets. Takes (reads and deletes) closed buckets.
TAKE_LUA = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, k in ipairs(keys) do
  local v = redis.call('GET', k)
  redis.call('DEL', k)
  redis.call('ZREM', KEYS[1], k)
  if v then table.insert(out, k); table.insert(out, v) end
end
return out
"""
PREFIX = "{sv}:rf:"  # one hash slot: the scripts touch keys they discover


class RedisCounter:
    """Counts shared by every process and host; keys expire after a week as a safety net."""

    TTL = 7 * 86400

    def __init__(self, client):
        self.client = client
        self._count = client.register_script(COUNT_LUA)
        self._take = client.register_script(TAKE_LUA)
        self.oldest = None  # the beat task flushes; `tick` has nothing to do

    def count(self, bucket: Bucket, max_buckets: int) -> tuple[Bucket, int, bool]:
        keys = [PREFIX + bucket.key(), PREFIX + bucket.overflow().key(), PREFIX + "pending"]
        keys.append(f"{PREFIX}distinct:{bucket.window}")
        n, overflowed, closed = self._count(keys=keys, args=[bucket.window, max_buckets, self.TTL])
        return (bucket.overflow() if overflowed else bucket), int(n), bool(closed)

    def add(self, bucket: Bucket, n: int) -> None:
        key = PREFIX + bucket.key()
        with self.client.pipeline() as pipe:
            pipe.incrby(key, n).expire(key, self.TTL).zadd(PREFIX + "pending", {key: bucket.window}).execute()

    def reset(self) -> None:
        for key in self.client.scan_iter(match=PREFIX + "*", count=1000):
            self.client.delete(key)

    def take_closed(self, before: int, limit: int = 1000) -> list[tuple[Bucket, int]]:
        out = self._take(keys=[PREFIX + "pending"], args=[before, limit])
        pairs = zip(out[::2], out[1::2], strict=True)
        return [(Bucket.from_key(k.decode()[len(PREFIX) :]), int(v)) for k, v in pairs]


class AsyncRedisCounter:
    """RedisCounter for the async data plane (`client` is a `redis.asyncio.Redis`): same keys and
    scripts, so both planes count into the same buckets."""

    TTL = RedisCounter.TTL

    def __init__(self, client):
        self.client = client
        self._count = client.register_script(COUNT_LUA)
        self._take = client.register_script(TAKE_LUA)

    async def count(self, bucket: Bucket, max_buckets: int) -> tuple[Bucket, int, bool]:
        keys = [PREFIX + bucket.key(), PREFIX + bucket.overflow().key(), PREFIX + "pending"]
        keys.append(f"{PREFIX}distinct:{bucket.window}")
        n, overflowed, closed = await self._count(keys=keys, args=[bucket.window, max_buckets, self.TTL])
        return (bucket.overflow() if overflowed else bucket), int(n), bool(closed)

    async def add(self, bucket: Bucket, n: int) -> None:
        key = PREFIX + bucket.key()
        async with self.client.pipeline() as pipe:
            await pipe.incrby(key, n).expire(key, self.TTL).zadd(PREFIX + "pending", {key: bucket.window}).execute()

    async def take_closed(self, before: int, limit: int = 1000) -> list[tuple[Bucket, int]]:
        out = await self._take(keys=[PREFIX + "pending"], args=[before, limit])
        pairs = zip(out[::2], out[1::2], strict=True)
        return [(Bucket.from_key(k.decode()[len(PREFIX) :]), int(v)) for k, v in pairs]


def counter() -> MemoryCounter | RedisCounter:
    from apps.core.throttling import redis_client

    client = redis_client()
    if _state.get("client", False) is not client:
        _state.update(client=client, counter=RedisCounter(client) if client is not None else MemoryCounter())
        if client is None and not _state.get("atexit"):
            atexit.register(_flush_at_exit)
            _state["atexit"] = True
    return _state["counter"]


def window_seconds() -> int:
    return settings.AUDIT_REFUSAL_WINDOW_SECONDS


def _window_start(window: int) -> str:
    return datetime.fromtimestamp(window * window_seconds(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    """Record an unauthenticated caller's refused call: written at once if it is the first of its
    bucket, else only counted (written when the bucket closes). Raises AuditUnavailable like
    record_event when the first event cannot be written; the call is then not counted either."""
    request = request_var.get()
    if request is not None:  # counted, so AuditRefusalsMiddleware must not record it again
        request.audit_events = getattr(request, "audit_events", 0) + 1
    code = _SAFE.sub("_", error_code)[:64]
    now = int(time.time() // window_seconds())
    store, bucket = counter(), Bucket(now, event_type, source.ip or "", code, outcome)
    try:
        bucket, n, closed = store.count(bucket, settings.AUDIT_REFUSAL_MAX_BUCKETS)
    except Exception:  # noqa: BLE001 - the counter's store (Redis) is down: write every refusal, uncollapsed
        logger.warning("refusal counter unavailable; writing the refusal as its own event", exc_info=True)
        store, n, closed = None, 1, False
    if n == 1:
        extra, source = _first_of_bucket(bucket, source)
        try:
            with transaction.atomic():
                record_event(
                    event_type,
                    actor=None,
                    source=source,
                    target_type=target_type,
                    target_id=target_id,
                    target_display=target_display,
                    outcome=outcome,
                    error_code=code,
                    details={**(details or {}), **extra},
                )
        except Exception:
            if store is not None:
                with contextlib.suppress(Exception):  # keep the audit error, not a second one
                    store.add(bucket, -1)
            raise
    if closed:
        _flush_quietly(now)


def _first_of_bucket(bucket: Bucket, source: Source) -> tuple[dict, Source]:
    """The details added to the first refusal of a bucket, and the source it is recorded with."""
    extra = {"count": 1, "window_start": _window_start(bucket.window), "window_seconds": window_seconds()}
    if not bucket.ip:
        extra["addresses"] = "overflow"
        source = Source(user_agent=source.user_agent)
    return extra, source


def _remainder_details(bucket: Bucket, n: int) -> dict:
    """The details of the event for a closed bucket's refusals after its first."""
    details = {"count": n - 1, "window_start": _window_start(bucket.window)}
    details.update(window_seconds=window_seconds(), collapsed=True)
    if not bucket.ip:
        details["addresses"] = "overflow"
    return details


def _flush_quietly(before: int) -> None:
    try:
        flush_closed(before)
    except Exception:  # the refusal itself is recorded; the closed buckets stay counted for the next flush
        logger.exception("could not flush collapsed refusal events; they stay counted")


def flush_closed(before: int | None = None) -> int:
    """Write one event for the remainder of each bucket whose window ended before `before` (default:
    the current window). Returns the number of events written. If the write fails the counts are
    put back and the error propagates."""
    before = int(time.time() // window_seconds()) if before is None else before
    store, written = counter(), 0
    while True:
        taken = store.take_closed(before)
        if not taken:
            return written
        try:
            written += _write_remainders(taken)
        except Exception:
            for bucket, n in taken:
                store.add(bucket, n)
            raise


def _write_remainders(taken: list[tuple[Bucket, int]]) -> int:
    # Not the flushing request's event: no request id, and its own refusal count untouched.
    rid, req = request_id_var.set(""), request_var.set(None)
    written = 0
    try:
        with transaction.atomic():
            for bucket, n in taken:
                if n <= 1:  # only the first was seen: already written
                    continue
                details = _remainder_details(bucket, n)
                record_event(
                    bucket.event_type,
                    actor=None,
                    source=Source(ip=bucket.ip or None),
                    outcome=bucket.outcome,
                    error_code=bucket.code,
                    details=details,
                )
                written += 1
    finally:
        request_var.reset(req)
        request_id_var.reset(rid)
    return written


def flush_all() -> int:
    """Close every bucket, the current window's included (process exit, tests)."""
    return flush_closed(int(time.time() // window_seconds()) + 1)


def _flush_at_exit() -> None:
    try:
        flush_all()
    except Exception:  # noqa: BLE001 - at exit the database may be gone; say so, do not crash the exit
        logger.exception("could not flush collapsed refusal events at exit")


def tick() -> None:
    """In process mode, flush closed buckets as soon as any request sees them (a float compare on
    the hot path). In Redis mode the beat task does it."""
    store = _state.get("counter")
    if store is not None and store.oldest is not None and store.oldest < int(time.time() // window_seconds()):
        _flush_quietly(int(time.time() // window_seconds()))


# --- The async data plane: the same collapse, its events written through the group committer ---


class AsyncMemoryCounter:
    """This process's MemoryCounter behind the async counters' interface (no Redis)."""

    def __init__(self, store: MemoryCounter):
        self.store = store

    @property
    def oldest(self) -> int | None:
        return self.store.oldest

    async def count(self, bucket: Bucket, max_buckets: int) -> tuple[Bucket, int, bool]:
        return self.store.count(bucket, max_buckets)

    async def add(self, bucket: Bucket, n: int) -> None:
        self.store.add(bucket, n)

    async def take_closed(self, before: int, limit: int = 1000) -> list[tuple[Bucket, int]]:
        return self.store.take_closed(before, limit)


def async_counter(client=None) -> AsyncRedisCounter | AsyncMemoryCounter:
    """Redis (`client`, else a redis.asyncio client for REDIS_URL, with the portal's short timeouts),
    or without Redis the process's in-memory counter (whose remainders are also written at exit)."""
    if client is None and settings.REDIS_URL:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    if client is not None:
        return AsyncRedisCounter(client)
    store = counter()
    if not isinstance(store, MemoryCounter):  # REDIS_URL was unset after the portal's counter was made
        store = MemoryCounter()
    return AsyncMemoryCounter(store)


class AsyncRefusals:
    """record_refusal for the async data plane: same buckets and counts, same events, but each
    event is a PendingEvent handed to `submit` (the group committer's, which returns once it is
    durable and raises AuditUnavailable if not). Bucket remainders are written by the next
    refusal that sees a closed window (in the background, not delaying that call), by `flush()`,
    by the beat task (Redis: it reads the same keys) and, in process mode, at process exit."""

    def __init__(self, submit, counter=None):
        self.submit = submit
        self.counter = counter if counter is not None else async_counter()
        self._flushing: asyncio.Task | None = None

    async def record(
        self,
        event_type: str,
        *,
        source: Source,
        outcome: str,
        error_code: str,
        target_type: str = "",
        target_id: str = "",
        target_display: str = "",
        details: dict | None = None,
        request_id: str = "",
    ) -> None:
        """Count an unauthenticated caller's refused call; if it is the first of its bucket, write
        it (through `submit`, awaited). Raises AuditUnavailable when that event cannot be written;
        the call is then not counted either."""
        from .services import PendingEvent

        code = _SAFE.sub("_", error_code)[:64]
        now = int(time.time() // window_seconds())
        store, bucket = self.counter, Bucket(now, event_type, source.ip or "", code, outcome)
        try:
            bucket, n, closed = await store.count(bucket, settings.AUDIT_REFUSAL_MAX_BUCKETS)
        except Exception:  # noqa: BLE001 - the counter's store (Redis) is down: write every refusal, uncollapsed
            logger.warning("refusal counter unavailable; writing the refusal as its own event", exc_info=True)
            store, n, closed = None, 1, False
        if n == 1:
            extra, source = _first_of_bucket(bucket, source)
            try:
                event = PendingEvent(
                    event_type,
                    source=source,
                    request_id=request_id,
                    target_type=target_type,
                    target_id=target_id,
                    target_display=target_display,
                    outcome=outcome,
                    error_code=code,
                    details={**(details or {}), **extra},
                )
                await self.submit(event)
            except BaseException:
                if store is not None:
                    with contextlib.suppress(Exception):  # keep the audit error, not a second one
                        await store.add(bucket, -1)
                raise
        if closed:
            self._flush_in_background(now)

    def tick(self) -> None:
        """In process mode, start a flush as soon as a bucket's window has closed (a compare; call it
        per request or from a timer). With Redis the beat task flushes."""
        oldest = getattr(self.counter, "oldest", None)
        now = int(time.time() // window_seconds())
        if oldest is not None and oldest < now:
            self._flush_in_background(now)

    def _flush_in_background(self, before: int) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_quietly(before))

    async def _flush_quietly(self, before: int) -> None:
        try:
            await self.flush(before)
        except Exception:  # noqa: BLE001 - the closed buckets stay counted for the next flush
            logger.exception("could not flush collapsed refusal events; they stay counted")

    async def wait_flushed(self) -> None:
        """Wait for a background flush, if one is running (tests, shutdown)."""
        if self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def flush(self, before: int | None = None) -> int:
        """Write one event for the remainder of each bucket whose window ended before `before`
        (default: the current window); returns the number written. The count of a remainder that
        could not be written is put back and the first error raised."""
        from .services import PendingEvent

        before = int(time.time() // window_seconds()) if before is None else before
        written = 0
        while True:
            taken = [(b, n) for b, n in await self.counter.take_closed(before) if n > 1]  # n == 1: already written
            if not taken:
                return written
            events = [
                PendingEvent(
                    b.event_type,
                    source=Source(ip=b.ip or None),
                    request_id="",  # not the event of the call that happened to flush it
                    outcome=b.outcome,
                    error_code=b.code,
                    details=_remainder_details(b, n),
                )
                for b, n in taken
            ]
            results = await asyncio.gather(*(self.submit(e) for e in events), return_exceptions=True)
            failed = [(b, n, r) for (b, n), r in zip(taken, results, strict=True) if isinstance(r, BaseException)]
            for bucket, n, _ in failed:
                await self.counter.add(bucket, n)
            written += len(taken) - len(failed)
            if failed:
                raise failed[0][2]

    async def flush_all(self) -> int:
        """Close every bucket, the current window's included (shutdown, tests)."""
        return await self.flush(int(time.time() // window_seconds()) + 1)
