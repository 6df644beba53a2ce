"""Token quotas and per-minute limits of chat calls, enforced atomically.

A call first reserves what it may use — its prompt tokens (an estimate is fine) plus its
`max_tokens` — in every window that applies to it, all or none, in one Redis Lua script:

    limits = book.applicable(user_id=…, token_id=…, model_id=…)   # from load_quotas(), in the snapshot
    reservation = await gate.reserve(limits, prompt_tokens + max_tokens)   # QuotaExceeded → 429
    … the call runs …
    await gate.settle(reservation, used_tokens)                         # gives back the unused part

so concurrent calls cannot together overrun a quota: each holds its worst case until it settles.

Windows (all UTC; fixed windows keyed by their start, so each refuses at exactly its limit and
resets at its boundary; a key expires a minute after its window ends):
- `tokens_per_day`: the UTC calendar day; `tokens_per_month`: the UTC calendar month →
  429 `quota_exceeded`, `retry_after` = seconds to the window's end (midnight UTC, the 1st).
- `tokens_per_minute`, `requests_per_minute`: the UTC clock minute → 429 `rate_limited`.
  A request counts when it is admitted and is not given back; tokens are given back by `settle`.
Fixed minute windows allow up to twice the per-minute limit across one minute boundary; the day
and month limits are exact.

Counters are keyed by the quota's id: changing a quota's limits keeps what was already used in
the current windows; deleting and recreating one starts afresh.

Without Redis (settings.REDIS_URL empty, `make run` on SQLite) `MemoryQuotaStore` keeps the same
counters in this process: the same semantics for one process, none across processes. A Redis
failure is not papered over with the in-process store (that would let every process spend the
whole quota): the call is refused with 503 `quota_unavailable` — only calls that have limits;
calls without any applicable limit never touch Redis.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apps.core.errors import ServiceError, _

logger = logging.getLogger(__name__)

PREFIX = "sv:q:"
_GRACE = 60  # seconds a window's key outlives the window (a late settle still finds it)


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """One Quota row as plain data (the snapshot holds these)."""

    id: int
    scope: str  # user | group | token
    subject_id: int
    model_id: int | None  # None: all models together
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class QuotaBook:
    """Every quota, indexed for the call path. `groups_of` holds, for each user, the groups they
    belong to that have a quota (membership read with the quotas, so a rebuild of the snapshot
    after a membership change applies it)."""

    by_subject: dict[tuple[str, int], tuple[QuotaLimit, ...]] = field(default_factory=dict)
    groups_of: dict[int, frozenset[int]] = field(default_factory=dict)

    def applicable(self, *, user_id: int, token_id: int | None, model_id: int) -> tuple[QuotaLimit, ...]:
        """The quotas one call counts against: the user's, each of the user's groups', the
        token's — each on this model or on all models."""
        subjects = [("user", user_id), *(("group", g) for g in sorted(self.groups_of.get(user_id, ())))]
        if token_id is not None:
            subjects.append(("token", token_id))
        return tuple(
            q for s in subjects for q in self.by_subject.get(s, ()) if q.model_id is None or q.model_id == model_id
        )


def load_quotas(connection) -> QuotaBook:
    """Every Quota row and the memberships of the groups that have one: two statements on
    `connection` (a Django connection; call it inside the snapshot's read transaction)."""
    from django.contrib.auth import get_user_model

    from .models import Quota

    table = connection.ops.quote_name(Quota._meta.db_table)
    user_groups = connection.ops.quote_name(get_user_model().groups.through._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, scope, user_id, group_id, token_id, model_id, tokens_per_day, tokens_per_month,"  # noqa: S608
            f" requests_per_minute, tokens_per_minute FROM {table} ORDER BY id"
        )
        rows = cursor.fetchall()
        cursor.execute(
            f"SELECT ug.user_id, ug.group_id FROM {user_groups} ug"  # noqa: S608
            f" WHERE ug.group_id IN (SELECT q.group_id FROM {table} q WHERE q.group_id IS NOT NULL)"
        )
        members = cursor.fetchall()
    by_subject: dict[tuple[str, int], list[QuotaLimit]] = {}
    for pk, scope, user_id, group_id, token_id, model_id, tpd, tpmo, rpm, tpm in rows:
        subject = {"user": user_id, "group": group_id, "token": token_id}[scope]
        by_subject.setdefault((scope, subject), []).append(
            QuotaLimit(pk, scope, subject, model_id, tpd, tpmo, rpm, tpm)
        )
    groups: dict[int, set[int]] = {}
    for user_id, group_id in members:
        groups.setdefault(user_id, set()).add(group_id)
    return QuotaBook(
        by_subject={k: tuple(v) for k, v in by_subject.items()},
        groups_of={k: frozenset(v) for k, v in groups.items()},
    )


