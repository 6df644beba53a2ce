"""audit.central_collection (等保 8.1.5.4): sealed audit events shipped to a real local HTTP
collector that counts what it receives; collector down → the lag grows and the check fails;
up → the gap is filled in order and the check passes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent, AuditShipment
from apps.audit.services import record_event
from apps.audit.tasks import ship_audit_events
from apps.compliance.checks import FAIL, PASS, Context, run_check

from .receivers import Receiver

pytestmark = pytest.mark.django_db


def check(now=None):
    return run_check("audit.central_collection", Context(profile="dengbao-l3", now=now or timezone.now()))


def events(n: int) -> int:
    for i in range(n):
        record_event("audit.verify", actor=None, details={"n": i})
    seal_pending()
    return AuditEvent.objects.filter(sequence__isnull=False).count()


def received_sequences(receiver) -> list[int]:
    return [e["sequence"] for batch in receiver.received for e in batch["events"]]


def test_no_collector_fails(settings):
    settings.AUDIT_COLLECTOR_URL = ""
    result = check()
    assert result.status == FAIL and "no external audit collector" in result.summary


def test_collector_down_then_up(settings):
    collector = Receiver()
    settings.AUDIT_COLLECTOR_URL = collector.url
    settings.AUDIT_SHIP_BATCH = 4
    collector.stop()  # down
    sealed = events(5)
    assert ship_audit_events.apply().get() == 0
    failed = AuditShipment.objects.get()
    assert failed.acknowledged_at is None and failed.first_sequence == 1 and failed.error
    result = check()
    assert result.status == FAIL and "last shipment failed" in result.summary
    later = check(now=timezone.now() + timedelta(seconds=settings.AUDIT_COLLECTOR_MAX_LAG_SECONDS + 60))
    assert "not acknowledged by the collector" in later.summary  # the lag grows
    assert later.evidence["unshipped_events"] == sealed and later.evidence["acknowledged_through"] == 0

    up = Receiver()  # up again (a new port: the URL, and so the collector, is new)
    settings.AUDIT_COLLECTOR_URL = up.url
    try:
        assert ship_audit_events.apply().get() == sealed
        assert received_sequences(up) == list(range(1, sealed + 1))  # every sealed event, in order
        assert len(up.received) == 2  # batches of 4
        batch = up.received[-1]
        assert batch["format"] == "sovereign-audit-batch" and batch["events"][0]["prev_hash"]
        result = check()
        assert result.status == PASS, result.summary
        assert result.evidence["acknowledged_through"] == sealed and result.evidence["unshipped_events"] == 0

        total = events(3)  # more events: only the new ones are sent, after the acknowledged sequence
        ship_audit_events.apply()
        assert received_sequences(up) == list(range(1, total + 1))
        up.status = 500  # the collector refuses: the next batch is not acknowledged
        events(2)
        ship_audit_events.apply()
        assert check().status == FAIL
        up.status = 200
        ship_audit_events.apply()  # the same range again, accepted
        assert check().status == PASS
        assert received_sequences(up)[-2:] == received_sequences(up)[-4:-2]  # resent, not skipped
    finally:
        up.stop()


def test_refused_address_fails(settings):
    settings.AUDIT_COLLECTOR_URL = "http://169.254.169.254/collect"
    events(1)
    ship_audit_events.apply()
    shipment = AuditShipment.objects.get()
    assert shipment.acknowledged_at is None and "server_address_forbidden" in shipment.error
    result = check()
    assert result.status == FAIL and "refused" in result.summary
