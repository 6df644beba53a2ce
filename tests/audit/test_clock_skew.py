"""Clock skew between web nodes: a node whose clock runs behind writes events with earlier
timestamps than events already sealed. Sequence (commit order), not timestamp, orders the chain,
so the chain still verifies; searches by time still find each event by its own timestamp."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from apps.audit.verify import verify_chain

pytestmark = pytest.mark.django_db


def test_events_from_a_node_whose_clock_is_behind_keep_the_chain_valid(time_machine, auditor_client):
    now = timezone.now().replace(microsecond=0)
    time_machine.move_to(now, tick=False)
    first = record_event("inference.infer", actor=None, details={"node": "a"})
    seal_pending(checkpoint=True)
    time_machine.move_to(now - timedelta(minutes=10), tick=False)  # node b, ten minutes behind
    late = record_event("inference.infer", actor=None, details={"node": "b"})
    time_machine.move_to(now + timedelta(minutes=1), tick=False)
    seal_pending(checkpoint=True)

    first.refresh_from_db()
    late.refresh_from_db()
    assert late.sequence == first.sequence + 1 and late.timestamp < first.timestamp
    report = verify_chain()
    assert report["ok"], report
    since = (now - timedelta(minutes=11)).isoformat()
    until = (now - timedelta(minutes=9)).isoformat()
    found = auditor_client.get("/api/v1/audit/events/", {"since": since, "until": until, "event_group": "inference"})
    assert [e["id"] for e in found.json()["results"]] == [late.pk]
    assert AuditEvent.objects.order_by("sequence").filter(sequence__isnull=False).last().pk == late.pk
