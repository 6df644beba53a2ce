"""Concurrent writers on PostgreSQL: nobody waits on a global lock, the sealer keeps up, and a
transaction that commits late (a lower id committing after higher ids were sealed) is sealed in
the next batch, not lost."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from apps.audit.verify import verify_chain
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _in_thread(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_concurrent_writers_and_the_sealer(settings):
    settings.AUDIT_SEAL_BATCH = 7  # several batches per pass
    writers, per_writer = 4, 25
    done = threading.Event()
    errors: list[BaseException] = []

    def write(n: int):
        try:
            for i in range(per_writer):
                with transaction.atomic():
                    record_event("inference.infer", actor=None, target_display=f"w{n}", details={"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def seal():
        while not done.is_set():
            seal_pending(checkpoint=None)

    threads = [_in_thread(write, n) for n in range(writers)]
    sealer = _in_thread(seal)
    for thread in threads:
        thread.join(60)
    done.set()
    sealer.join(60)
    seal_pending(checkpoint=True)

    assert not errors
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, writers * per_writer + 1))
    assert verify_chain()["ok"]


def test_a_late_commit_is_sealed_next_not_lost():
    inserted, release = threading.Event(), threading.Event()
    late_id: list[int] = []

    def slow_writer():
        with transaction.atomic():
            late_id.append(record_event("inference.infer", actor=None, target_display="late").pk)
            inserted.set()
            release.wait(30)

    thread = _in_thread(slow_writer)
    wait_for(inserted.is_set, 30, what="the slow writer's insert")
    early = [record_event("inference.infer", actor=None, target_display=f"e{i}").pk for i in range(2)]

    assert seal_pending().sealed == 2  # the open transaction's row is not visible yet
    release.set()
    thread.join(30)
    assert seal_pending().sealed == 1

    late = AuditEvent.objects.get(pk=late_id[0])
    assert late.pk < min(early) and late.sequence == 3  # lower id, later in the chain
    assert verify_chain()["ok"]


def test_only_one_sealer_at_a_time():
    record_event("inference.infer", actor=None)
    holding, release = threading.Event(), threading.Event()

    def other_sealer():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x53_4F_56_41])
            holding.set()
            release.wait(30)

    thread = _in_thread(other_sealer)
    wait_for(holding.is_set, 30, what="the other sealer's lock")
    result = seal_pending()
    release.set()
    thread.join(30)

    assert result.busy and result.sealed == 0
    assert seal_pending().sealed == 1
