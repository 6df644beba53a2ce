"""Central collection (等保 8.1.5.4): sealed audit events are shipped to an external collector as
HTTP POSTs of JSON batches (SOVEREIGN_AUDIT_COLLECTOR_URL), each event in the export's record
format (its hash, sequence and prev_hash, so the collector can verify the chain) with the newest
signed checkpoint the batch reaches. Only sealed events are shipped, in sequence order; the next
batch starts after the highest sequence the collector acknowledged (2xx), so an outage leaves a
gap that is filled, in order, when the collector answers again. The collector's address obeys the
same outbound policy as the alert channel (apps/audit/alerts.py). Every attempt is an
AuditShipment row; the beat task `ship_audit_events` runs every SOVEREIGN_AUDIT_SHIP_SECONDS.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import Max
from django.utils import timezone
from urllib3.exceptions import HTTPError

from apps.core.errors import ServiceError

from . import alerts, chain
from .models import AuditCheckpoint, AuditEvent, AuditShipment

FORMAT = "sovereign-audit-batch"


def collector_url() -> str:
    return (settings.AUDIT_COLLECTOR_URL or "").strip()


def collector_id(url: str | None = None) -> str:
    return alerts.channel_id(collector_url() if url is None else url)


def shipped_through(collector: str) -> int:
    """The highest sequence the collector acknowledged (0: none)."""
    acked = AuditShipment.objects.filter(collector=collector, acknowledged_at__isnull=False)
    return acked.aggregate(last=Max("last_sequence"))["last"] or 0


def _batch(after: int) -> list[dict]:
    rows = (
        AuditEvent.objects.filter(sequence__gt=after)
        .order_by("sequence")
        .values(*chain.row_fields())[: settings.AUDIT_SHIP_BATCH]
    )
    return [chain.event_record(row) for row in rows]


def ship_pending(*, max_batches: int = 20) -> dict:
    """Ship sealed events the collector does not hold yet, batch by batch, until it is caught up,
    a batch fails, or `max_batches` were sent. Returns {"shipped", "through", "error"}."""
    url = collector_url()
    if not url:
        return {"shipped": 0, "through": 0, "error": "no collector configured"}
    collector = collector_id(url)
    through = shipped_through(collector)
    shipped = 0
    for _ in range(max_batches):
        events = _batch(through)
        if not events:
            break
        shipment = _send(url, collector, events)
        if shipment.acknowledged_at is None:
            return {"shipped": shipped, "through": through, "error": shipment.error}
        shipped += len(events)
        through = shipment.last_sequence
    return {"shipped": shipped, "through": through, "error": ""}


def _send(url: str, collector: str, events: list[dict]) -> AuditShipment:
    first, last = events[0]["sequence"], events[-1]["sequence"]
    checkpoint = AuditCheckpoint.objects.filter(sequence__lte=last).order_by("-sequence").first()
    body = {
        "format": FORMAT,
        "version": 1,
        "hash_alg": chain.hash_alg(),
        "first_sequence": first,
        "last_sequence": last,
        "events": events,
        "checkpoint": chain.checkpoint_record(checkpoint) if checkpoint else None,
    }
    status, error = None, ""
    try:
        alerts.check_channel_url(url)
        status = alerts.post_json(url, body, user_agent="Sovereign-audit-shipper/1")
        error = "" if 200 <= status < 300 else f"the collector answered HTTP {status}"
    except ServiceError as err:
        error = f"{err.code}: {err.detail_en}"
    except (HTTPError, OSError) as err:
        error = f"{type(err).__name__}: {err}"[:300]
    now = timezone.now()
    return AuditShipment.objects.create(
        collector=collector,
        first_sequence=first,
        last_sequence=last,
        events=len(events),
        sent_at=now,
        http_status=status,
        acknowledged_at=now if not error else None,
        error=error,
    )


def collection_state(now: datetime) -> dict:
    """How far behind the collector is: the newest sealed sequence, the acknowledged one, the
    number of sealed events not acknowledged and the age of the oldest of them (the lag), and the
    last attempt."""
    url = collector_url()
    collector = collector_id(url)
    head = AuditEvent.objects.filter(sequence__isnull=False).aggregate(last=Max("sequence"))["last"] or 0
    through = shipped_through(collector) if url else 0
    oldest = (
        AuditEvent.objects.filter(sequence__gt=through).order_by("sequence").values_list("timestamp", flat=True).first()
    )
    last = AuditShipment.objects.filter(collector=collector).order_by("-sent_at", "-id").first() if url else None
    return {
        "collector": collector,
        "sealed_through": head,
        "acknowledged_through": through,
        "unshipped_events": max(head - through, 0),
        "lag_seconds": int((now - oldest).total_seconds()) if oldest else 0,
        "last_attempt": (
            {
                "first_sequence": last.first_sequence,
                "last_sequence": last.last_sequence,
                "sent_at": last.sent_at.isoformat(),
                "http_status": last.http_status,
                "acknowledged_at": last.acknowledged_at.isoformat() if last.acknowledged_at else None,
                "error": last.error,
            }
            if last
            else None
        ),
    }
