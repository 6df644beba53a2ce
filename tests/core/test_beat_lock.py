"""Two portal nodes each running Celery beat (issue 16): tasks are sent once, and when the beat that
holds the lock dies, the other takes over. Real beat processes against the real Redis broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SEAL = "apps.audit.tasks.seal_audit_log"
LOCK_SECONDS = 3

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="RedBeat is used only with the Redis broker")


def _beat_redis_url() -> str:
    """A Redis database of the beats' own: a Celery worker other tests started may still consume the
    test run's broker queue, and would take the messages this test counts."""
    base, _, db = settings.REDIS_URL.rpartition("/")
    return f"{base}/{(int(db or 0) + 1) % 16}"


def _client() -> redis.Redis:
    return redis.Redis.from_url(_beat_redis_url())


def _clean(client: redis.Redis) -> None:
    client.delete("celery")
    for key in client.scan_iter("sovereign:beat*"):
        client.delete(key)


def _sent(client: redis.Redis) -> int:
    """Seal tasks waiting in the broker's default queue (no worker runs in the test)."""
    return sum(json.loads(raw)["headers"]["task"] == SEAL for raw in client.lrange("celery", 0, -1))


def _beat(log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SOVEREIGN_AUDIT_SEAL_SECONDS": "1",
        "SOVEREIGN_BEAT_LOCK_SECONDS": str(LOCK_SECONDS),
        "REDIS_URL": _beat_redis_url(),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    celery = Path(sys.executable).with_name("celery")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(celery), "-A", "portal", "beat", "--loglevel", "INFO"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def beats(tmp_path):
    client = _client()
    _clean(client)
    procs: list[subprocess.Popen] = []
    yield client, procs, tmp_path
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    _clean(client)


def test_two_beats_send_each_tick_once_and_the_survivor_takes_over(beats):
    client, procs, tmp = beats
    procs.append(_beat(tmp / "a.log"))
    wait_for(lambda: _sent(client) >= 2, 90, "the first beat to send seal tasks")
    procs.append(_beat(tmp / "b.log"))
    wait_for(lambda: b"Acquiring lock" in (tmp / "b.log").read_bytes() or (tmp / "b.log").stat().st_size > 0, 90)

    # Once per second from the lock holder: six sends take about six seconds. Two unlocked beats
    # would send twice per second, six in about three.
    start, before = time.monotonic(), _sent(client)
    wait_for(lambda: _sent(client) >= before + 6, 60, "six more seal tasks")
    assert time.monotonic() - start >= 4.5, "two beats sent the same schedule"
    assert procs[1].poll() is None, "the second beat is waiting, not gone"
    assert b"Acquired lock" in (tmp / "a.log").read_bytes()
    assert b"Acquired lock" not in (tmp / "b.log").read_bytes()

    os.killpg(procs[0].pid, signal.SIGKILL)  # the holder dies without releasing its lock
    procs[0].wait(timeout=30)
    wait_for(lambda: b"Acquired lock" in (tmp / "b.log").read_bytes(), LOCK_SECONDS + 30, "the second beat's lock")
    after = _sent(client)
    wait_for(lambda: _sent(client) >= after + 3, 30, "the second beat to send seal tasks")
