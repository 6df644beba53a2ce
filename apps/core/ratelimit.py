"""Rate limits: a generic cell rate algorithm (GCRA, a token bucket kept as one timestamp per key)
in Redis, or in process where there is no Redis. Framework-free: no Django here, so the async data
plane reuses it as is (`AsyncRedisLimiter`, `AsyncMemoryLimiter` are the async twins of
`RedisLimiter`, `MemoryLimiter`, with the same arguments and answers).

A `Rate` of "N/period" admits a burst of N and then one call every period/N. One `hit` takes any
number of `Check`s and decides them all at once, in one Redis round trip: either every check
conforms and each is charged its `cost`, or none is charged and the answer says how long to wait.
A check with cost 0 only looks ("is this address already over its failure budget?").

Time comes from the caller's clock (microseconds), not Redis's, so every backend answers alike;
the portal's hosts keep their clocks in sync anyway (the audit log relies on it too). A Redis
failure falls back to the in-process limiter for that call: limits stay on, per process, and a
warning is logged.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
US = 1_000_000


@dataclass(frozen=True)
class Rate:
    """At most `limit` calls in any `period` seconds (a burst of `limit`, then an even flow)."""

    limit: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """'100/s', '600/m', '50/h', '20/5m'. Raises ValueError naming the text."""
        match = _RATE.match(str(text).lower())
        if not match or match.group(3) not in _UNITS or int(match.group(1)) < 1:
            raise ValueError(f"{text!r} is not a rate: write N/s, N/m, N/h or N/d (e.g. 600/m)")
        return cls(int(match.group(1)), int(match.group(2) or 1) * _UNITS[match.group(3)])

    @property
    def interval_us(self) -> int:
        return max(1, round(self.period * US / self.limit))

    @property
    def capacity_us(self) -> int:
        return round(self.period * US)


@dataclass(frozen=True)
class Check:
    key: str
    rate: Rate
    cost: int = 1  # 0: look without charging


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until the refused call would conform

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


ALLOWED = Decision(True)


def _now_us() -> int:
    return int(time.time() * US)


class MemoryLimiter:
    """The in-process backend: a dict of key -> theoretical arrival time, under a lock. Keys whose
    time has passed are dropped when the dict grows past `max_keys`, so memory stays bounded."""

    def __init__(self, prefix: str = "", max_keys: int = 100_000):
        self.prefix = prefix
        self.max_keys = max_keys
        self._tat: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit(self, *checks: Check, now_us: int | None = None) -> Decision:
        now = _now_us() if now_us is None else now_us
        with self._lock:
            wait, updates = 0, []
            for check in checks:
                key = self.prefix + check.key
                tat = max(self._tat.get(key, now), now)
                step = check.rate.interval_us * max(check.cost, 1)
                wait = max(wait, tat + step - now - check.rate.capacity_us)
                if check.cost > 0:
                    updates.append((key, tat + check.rate.interval_us * check.cost))
            if wait > 0:
                return Decision(False, wait / US)
            self._tat.update(updates)
            if len(self._tat) > self.max_keys:
                self._prune(now)
        return ALLOWED

    def _prune(self, now: int) -> None:
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        if len(self._tat) > self.max_keys:  # all live: forget the ones nearest to conforming again
            keep = sorted(self._tat.items(), key=lambda kv: kv[1])[len(self._tat) // 2 :]
            self._tat = dict(keep)

    def reset(self) -> None:
        with self._lock:
            self._tat.clear()


class AsyncMemoryLimiter(MemoryLimiter):
    """The same in-process limiter for the async data plane (nothing in it blocks)."""

    async def hit(self, *checks: Check, now_us: int | None = None) -> Decision:  # type: ignore[override]
        return MemoryLimiter.hit(self, *checks, now_us=now_us)


# KEYS: one per check. ARGV: now (µs), then per check: interval (µs), capacity (µs), cost.
# Returns 0 (allowed, every key charged) or the wait in µs (nothing charged).
GCRA_LUA = """
local now = tonumber(ARGV[1])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local b = 1 + (i - 1) * 3
  local interval, capacity, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local over = tat + interval * math.max(cost, 1) - now - capacity
  if over > wait then wait = over end
  tats[i] = tat + interval * cost
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  if tonumber(ARGV[1 + (i - 1) * 3 + 3]) > 0 then
    redis.call('SET', key, string.format('%d', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1)
  end
end
return 0
"""


def _script_args(prefix: str, checks: tuple[Check, ...], now: int) -> tuple[list[str], list[int]]:
    keys = [prefix + c.key for c in checks]
    args = [now]
    for c in checks:
        args += [c.rate.interval_us, c.rate.capacity_us, c.cost]
    return keys, args


_last_warning = [0.0]


def _warn_fallback(exc: Exception) -> None:
    """Once a minute at most: a Redis outage must not turn into a log flood."""
    now = time.monotonic()
    if now - _last_warning[0] >= 60:
        _last_warning[0] = now
        logger.warning("rate limiter: Redis unavailable (%s); limiting in process for now", exc.__class__.__name__)


class RedisLimiter:
    """The shared backend: one EVALSHA per `hit` (the script is cached by Redis), keys expiring
    when their bucket is full again. Falls back to a MemoryLimiter when Redis fails."""

    def __init__(self, client, prefix: str = "sv:rl:", fallback: MemoryLimiter | None = None):
        self.client = client
        self.prefix = prefix
        self.fallback = fallback or MemoryLimiter(prefix)
        self._script = client.register_script(GCRA_LUA)

    def hit(self, *checks: Check, now_us: int | None = None) -> Decision:
        now = _now_us() if now_us is None else now_us
        keys, args = _script_args(self.prefix, checks, now)
        try:
            wait = int(self._script(keys=keys, args=args))
        except Exception as exc:  # noqa: BLE001 - any Redis failure: keep limiting, in process
            _warn_fallback(exc)
            return self.fallback.hit(*checks, now_us=now)
        return ALLOWED if wait <= 0 else Decision(False, wait / US)

    def reset(self) -> None:
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            self.client.delete(key)
        self.fallback.reset()


class AsyncRedisLimiter:
    """RedisLimiter for the async data plane: `client` is a `redis.asyncio.Redis`."""

    def __init__(self, client, prefix: str = "sv:rl:", fallback: MemoryLimiter | None = None):
        self.client = client
        self.prefix = prefix
        self.fallback = fallback or MemoryLimiter(prefix)
        self._script = client.register_script(GCRA_LUA)

    async def hit(self, *checks: Check, now_us: int | None = None) -> Decision:
        now = _now_us() if now_us is None else now_us
        keys, args = _script_args(self.prefix, checks, now)
        try:
            wait = int(await self._script(keys=keys, args=args))
        except Exception as exc:  # noqa: BLE001
            _warn_fallback(exc)
            return self.fallback.hit(*checks, now_us=now)
        return ALLOWED if wait <= 0 else Decision(False, wait / US)

    async def reset(self) -> None:
        async for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            await self.client.delete(key)
        self.fallback.reset()
