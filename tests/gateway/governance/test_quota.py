"""Token quotas and per-minute limits (issue 13): a real Redis (REDIS_URL) and the in-process
store give the same answers; concurrent reservations cannot overrun a quota; settle gives back the
unused part; each window refuses at exactly its limit with a Retry-After to its end (UTC)."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
import redis.asyncio
from django.contrib.auth.models import Group
from django.db import connection

from apps.gateway.quota import MemoryQuotaStore, QuotaExceeded, QuotaGate, QuotaLimit, RedisQuotaStore, load_quotas
from apps.gateway.services import set_quota
from tests.conftest import make_user
from tests.factories import ModelVersionFactory, closed_port, token_for

NOON = datetime(2031, 3, 14, 12, 0, 0, tzinfo=UTC).timestamp()


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("these tests need a real Redis: set REDIS_URL")
    return url


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["redis", "memory"])
def make_gate(request):
    """A factory of gates over one store; each test has its own key prefix (nothing shared)."""
    prefix = f"sv:test-q:{uuid.uuid4().hex[:8]}:"
    kind = request.param

    def build():
        if kind == "redis":
            return QuotaGate(RedisQuotaStore(redis.asyncio.Redis.from_url(redis_url())), prefix)
        return QuotaGate(shared, prefix)

    shared = MemoryQuotaStore()
    build.kind = kind
    build.prefix = prefix
    yield build
    if kind == "redis":
        client = redis.Redis.from_url(redis_url())
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def counter(make_gate, key_suffix: str):
    """The stored value of one window (Redis only)."""
    client = redis.Redis.from_url(redis_url())
    try:
        value = client.get(make_gate.prefix + key_suffix)
        return None if value is None else int(value)
    finally:
        client.close()


def q(qid=1, **limits) -> QuotaLimit:
    return QuotaLimit(qid, "user", 7, None, **limits)


async def _with(make_gate, fn):
    gate = make_gate()
    try:
        return await fn(gate)
    finally:
        await gate.close()


def test_concurrent_reservations_cannot_overrun_a_quota(make_gate):
    limits = [q(tokens_per_day=1000)]

    async def many(gate):
        return await asyncio.gather(*(gate.reserve(limits, 100, now=NOON) for _ in range(50)), return_exceptions=True)

    results = run(_with(make_gate, many))

    granted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(granted), len(refused)) == (10, 40)
    assert {r.code for r in refused} == {"quota_exceeded"}
    if make_gate.kind == "redis":
        assert counter(make_gate, "1:d:20310314") == 1000


def test_settle_gives_back_the_unused_part_and_the_next_call_may_use_it(make_gate):
    limits = [q(tokens_per_day=1000)]

    async def scenario(gate):
        first = await gate.reserve(limits, 500, now=NOON)
        given_back = await gate.settle(first, 120)
        again = await gate.settle(first, 0)  # settled once only
        second = await gate.reserve(limits, 880, now=NOON)
        with pytest.raises(QuotaExceeded):
            await gate.reserve(limits, 1, now=NOON)
        return given_back, again, second

    given_back, again, second = run(_with(make_gate, scenario))

    assert (given_back, again) == (380, 0)
    assert second.tokens == 880
    if make_gate.kind == "redis":
        assert counter(make_gate, "1:d:20310314") == 1000


def test_settle_never_goes_below_zero_and_charges_an_overrun(make_gate):
    limits = [q(tokens_per_day=1000)]

    async def scenario(gate):
        r = await gate.reserve(limits, 100, now=NOON)
        assert await gate.settle(r, 150) == 0  # used more than reserved: charged, nothing given back
        r2 = await gate.reserve(limits, 850, now=NOON)
        with pytest.raises(QuotaExceeded):
            await gate.reserve(limits, 1, now=NOON)
        return await gate.settle(r2, -5)  # nonsense counts as 0: all 850 given back

    assert run(_with(make_gate, scenario)) == 850
    if make_gate.kind == "redis":
        assert counter(make_gate, "1:d:20310314") == 150


@pytest.mark.parametrize(
    ("limits", "cost", "calls_allowed", "code", "window"),
    [
        ({"tokens_per_day": 300}, 100, 3, "quota_exceeded", "day"),
        ({"tokens_per_month": 250}, 50, 5, "quota_exceeded", "month"),
        ({"tokens_per_minute": 90}, 30, 3, "rate_limited", "minute_tokens"),
        ({"requests_per_minute": 4}, 1000, 4, "rate_limited", "minute_requests"),
    ],
)
def test_each_window_refuses_at_exactly_its_limit(make_gate, limits, cost, calls_allowed, code, window):
    now = NOON + 15.25  # 12:00:15.25 UTC on 14 March 2031
    quota = [q(**limits)]

    async def scenario(gate):
        for _ in range(calls_allowed):
            await gate.reserve(quota, cost, now=now)
        with pytest.raises(QuotaExceeded) as refused:
            await gate.reserve(quota, cost, now=now)
        return refused.value

    err = run(_with(make_gate, scenario))

    assert (err.code, err.status_code, err.window) == (code, 429, window)
    expected = {
        "day": datetime(2031, 3, 15, tzinfo=UTC).timestamp() - now,  # midnight UTC
        "month": datetime(2031, 4, 1, tzinfo=UTC).timestamp() - now,  # the 1st, UTC
        "minute_tokens": 60 - 15.25,
        "minute_requests": 60 - 15.25,
    }[window]
    assert err.retry_after_seconds == int(expected) + 1  # rounded up, whole seconds
    assert err.as_dict()["retry_after"] == err.retry_after_seconds
    assert err.retry_after == str(err.retry_after_seconds)  # the Retry-After header


def test_a_new_window_starts_afresh_at_its_utc_boundary(make_gate):
    quota = [q(tokens_per_day=100, tokens_per_minute=100)]
    before_midnight = datetime(2031, 3, 14, 23, 59, 59, 500000, tzinfo=UTC).timestamp()

    async def scenario(gate):
        await gate.reserve(quota, 100, now=before_midnight)
        with pytest.raises(QuotaExceeded) as refused:
            await gate.reserve(quota, 1, now=before_midnight)
        assert refused.value.retry_after_seconds == 1
        return await gate.reserve(quota, 100, now=before_midnight + 1)  # 00:00:00.5 on the 15th

    assert run(_with(make_gate, scenario)).tokens == 100


def test_all_or_nothing_across_quotas(make_gate):
    roomy, full = q(1, tokens_per_day=1000), q(2, tokens_per_day=100)

    async def scenario(gate):
        await gate.reserve([full], 100, now=NOON)
        with pytest.raises(QuotaExceeded) as refused:
            await gate.reserve([roomy, full], 10, now=NOON)
        assert refused.value.quota_id == 2
        return await gate.reserve([roomy], 1000, now=NOON)  # nothing was taken from the roomy one

    assert run(_with(make_gate, scenario)).tokens == 1000


def test_requests_are_not_given_back_but_tokens_are(make_gate):
    quota = [q(requests_per_minute=2, tokens_per_minute=100)]

    async def scenario(gate):
        for _ in range(2):
            await gate.settle(await gate.reserve(quota, 100, now=NOON), 0)
        with pytest.raises(QuotaExceeded) as refused:
            await gate.reserve(quota, 1, now=NOON)
        return refused.value

    assert run(_with(make_gate, scenario)).window == "minute_requests"


def test_a_call_larger_than_the_limit_says_to_lower_max_tokens(make_gate):
    async def scenario(gate):
        with pytest.raises(QuotaExceeded) as refused:
            await gate.reserve([q(tokens_per_minute=500)], 1200, now=NOON)
        return refused.value

    err = run(_with(make_gate, scenario))
    assert err.code == "rate_limited" and "lower max_tokens" in err.detail


def test_redis_down_refuses_calls_with_a_quota_and_passes_calls_without():
    gate = QuotaGate(RedisQuotaStore(redis.asyncio.Redis(port=closed_port(), socket_connect_timeout=0.2)))

    async def scenario():
        try:
            free = await gate.reserve([], 10_000)
            with pytest.raises(Exception) as refused:
                await gate.reserve([q(tokens_per_day=10)], 1)
            return free, refused.value
        finally:
            await gate.close()

    free, err = run(scenario())
    assert free.keys == ()
    assert (err.code, err.status_code) == ("quota_unavailable", 503)


# --- the quota book: which quotas a call counts against -----------------------------------------


@pytest.mark.django_db
def test_group_quota_is_shared_by_its_members_and_spares_others(make_gate):
    version = ModelVersionFactory(model_name="chat")
    ward = Group.objects.create(name="ward-4")
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    ward.user_set.add(ann, bob)
    set_quota(scope="group", subject_id=ward.pk, tokens_per_day=500, actor=None)

    book = load_quotas(connection)
    model_id = version.model_id
    of = {u.username: book.applicable(user_id=u.pk, token_id=None, model_id=model_id) for u in (ann, bob, cid)}

    async def scenario(gate):
        await gate.reserve(of["ann"], 400, now=NOON)
        with pytest.raises(QuotaExceeded) as refused:
            await gate.reserve(of["bob"], 200, now=NOON)  # ann used the group's day
        await gate.reserve(of["bob"], 100, now=NOON)
        await gate.reserve(of["cid"], 10_000, now=NOON)  # not a member: unlimited
        return refused.value

    err = run(_with(make_gate, scenario))
    assert err.code == "quota_exceeded" and "group" in err.detail
    assert of["cid"] == ()


@pytest.mark.django_db
def test_token_quota_is_per_token_and_model_quota_per_model(make_gate):
    chat, other = ModelVersionFactory(model_name="chat"), ModelVersionFactory(model_name="other")
    ann = make_user("ann")
    token_for(ann, name="laptop")
    token_for(ann, name="batch")
    laptop, batch = ann.api_tokens.order_by("pk")
    set_quota(scope="token", subject_id=laptop.pk, tokens_per_day=100, actor=None)
    set_quota(scope="user", subject_id=ann.pk, model_id=chat.model_id, tokens_per_minute=1000, actor=None)

    book = load_quotas(connection)

    laptop_chat = book.applicable(user_id=ann.pk, token_id=laptop.pk, model_id=chat.model_id)
    batch_chat = book.applicable(user_id=ann.pk, token_id=batch.pk, model_id=chat.model_id)
    laptop_other = book.applicable(user_id=ann.pk, token_id=laptop.pk, model_id=other.model_id)
    assert [(x.scope, x.model_id) for x in laptop_chat] == [("user", chat.model_id), ("token", None)]
    assert [x.scope for x in batch_chat] == ["user"]
    assert [x.scope for x in laptop_other] == ["token"]

    async def scenario(gate):
        await gate.reserve(laptop_other, 100, now=NOON)
        with pytest.raises(QuotaExceeded):
            await gate.reserve(laptop_chat, 1, now=NOON)  # the laptop token's day is used up
        return await gate.reserve(batch_chat, 900, now=NOON)  # the other token is not

    assert run(_with(make_gate, scenario)).tokens == 900


def test_limits_from_a_book_without_quotas_are_empty():
    from apps.gateway.quota import QuotaBook

    assert QuotaBook().applicable(user_id=1, token_id=2, model_id=3) == ()


def test_day_and_month_keys_are_utc():
    from apps.gateway.quota import _windows

    late = (datetime(2031, 12, 31, 23, 30, tzinfo=UTC)).timestamp()
    keys = {w.kind: w.key for w in _windows([q(tokens_per_day=1, tokens_per_month=1)], 1, late, "p:")}
    assert keys == {"day": "p:1:d:20311231", "month": "p:1:mo:203112"}
    assert timedelta(seconds=1800) == timedelta(seconds=round(_windows([q(tokens_per_day=1)], 1, late)[0].ends_in))
