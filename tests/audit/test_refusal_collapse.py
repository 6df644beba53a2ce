"""Unauthenticated refusals collapsed into one counted event per (address, code, minute)
(issue 10, item 8; docs/audit.md): the first written at once, the rest as one event when the
window closes (next refusal, beat task, process exit), counts always adding up, the log bounded.
An authenticated caller's every refusal keeps its own event."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit import refusals, tasks
from apps.audit.models import AuditEvent, Outcome
from apps.core import throttling
from tests.conftest import otp_login
from tests.factories import closed_port

ROOT = Path(__file__).resolve().parents[2]
MINUTE = timedelta(seconds=60)


@pytest.fixture(params=["redis", "in-process"])
def store(request, settings):
    if request.param == "in-process":
        settings.REDIS_URL = ""
    settings.RATELIMIT_ENABLED = False  # these tests are about the log, not the limits
    yield request.param
    throttling.limiter().reset()


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now().replace(second=10, microsecond=0), tick=False) as traveller:
        yield traveller


def anonymous_post(addr: str = "198.51.100.7", path: str = "/api/v1/accounts/tokens/"):
    return APIClient(REMOTE_ADDR=addr).post(path, {}, format="json")


def refused(**filters):
    return AuditEvent.objects.filter(event_type="access.refused", **filters).order_by("id")


def total(events) -> int:
    return sum(e.details["count"] for e in events)


@pytest.mark.django_db
class TestCollapse:
    def test_first_written_at_once_rest_when_the_next_refusal_closes_the_window(self, store, clock):
        for _ in range(5):
            assert anonymous_post().status_code == 401

        first = refused().get()
        assert (first.details["count"], first.error_code, first.source_ip) == (1, "not_authenticated", "198.51.100.7")
        assert first.outcome == Outcome.DENIED
        assert first.details["path"] == "/api/v1/accounts/tokens/"  # the first keeps its particulars

        clock.shift(MINUTE)
        anonymous_post("203.0.113.5")  # any refusal after the window closes it

        rest = refused(source_ip="198.51.100.7").last()
        assert (rest.details["count"], rest.details["collapsed"], rest.error_code) == (4, True, "not_authenticated")
        assert rest.details["window_start"] == first.details["window_start"]
        assert rest.request_id == ""  # not the request that happened to flush it
        assert total(refused()) == 6

    def test_the_beat_task_closes_windows(self, store, clock):
        for _ in range(3):
            anonymous_post()
        assert tasks.flush_refused_buckets() == 0  # the window is still open

        clock.shift(MINUTE)
        assert tasks.flush_refused_buckets() == 1
        assert [e.details["count"] for e in refused()] == [1, 2]
        assert tasks.flush_refused_buckets() == 0  # taken once

    def test_buckets_are_per_address_code_and_window(self, store, clock):
        anonymous_post("198.51.100.7")
        anonymous_post("198.51.100.8")
        APIClient(REMOTE_ADDR="198.51.100.7").get("/api/v1/accounts/me/", HTTP_AUTHORIZATION="Bearer svt_nope")
        clock.shift(MINUTE)
        anonymous_post("198.51.100.7")

        rows = list(AuditEvent.objects.values_list("event_type", "source_ip", "error_code", "details__count"))
        assert sorted(rows) == sorted(
            [
                ("access.refused", "198.51.100.7", "not_authenticated", 1),
                ("access.refused", "198.51.100.8", "not_authenticated", 1),
                ("auth.token.denied", "198.51.100.7", "invalid_token", 1),
                ("access.refused", "198.51.100.7", "not_authenticated", 1),
            ]
        )

    def test_a_failed_flush_loses_nothing(self, store, clock, monkeypatch):
        for _ in range(4):
            anonymous_post()
        clock.shift(MINUTE)

        def broken(*args, **kwargs):
            raise RuntimeError("audit database down")

        monkeypatch.setattr(refusals, "record_event", broken)
        with pytest.raises(RuntimeError):
            refusals.flush_closed()
        monkeypatch.undo()

        assert refusals.flush_closed() == 1
        assert total(refused()) == 4

    def test_a_refusal_that_cannot_be_audited_is_not_counted(self, store, clock, monkeypatch):
        def broken(*args, **kwargs):
            raise RuntimeError("audit database down")

        monkeypatch.setattr(refusals, "record_event", broken)
        with pytest.raises(RuntimeError):
            refusals.record_refusal(
                "access.refused", source=refusals.Source(ip="198.51.100.7"), outcome="denied", error_code="x"
            )
        monkeypatch.undo()
        refusals.record_refusal(
            "access.refused", source=refusals.Source(ip="198.51.100.7"), outcome="denied", error_code="x"
        )

        assert [e.details["count"] for e in refused()] == [1]  # written as the first: the failed one never counted

    def test_bounded_even_with_an_address_per_call(self, store, clock, settings):
        settings.AUDIT_REFUSAL_MAX_BUCKETS = 5
        for i in range(100):
            anonymous_post(f"2001:db8::{i:x}")
        clock.shift(MINUTE)
        refusals.flush_closed()

        events = list(refused())
        assert total(events) == 100
        assert len(events) <= 5 + 2
        overflow = [e for e in events if e.source_ip is None]
        assert overflow and all(e.details["addresses"] == "overflow" for e in overflow)
        assert sum(e.details["count"] for e in overflow) == 95

    def test_a_flood_of_api_refusals_adds_up(self, store, clock):
        """Mixed anonymous refusals of the API (no credentials, bad tokens, CSRF-less admin
        posts) from 10 addresses: a bounded number of rows, counts adding up to the calls."""
        calls = 600
        for i in range(calls):
            addr = f"198.51.100.{i % 10}"
            kind = i % 3
            if kind == 0:
                resp = anonymous_post(addr)
            elif kind == 1:
                resp = APIClient(REMOTE_ADDR=addr).get("/api/v1/accounts/me/", HTTP_AUTHORIZATION=f"Bearer svt_{i}")
            else:
                resp = Client(REMOTE_ADDR=addr, enforce_csrf_checks=True).post("/admin/login/", {})
            assert resp.status_code in (401, 403), resp.status_code
        clock.shift(MINUTE)
        refusals.flush_closed()

        events = AuditEvent.objects.filter(actor__isnull=True)
        assert total(events) == calls
        assert events.count() <= 10 * 3 * 2

    def test_authenticated_refusals_keep_one_event_each(self, store, clock, plain_user):
        client = Client()
        otp_login(client, plain_user)
        for _ in range(3):
            assert client.post("/api/v1/accounts/users/", {}).status_code == 403

        events = refused(actor=plain_user)
        assert events.count() == 3
        assert all("count" not in e.details for e in events)


@pytest.mark.django_db(transaction=True)
def test_in_process_counts_are_written_at_process_exit():
    """`make run` without Redis: a process that exits with open buckets writes their remainder."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": "",
    }
    script = (
        "import django; django.setup()\n"
        "from apps.audit.refusals import record_refusal\n"
        "from apps.audit.services import Source\n"
        "for _ in range(7):\n"
        "    record_refusal('access.refused', source=Source(ip='198.51.100.7'), outcome='denied', error_code='x')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)

    assert sorted(e.details["count"] for e in refused()) == [1, 6]


@pytest.mark.django_db
def test_with_redis_down_every_refusal_is_still_written(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    for _ in range(3):
        assert anonymous_post().status_code == 401

    assert [e.details["count"] for e in refused()] == [1, 1, 1]  # uncollapsed, but complete


def test_the_async_counter_shares_the_buckets():
    """The data plane's async twin counts into the same Redis buckets as the portal."""
    import redis.asyncio

    url = os.environ["REDIS_URL"]
    bucket = refusals.Bucket(1, "inference.infer", "198.51.100.7", "invalid_token", "denied")

    async def scenario():
        client = redis.asyncio.Redis.from_url(url)
        twin = refusals.AsyncRedisCounter(client)
        first = await twin.count(bucket, 1000)
        refusals.RedisCounter(__import__("redis").Redis.from_url(url)).count(bucket, 1000)
        second = await twin.count(bucket, 1000)
        taken = await twin.take_closed(2)
        await client.aclose()
        return first, second, taken

    first, second, taken = asyncio.run(scenario())

    assert (first[1], second[1]) == (1, 3)
    assert taken == [(bucket, 3)]
