"""Rate limits (issue 10, item 8): per address for anonymous and failed-authentication requests,
per token for calls, 429 `rate_limited` with Retry-After, in Redis or in process, on the API, the
admin login and the gateway; one Redis round trip on the gateway's hot path."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis
import redis.asyncio
from django.test import Client
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent, Outcome
from apps.core import throttling
from apps.core.ratelimit import (
    AsyncMemoryLimiter,
    AsyncRedisLimiter,
    Check,
    MemoryLimiter,
    Rate,
    RedisLimiter,
)
from tests.factories import closed_port, token_for

S = 1_000_000  # µs
T0 = 1_800_000_000 * S


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("these tests need a real Redis: set REDIS_URL (make test does)")
    return url


class Sync:
    """Drives a sync or async limiter through one interface."""

    def __init__(self, limiter, is_async: bool):
        self.limiter, self.is_async = limiter, is_async
        self.loop = asyncio.new_event_loop() if is_async else None

    def hit(self, *checks, now):
        result = self.limiter.hit(*checks, now_us=now)
        return self.loop.run_until_complete(result) if self.is_async else result

    def close(self):
        if self.loop is not None:
            if isinstance(self.limiter, AsyncRedisLimiter):
                self.loop.run_until_complete(self.limiter.reset())
                self.loop.run_until_complete(self.limiter.client.aclose())
            self.loop.close()


@pytest.fixture(params=["memory", "redis", "async-memory", "async-redis"])
def backend(request):
    prefix = f"sv:test-rl:{request.node.name}:"
    kind = request.param
    if kind == "memory":
        driver = Sync(MemoryLimiter(prefix), False)
    elif kind == "async-memory":
        driver = Sync(AsyncMemoryLimiter(prefix), True)
    elif kind == "redis":
        limiter = RedisLimiter(redis.Redis.from_url(redis_url()), prefix)
        limiter.reset()
        driver = Sync(limiter, False)
    else:
        driver = Sync(AsyncRedisLimiter(redis.asyncio.Redis.from_url(redis_url()), prefix), True)
        driver.loop.run_until_complete(driver.limiter.reset())
    yield driver
    if kind == "redis":
        driver.limiter.reset()
    driver.close()


class TestRate:
    @pytest.mark.parametrize(
        ("text", "limit", "period"), [("100/s", 100, 1), ("600/m", 600, 60), ("50/h", 50, 3600), ("20/5m", 20, 300)]
    )
    def test_parse(self, text, limit, period):
        assert Rate.parse(text) == Rate(limit, period)

    @pytest.mark.parametrize("text", ["", "100", "0/m", "10/fortnight", "-1/s", "ten/m"])
    def test_bad_rates_are_refused_by_name(self, text):
        with pytest.raises(ValueError, match="is not a rate"):
            Rate.parse(text)


class TestLimiterContract:
    """Every backend, sync and async, gives the same answers."""

    def test_a_burst_then_an_even_flow(self, backend):
        rate = Rate(5, 60)  # 5 at once, then one every 12 s
        answers = [backend.hit(Check("a", rate), now=T0).allowed for _ in range(6)]
        refused = backend.hit(Check("a", rate), now=T0)

        assert answers == [True] * 5 + [False]
        assert refused.retry_after == pytest.approx(12.0)
        assert refused.retry_after_header == "12"
        assert not backend.hit(Check("a", rate), now=T0 + 11 * S).allowed
        assert backend.hit(Check("a", rate), now=T0 + 12 * S).allowed
        assert not backend.hit(Check("a", rate), now=T0 + 12 * S).allowed
        assert backend.hit(Check("b", rate), now=T0).allowed  # keys are independent

    def test_all_or_nothing(self, backend):
        one = Rate(1, 60)
        assert backend.hit(Check("full", one), now=T0).allowed

        refused = backend.hit(Check("fresh", one), Check("full", one), now=T0)

        assert not refused.allowed
        # Nothing was charged to "fresh": it still has its one call.
        assert backend.hit(Check("fresh", one), now=T0).allowed

    def test_a_look_charges_nothing(self, backend):
        two = Rate(2, 60)
        for _ in range(5):
            assert backend.hit(Check("k", two, cost=0), now=T0).allowed
        assert backend.hit(Check("k", two), Check("k2", two), now=T0).allowed
        assert backend.hit(Check("k", two), now=T0).allowed
        assert not backend.hit(Check("k", two, cost=0), now=T0).allowed  # spent: the look says so


def test_redis_down_falls_back_to_limiting_in_process():
    limiter = RedisLimiter(redis.Redis(port=closed_port(), socket_connect_timeout=0.2), "sv:down:")
    rate = Rate(2, 60)

    answers = [limiter.hit(Check("x", rate), now_us=T0).allowed for _ in range(3)]

    assert answers == [True, True, False]


def test_the_memory_limiter_stays_bounded():
    limiter = MemoryLimiter(max_keys=100)
    for i in range(1000):
        limiter.hit(Check(f"k{i}", Rate(1, 60)), now_us=T0)
    assert len(limiter._tat) <= 100


def assert_rate_limited(resp) -> None:
    assert resp.status_code == 429, (resp.status_code, resp.content[:300])
    body = resp.json()
    assert body["code"] == "rate_limited"
    assert body["detail"]
    assert int(resp["Retry-After"]) >= 1
    assert body["retry_after"] == int(resp["Retry-After"])


@pytest.fixture(params=["redis", "in-process"])
def store(request, settings):
    """The portal with Redis (REDIS_URL) and without (`make run`'s in-process limiter)."""
    if request.param == "in-process":
        settings.REDIS_URL = ""
    yield request.param
    throttling.limiter().reset()


@pytest.mark.django_db
class TestPortal:
    def test_anonymous_requests_per_address(self, settings, store):
        settings.RATELIMIT_ANONYMOUS = "3/m"
        client = Client(REMOTE_ADDR="198.51.100.7")

        statuses = [client.get("/admin/login/").status_code for _ in range(3)]
        refused = client.get("/admin/login/")

        assert statuses == [200] * 3
        assert_rate_limited(refused)
        assert Client(REMOTE_ADDR="198.51.100.8").get("/admin/login/").status_code == 200
        assert isinstance(throttling.limiter(), RedisLimiter if store == "redis" else MemoryLimiter)

    def test_failed_authentications_per_address(self, settings, store, plain_user):
        settings.RATELIMIT_AUTH_FAILURES = "3/m"
        token = token_for(plain_user)
        attacker = APIClient(REMOTE_ADDR="198.51.100.7")

        bad = [attacker.get("/api/v1/accounts/me/", HTTP_AUTHORIZATION=f"Bearer svt_guess{i}") for i in range(4)]

        assert [r.status_code for r in bad[:3]] == [401] * 3
        assert_rate_limited(bad[3])
        # The address is now refused anonymous requests, logins included, before any password check.
        assert_rate_limited(attacker.post("/api/v1/accounts/login/", {"username": "alice", "password": "x" * 12}))
        assert_rate_limited(Client(REMOTE_ADDR="198.51.100.7").post("/admin/login/", {"username": "alice"}))
        # A valid token from the same address (a shared proxy) is not held hostage.
        ok = APIClient(REMOTE_ADDR="198.51.100.7").get("/api/v1/accounts/me/", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert ok.status_code == 200
        assert APIClient(REMOTE_ADDR="198.51.100.8").post("/api/v1/accounts/login/", {}).status_code != 429

    def test_failed_logins_spend_the_address_budget(self, settings, store, plain_user):
        settings.RATELIMIT_AUTH_FAILURES = "3/m"
        client = Client(REMOTE_ADDR="198.51.100.7")
        for name in ("alice", "bob", "carol"):  # a spray: three accounts, one guess each
            assert client.post("/admin/login/", {"username": name, "password": "Winter2026!!"}).status_code == 200

        assert_rate_limited(client.post("/admin/login/", {"username": "dave", "password": "Winter2026!!"}))

    def test_per_token(self, settings, store, plain_user):
        settings.RATELIMIT_TOKEN = "3/m"
        one, two = token_for(plain_user), token_for(plain_user)
        api = APIClient(REMOTE_ADDR="198.51.100.7")

        statuses = [api.get("/api/v1/accounts/me/", HTTP_AUTHORIZATION=f"Bearer {one}").status_code for _ in range(3)]
        refused = api.get("/api/v1/accounts/me/", HTTP_AUTHORIZATION=f"Bearer {one}")

        assert statuses == [200] * 3
        assert_rate_limited(refused)
        assert api.get("/api/v1/accounts/me/", HTTP_AUTHORIZATION=f"Bearer {two}").status_code == 200

    def test_per_signed_in_user(self, settings, store, plain_user):
        settings.RATELIMIT_SESSION = "2/m"
        client = Client()
        client.force_login(plain_user)

        assert [client.get("/api/v1/accounts/me/").status_code for _ in range(2)] == [200, 200]
        assert_rate_limited(client.get("/api/v1/accounts/me/"))

    def test_a_refused_changing_call_is_audited(self, settings, store):
        settings.RATELIMIT_ANONYMOUS = "1/m"
        client = Client(REMOTE_ADDR="198.51.100.7")
        client.get("/admin/login/")

        assert_rate_limited(client.post("/admin/login/", {"username": "x"}))

        event = AuditEvent.objects.get(event_type="access.refused")
        assert (event.error_code, event.outcome, event.source_ip) == ("rate_limited", Outcome.DENIED, "198.51.100.7")

    def test_limits_can_be_turned_off(self, settings, store):
        settings.RATELIMIT_ANONYMOUS = "1/m"
        settings.RATELIMIT_ENABLED = False
        assert {Client().get("/admin/login/").status_code for _ in range(3)} == {200}


@pytest.mark.django_db
def test_the_portal_keeps_limiting_with_redis_down(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    settings.RATELIMIT_ANONYMOUS = "2/m"
    client = Client(REMOTE_ADDR="198.51.100.7")

    assert [client.get("/admin/login/").status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(client.get("/admin/login/"))