class QuotaExceeded(ServiceError):
    """429 `quota_exceeded` (a day or month token quota) or `rate_limited` (a per-minute limit).
    `retry_after` is the Retry-After header's value (whole seconds, at least 1) to the end of the
    window that refused; `window` names it (`day`, `month`, `minute_tokens`, `minute_requests`)."""

    def __init__(self, code: str, detail: str, retry_after: float, window: str, quota_id: int):
        self.retry_after_seconds = max(1, math.ceil(retry_after))
        self.retry_after = str(self.retry_after_seconds)
        self.window = window
        self.quota_id = quota_id
        super().__init__(
            code, _("%(detail)s; retry after %(seconds)s s") % {"detail": detail, "seconds": self.retry_after}, 429
        )

    def as_dict(self) -> dict:
        return {**super().as_dict(), "retry_after": self.retry_after_seconds}


def quota_unavailable() -> ServiceError:
    return ServiceError(
        "quota_unavailable",
        _(
            "the quota store cannot be reached, so calls with a quota are refused; quote the X-Request-ID header "
            "to the operator"
        ),
        503,
    )


@dataclass(frozen=True, slots=True)
class _Window:
    key: str
    limit: int
    cost: int
    ttl_ms: int
    ends_in: float  # seconds
    kind: str
    quota_id: int
    tokens: bool  # counts tokens (settled) or requests (kept)


@dataclass
class Reservation:
    """What `reserve` took: the token windows' keys and the amount, for `settle`."""

    tokens: int
    keys: tuple[str, ...]  # token windows only (requests are not given back)
    settled: bool = False


