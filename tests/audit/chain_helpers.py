"""Helpers for the chain tests: fill the log, and tamper with it the way an intruder with database
access would (the append-only trigger switched off for the statement, as a superuser can)."""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.audit.offline_verify import event_hash
from apps.audit.services import record_event


def fill(n: int, *, checkpoint: bool = True, actor=None) -> list[AuditEvent]:
    events = [
        record_event("inference.infer", actor=actor, target_display=f"m{i}", details={"i": i, "latency_ms": 1.5})
        for i in range(n)
    ]
    seal_pending(checkpoint=checkpoint)
    return events


@contextmanager
def triggers_off():
    """What an intruder with superuser rights does: skip the append-only trigger (this transaction only)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = origin")


def sql(statement: str, params=()) -> None:
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def rehash(record: dict) -> str:
    return event_hash(record, "sha256")
