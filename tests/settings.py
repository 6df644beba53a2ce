"""The test suite's settings: the portal's own (portal.settings), with one Redis database per
pytest-xdist worker, as pytest-django gives each worker its own PostgreSQL database.

`make test` runs the suite on two workers (`-n 2 --dist loadfile`): worker gw0 keeps REDIS_URL's
database, gwN uses the one N below it (db 15 → 14). Without that the workers would share rate-limit
buckets, quota counters, the gateway's views and the Celery queue, and one worker's `flushdb` would
empty the other's. Set here, before portal.settings reads the environment, so that the subprocesses
the tests start (Celery workers, data planes, `manage.py`) inherit the same database."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


def _worker_redis_url(url: str, worker: str) -> str:
    index = int(worker.removeprefix("gw") or 0)
    if not url or index == 0:
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(base - index) % 16}"))


# Once per process tree: the subprocesses inherit both PYTEST_XDIST_WORKER and the adjusted REDIS_URL.
if not os.environ.get("SOVEREIGN_TEST_REDIS_PER_WORKER"):
    os.environ["REDIS_URL"] = _worker_redis_url(os.environ.get("REDIS_URL", ""), os.environ.get("PYTEST_XDIST_WORKER", ""))
    os.environ["SOVEREIGN_TEST_REDIS_PER_WORKER"] = "1"

from portal.settings import *  # noqa: E402, F403 - the portal's settings, unchanged otherwise