def _windows(limits: Sequence[QuotaLimit], tokens: int, now: float, prefix: str = PREFIX) -> list[_Window]:
    at = datetime.fromtimestamp(now, UTC)
    day_start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = day_start + timedelta(days=1)
    month_start = day_start.replace(day=1)
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    minute = int(now // 60)
    minute_end = (minute + 1) * 60
    spans = {
        "day": (f"d:{day_start:%Y%m%d}", day_end.timestamp() - now),
        "month": (f"mo:{month_start:%Y%m}", month_end.timestamp() - now),
        "minute_tokens": (f"tm:{minute}", minute_end - now),
        "minute_requests": (f"rm:{minute}", minute_end - now),
    }
    out = []
    for q in limits:
        for kind, limit, is_tokens in (
            ("day", q.tokens_per_day, True),
            ("month", q.tokens_per_month, True),
            ("minute_tokens", q.tokens_per_minute, True),
            ("minute_requests", q.requests_per_minute, False),
        ):
            if limit is None:
                continue
            suffix, ends_in = spans[kind]
            out.append(
                _Window(
                    key=f"{prefix}{q.id}:{suffix}",
                    limit=int(limit),
                    cost=tokens if is_tokens else 1,
                    ttl_ms=max(1000, int((ends_in + _GRACE) * 1000)),
                    ends_in=ends_in,
                    kind=kind,
                    quota_id=q.id,
                    tokens=is_tokens,
                )
            )
    return out


_CODES = {"day": "quota_exceeded", "month": "quota_exceeded", "minute_tokens": "rate_limited"}


def _window_detail(kind: str, who: str) -> str:
    if kind == "day":
        return _("the daily token quota of %(who)s is used up (the day ends at midnight UTC)") % {"who": who}
    if kind == "month":
        return _("the monthly token quota of %(who)s is used up (the month ends on the 1st, UTC)") % {"who": who}
    if kind == "minute_tokens":
        return _("too many tokens this minute for %(who)s") % {"who": who}
    return _("too many requests this minute for %(who)s") % {"who": who}


def _refusal(window: _Window, limits: Sequence[QuotaLimit]) -> QuotaExceeded:
    quota = next(q for q in limits if q.id == window.quota_id)
    who = {"user": _("this user"), "group": _("a group of this user"), "token": _("this token")}[quota.scope]
    code, detail = _CODES.get(window.kind, "rate_limited"), _window_detail(window.kind, who)
    if window.cost > window.limit:
        detail = _("%(detail)s (this call alone needs %(cost)s, above the limit of %(limit)s: lower max_tokens)") % {
            "detail": detail,
            "cost": window.cost,
            "limit": window.limit,
        }
    return QuotaExceeded(code, detail, window.ends_in, window.kind, window.quota_id)  # i18n-ok: _window_detail


# KEYS: one per window. ARGV: per window i: limit, cost, ttl (ms) at 3i-2, 3i-1, 3i.
# Returns 0 when every window had room and each was charged its cost; else the 1-based index of
# the first window without room (nothing charged).
RESERVE_LUA = """
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 3
  local used = tonumber(redis.call('GET', key) or '0')
  if used + tonumber(ARGV[b + 2]) > tonumber(ARGV[b + 1]) then return i end
end
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 3
  redis.call('INCRBY', key, ARGV[b + 2])
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[b + 3]) end
end
return 0
"""

# KEYS: the token windows of a reservation. ARGV[1]: the change (negative: given back). A window
# whose key has expired is left alone (its period is over); none goes below zero.
SETTLE_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    if redis.call('INCRBY', key, ARGV[1]) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 0
"""


class QuotaGate:
    """Reserve and settle against a store: `RedisQuotaStore` (shared) or `MemoryQuotaStore`."""

    def __init__(self, store, prefix: str = PREFIX):
        self.store = store
        self.prefix = prefix

    @classmethod
    def from_settings(cls) -> QuotaGate:
        """Redis at settings.REDIS_URL (redis.asyncio), or in process when it is empty."""
        from django.conf import settings

        url = getattr(settings, "REDIS_URL", "")
        if not url:
            return cls(MemoryQuotaStore())
        import redis.asyncio as aioredis

        return cls(RedisQuotaStore(aioredis.Redis.from_url(url)))

    async def reserve(self, limits: Sequence[QuotaLimit], tokens: int, *, now: float | None = None) -> Reservation:
        """Reserve `tokens` (prompt tokens + max_tokens) and one request in every window of
        `limits`, all or none. Raises QuotaExceeded naming the first window without room, or 503
        `quota_unavailable` when Redis fails."""
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        windows = _windows(limits, tokens, time.time() if now is None else now, self.prefix)
        if not windows:
            return Reservation(tokens, ())
        refused = await self.store.reserve(windows)
        if refused:
            raise _refusal(windows[refused - 1], limits)
        return Reservation(tokens, tuple(w.key for w in windows if w.tokens))

    async def settle(self, reservation: Reservation, used_tokens: int) -> int:
        """The call used `used_tokens`: give back the rest of what it reserved (or charge the
        excess, should it have used more), once. Returns what was given back (>= 0)."""
        if reservation.settled:
            return 0
        reservation.settled = True
        used = max(0, int(used_tokens))
        delta = used - reservation.tokens
        if delta and reservation.keys:
            await self.store.adjust(reservation.keys, delta)
        return max(0, -delta)

    async def close(self) -> None:
        await self.store.close()


class RedisQuotaStore:
    def __init__(self, client):
        self.client = client
        self._reserve = client.register_script(RESERVE_LUA)
        self._settle = client.register_script(SETTLE_LUA)

    async def reserve(self, windows: Sequence[_Window]) -> int:
        args: list[int] = []
        for w in windows:
            args += [w.limit, w.cost, w.ttl_ms]
        try:
            return int(await self._reserve(keys=[w.key for w in windows], args=args))
        except Exception as exc:  # noqa: BLE001 - any Redis failure: refuse, never overrun
            logger.error("quota store (Redis) unavailable: %s", exc.__class__.__name__)
            raise quota_unavailable() from exc

    async def adjust(self, keys: Sequence[str], delta: int) -> None:
        try:
            await self._settle(keys=list(keys), args=[delta])
        except Exception as exc:  # noqa: BLE001 - the reservation stays charged: errs on the safe side
            logger.error("quota store (Redis): settling failed (%s); the reservation stays", exc.__class__.__name__)

    async def close(self) -> None:
        await self.client.aclose()


class MemoryQuotaStore:
    """The same counters in this process (no Redis): a dict of key -> (value, expiry), under a lock
    (the event loop runs one reserve at a time anyway; the lock covers threads)."""

    def __init__(self, clock=time.monotonic):
        self._values: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _get(self, key: str, now: float) -> int | None:
        found = self._values.get(key)
        if found is None or found[1] <= now:
            self._values.pop(key, None)
            return None
        return found[0]

    async def reserve(self, windows: Sequence[_Window]) -> int:
        now = self._clock()
        with self._lock:
            for i, w in enumerate(windows, 1):
                if (self._get(w.key, now) or 0) + w.cost > w.limit:
                    return i
            for w in windows:
                value = self._get(w.key, now)
                expiry = self._values[w.key][1] if value is not None else now + w.ttl_ms / 1000
                self._values[w.key] = ((value or 0) + w.cost, expiry)
            if len(self._values) > 100_000:
                self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return 0

    async def adjust(self, keys: Sequence[str], delta: int) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                value = self._get(key, now)
                if value is not None:
                    self._values[key] = (max(0, value + delta), self._values[key][1])

    async def close(self) -> None:
        self._values.clear()
