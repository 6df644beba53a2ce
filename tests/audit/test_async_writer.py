"""AsyncEventWriter: the data plane's audit writer on PostgreSQL (its own async connection, no
thread hop). Its rows must be record_events' rows, a batch all or nothing, and a killed
connection replaced on the next batch."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import AsyncEventWriter, AuditUnavailable, PendingEvent, record_events

from .test_record_events import CASES, as_pending, columns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the async writer is the PostgreSQL path (SQLite writes through record_events)")


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


@pytest.mark.parametrize("size", [1, 3])  # a lone event is one prepared INSERT, a batch one COPY
def test_rows_are_record_events_rows(admin_user, size):
    facts = CASES["authenticated call with a token"](admin_user)
    actor = facts.pop("actor")
    writer = AsyncEventWriter()
    with time_machine.travel(timezone.now(), tick=False):
        record_events([as_pending(actor, request_id="sync", **facts)])
        run(writer([as_pending(actor, request_id=f"async-{i}", **facts) for i in range(size)]))
    run(writer.close())

    reference = {**columns(AuditEvent.objects.get(request_id="sync").pk), "request_id": None}
    for i in range(size):
        assert {**columns(AuditEvent.objects.get(request_id=f"async-{i}").pk), "request_id": None} == reference


def test_a_killed_connection_fails_its_batch_whole_and_is_replaced():
    writer = AsyncEventWriter()

    async def kill():
        pid = (await (await writer._conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        params = connection.get_connection_params()
        for key in ("cursor_factory", "context"):
            params.pop(key, None)
        with psycopg.connect(**params, autocommit=True) as other:
            assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]

    async def scenario():
        await writer([PendingEvent("inference.infer", request_id="before")])
        for size in (1, 3):  # the INSERT path and the COPY path
            await kill()
            with pytest.raises(AuditUnavailable):
                await writer([PendingEvent("inference.infer", request_id=f"lost-{size}") for _ in range(size)])
            await writer([PendingEvent("inference.infer", request_id=f"after-{size}") for _ in range(size)])
        await writer.close()

    run(scenario())
    found = sorted(AuditEvent.objects.values_list("request_id", flat=True))
    assert found == ["after-1", "after-3", "after-3", "after-3", "before"]
