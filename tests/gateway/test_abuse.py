"""The gateway under abuse (issue 10, item 8): rate limits per token after authentication and per
address for bad tokens, one Redis round trip per granted call, and a flood of anonymous bad calls
collapsed into a bounded number of counted audit events while granted callers are still served."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit import tasks
from apps.audit.models import AuditEvent, Outcome
from apps.core import throttling
from tests.core.test_ratelimit import assert_rate_limited
from tests.gateway.dataplane_client import DataPlaneClient as Client

from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["redis", "in-process"])
def store(request, settings):
    """The portal with Redis (REDIS_URL) and without (`make run`'s in-process limiter and counters)."""
    if request.param == "in-process":
        settings.REDIS_URL = ""
    yield request.param
    throttling.limiter().reset()


@pytest.mark.django_db
class TestGateway:
    def test_per_token_after_authentication(self, settings, store, caller, model_version, fake_triton):
        settings.RATELIMIT_GATEWAY = "2/m"
        deploy(model_version, url=fake_triton.url)

        statuses = [infer(caller, valid_request()).status_code for _ in range(2)]
        refused = infer(caller, valid_request())

        assert statuses == [200, 200]
        assert_rate_limited(refused)
        assert refused.json()["error"]  # tritonclient shows KServe's `error`
        assert len(fake_triton.requests) == 2
        event = AuditEvent.objects.filter(event_type="inference.infer").order_by("-id").first()
        assert (event.error_code, event.outcome, event.actor_name) == ("rate_limited", Outcome.DENIED, "alice")

    def test_bad_tokens_per_address_and_granted_callers_still_served(
        self, settings, store, caller, model_version, fake_triton
    ):
        settings.RATELIMIT_AUTH_FAILURES = "3/m"
        deploy(model_version, url=fake_triton.url)
        attacker = Client(REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer svt_guess")

        answers = [infer(attacker, valid_request()) for _ in range(5)]

        assert [r.status_code for r in answers[:3]] == [401] * 3
        for refused in answers[3:]:
            assert_rate_limited(refused)
        assert infer(caller, valid_request()).status_code == 200  # same address, valid token

    def test_one_redis_round_trip_per_granted_call(self, settings, caller, model_version, fake_triton):
        deploy(model_version, url=fake_triton.url)
        assert infer(caller, valid_request()).status_code == 200  # warm: connections, scripts
        calls = []

        def count_on(plane):  # the data plane's own redis.asyncio client
            original = plane.redis.execute_command

            async def counting(*args, **kwargs):
                calls.append(args[0])
                return await original(*args, **kwargs)

            plane.redis.execute_command = counting

        caller.on_build = count_on
        assert infer(caller, valid_request()).status_code == 200

        assert calls == ["EVALSHA"]


FLOOD, ADDRESSES = 2000, 20


class TestFlood:
    def test_anonymous_flood_leaves_few_events_whose_counts_add_up(
        self, settings, store, caller, model_version, fake_triton
    ):
        """2,000 bad calls from 20 addresses behind a trusted proxy, across a minute boundary:
        at most a few hundred audit rows, their counts summing to exactly 2,000, and the granted
        caller answered throughout with its own event per call."""
        settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
        deploy(model_version, url=fake_triton.url)
        start = timezone.now().replace(second=30, microsecond=0)
        granted = []
        with time_machine.travel(start, tick=False) as clock:
            for i in range(FLOOD):
                client = Client(
                    REMOTE_ADDR="10.0.0.2",
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{i % ADDRESSES}",
                    HTTP_AUTHORIZATION=f"Bearer svt_guess{i}",
                )
                assert infer(client, valid_request()).status_code in (401, 429)
                if i % 200 == 0:
                    granted.append(infer(caller, valid_request()).status_code)
                if i == FLOOD // 2:
                    clock.shift(timedelta(seconds=60))  # a second window
            clock.shift(timedelta(seconds=61))
            tasks.flush_refused_buckets()  # the beat task closes the last window

        refusals = AuditEvent.objects.filter(event_type="inference.infer", actor__isnull=True)
        assert sum(e.details["count"] for e in refusals) == FLOOD
        # Per address, code and window: the first event and the counted rest.
        assert refusals.count() <= 2 * ADDRESSES * 2 * 2
        assert {e.error_code for e in refusals} == {"invalid_token", "rate_limited"}
        assert {e.source_ip for e in refusals} == {f"203.0.113.{n}" for n in range(ADDRESSES)}
        assert granted == [200] * len(granted)
        served = AuditEvent.objects.filter(event_type="inference.infer", actor_name="alice", outcome=Outcome.SUCCESS)
        assert served.count() == len(granted)
        assert len(fake_triton.requests) == len(granted)
