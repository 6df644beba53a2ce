"""Alert delivery: the audit events that alert (details `alert: true`, e.g. break-glass, the sealed
superuser's use, a lockout, a failed-login rate rule, a test alert) are POSTed as JSON to the alert
channel, a webhook (SOVEREIGN_ALERT_WEBHOOK_URL), docs/alerts.md.

record_event calls `queue_for` in the event's own transaction: an AlertDelivery row (the outbox) is
written beside the event and the Celery task is enqueued after commit, so a rolled-back action
alerts nobody and a committed one is never lost (the sweep resends what the broker dropped). The
channel's address obeys the policy of Triton server URLs (inference_backend.netpolicy): link-local,
metadata, multicast and reserved addresses are refused, SOVEREIGN_ALERT_ALLOWED_NETWORKS is an
allow-list, loopback is allowed, and in production anything but loopback needs https (verified
against the system trust store, or SOVEREIGN_ALERT_CA_FILE when set). Each connection re-checks
the resolved address (DNS rebinding).
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from urllib3.exceptions import HTTPError, LocationParseError
from urllib3.util import Timeout, parse_url

from apps.core.errors import ServiceError, _
from inference_backend.netpolicy import AddressRefused, ServerPolicy, parse_networks
from inference_backend.transport import GuardedPoolManager, TlsConfig

from .catalogue import EVENT_TYPES
from .models import AlertDelivery, AuditEvent

log = logging.getLogger(__name__)
Status = AlertDelivery.Status
# Delivery outcomes are recorded as events that never alert themselves (no loop).
OUTCOME_EVENTS = frozenset({"alert.delivered", "alert.failed"})
TRANSIENT = "transient"


def is_alerting(event_type: str, details: dict | None) -> bool:
    return event_type not in OUTCOME_EVENTS and bool((details or {}).get("alert"))


def channel_url() -> str:
    return (settings.ALERT_WEBHOOK_URL or "").strip()


def channel_id(url: str | None = None) -> str:
    """How deliveries name a channel: scheme, host and port, and a fingerprint of the whole URL
    (its path may carry a token, so the URL itself is never stored). "" when none is configured."""
    url = channel_url() if url is None else url
    if not url:
        return ""
    try:
        parsed = parse_url(url)
        where = f"{parsed.scheme}://{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
    except LocationParseError:
        where = "invalid-url"
    return f"{where} #{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def alert_policy() -> ServerPolicy:
    """The Triton server policy's rules, with the alert channel's own allow-list. In production
    off loopback: https with certificate verification (system store or SOVEREIGN_ALERT_CA_FILE)."""
    return ServerPolicy(
        allowed_networks=parse_networks(settings.ALERT_ALLOWED_NETWORKS),
        require_tls=settings.PRODUCTION,
        ca_pinned=True,  # urllib3 verifies every certificate (CERT_REQUIRED) against the store or the CA file
    )


def check_channel_url(url: str) -> None:
    """Refuse an alert URL the policy does not allow (ServiceError with the policy's stable code)."""
    try:
        parsed = parse_url(url)
    except LocationParseError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ServiceError("invalid_alert_url", _("the alert webhook URL is http(s)://host[:port]/path"), field="url")
    policy = alert_policy()
    try:
        try:
            addresses = policy.resolve(parsed.host, parsed.port)
        except (socket.gaierror, UnicodeError) as err:
            raise ServiceError(
                "alert_host_unresolved",
                _("%(host)s does not resolve: %(err)s") % {"host": parsed.host, "err": err},
                field="url",
            ) from err
        policy.check_transport(parsed.scheme, parsed.host, addresses)
    except AddressRefused as err:
        raise ServiceError(err.code, _("alert channel: %(message)s") % {"message": err.message}, field="url") from err


def _payload(event: AuditEvent) -> dict:
    return {
        "event_id": event.pk,
        "event_type": event.event_type,
        "summary": EVENT_TYPES.get(event.event_type, ""),
        "timestamp": event.timestamp.isoformat(),
        "actor": event.actor_name,
        "actor_roles": event.actor_roles,
        "target": {"type": event.target_type, "id": event.target_id, "display": event.target_display},
        "outcome": event.outcome,
        "error_code": event.error_code,
        "source_ip": event.source_ip,
        "request_id": event.request_id,
        "details": event.details,
    }


def queue_for(event: AuditEvent) -> AlertDelivery:
    """The outbox row of an alerting event, in the event's transaction; sent after commit. With no
    channel configured the row is failed at once (nobody can be told: the checks report it)."""
    channel = channel_id()
    delivery = AlertDelivery.objects.create(
        created_at=event.timestamp,
        event=event,
        event_type=event.event_type,
        channel=channel,
        status=Status.PENDING if channel else Status.FAILED,
        error="" if channel else "no alert channel configured (SOVEREIGN_ALERT_WEBHOOK_URL)",
        payload=_payload(event),
    )
    if channel:
        transaction.on_commit(lambda: enqueue(delivery.pk))
    return delivery


def enqueue(delivery_id: int) -> None:
    from .tasks import deliver_alert_task

    try:
        deliver_alert_task.delay(delivery_id)
    except Exception:  # noqa: BLE001 - the broker is down: the row stays pending and the sweep resends it
        log.warning("could not enqueue alert delivery %s; the sweep will resend it", delivery_id, exc_info=True)


def _claim(delivery_id: int) -> bool:
    now = timezone.now()
    claimable = AlertDelivery.objects.filter(pk=delivery_id, status__in=[Status.PENDING, Status.RETRYING])
    if claimable.update(status=Status.SENDING, sent_at=now):
        return True
    stale = AlertDelivery.objects.filter(  # a worker died mid-send
        pk=delivery_id, status=Status.SENDING, sent_at__lt=now - timedelta(minutes=10)
    )
    return bool(stale.update(sent_at=now))


def attempt(delivery_id: int) -> str:
    """One delivery attempt: POST the alert, record when, the HTTP status and, on 2xx, when it was
    acknowledged. Returns the new status, or TRANSIENT when a retry may succeed (connection
    refused, timeout, 5xx, 429) and attempts remain. Permanent failures (no channel, a refused
    address, another 4xx) fail at once. The final outcome is itself audited."""
    if not _claim(delivery_id):
        return "skipped"
    delivery = AlertDelivery.objects.get(pk=delivery_id)
    url = channel_url()
    status, error, transient = None, "", False
    try:
        if not url:
            raise ServiceError("no_alert_channel", _("no alert channel configured (SOVEREIGN_ALERT_WEBHOOK_URL)"))
        check_channel_url(url)
        status = _post(url, {**delivery.payload, "alert_id": delivery.pk, "test": delivery.event_type == "alert.test"})
        transient = status >= 500 or status == 429
        error = "" if 200 <= status < 300 else f"the channel answered HTTP {status}"
    except ServiceError as err:
        error = f"{err.code}: {err.detail_en}"
    except (HTTPError, OSError) as err:
        error, transient = f"{type(err).__name__}: {err}"[:300], True
    return _record(delivery, url, status, error, transient)


def _post(url: str, body: dict) -> int:
    return post_json(url, body, user_agent="Sovereign-alerts/1")


def post_json(url: str, body: dict, *, user_agent: str) -> int:
    """POST `body` as JSON under the outbound policy (each connection re-checked), no redirects;
    the HTTP status. Raises urllib3's HTTPError or OSError when nothing answered."""
    tls = TlsConfig(ca_file=settings.ALERT_CA_FILE)
    with GuardedPoolManager(alert_policy(), tls, retries=False) as pool:
        response = pool.request(
            "POST",
            url,
            body=json.dumps(body, default=str).encode(),
            headers={"Content-Type": "application/json", "User-Agent": user_agent},
            timeout=Timeout(connect=settings.ALERT_TIMEOUT, read=settings.ALERT_TIMEOUT),
            redirect=False,
        )
        return response.status


def _record(delivery: AlertDelivery, url: str, status: int | None, error: str, transient: bool) -> str:
    from .services import record_event  # services imports this module

    now = timezone.now()
    delivery.attempts += 1
    delivery.sent_at, delivery.http_status, delivery.error, delivery.channel = now, status, error, channel_id(url)
    if not error:
        delivery.status, delivery.acknowledged_at = Status.DELIVERED, now
    elif transient and delivery.attempts < settings.ALERT_MAX_ATTEMPTS:
        delivery.status = Status.RETRYING
    else:
        delivery.status = Status.FAILED
    with transaction.atomic():
        delivery.save(
            update_fields=["attempts", "sent_at", "http_status", "error", "channel", "status", "acknowledged_at"]
        )
        if delivery.status != Status.RETRYING:
            record_event(
                "alert.delivered" if delivery.status == Status.DELIVERED else "alert.failed",
                actor=None,
                target_type="audit.alertdelivery",
                target_id=str(delivery.pk),
                target_display=delivery.event_type,
                outcome="success" if delivery.status == Status.DELIVERED else "failure",
                error_code="" if delivery.status == Status.DELIVERED else "alert_not_delivered",
                details={
                    "alert_event_id": delivery.event_id,
                    "channel": delivery.channel,
                    "attempts": delivery.attempts,
                    "http_status": status,
                    "error": error,
                },
            )
    return TRANSIENT if delivery.status == Status.RETRYING else delivery.status


def resend_stalled() -> int:
    """Re-enqueue deliveries the broker lost: pending for over 2 minutes (enqueue failed), retrying
    for over 15 minutes (a scheduled retry vanished), sending for over 10 minutes (a worker died)."""
    now = timezone.now()
    from django.db.models import Q

    stalled = AlertDelivery.objects.filter(
        Q(status=Status.PENDING, created_at__lt=now - timedelta(minutes=2))
        | Q(status=Status.RETRYING, sent_at__lt=now - timedelta(minutes=15))
        | Q(status=Status.SENDING, sent_at__lt=now - timedelta(minutes=10))
    ).values_list("pk", flat=True)[:500]
    ids = list(stalled)
    for pk in ids:
        enqueue(pk)
    return len(ids)
