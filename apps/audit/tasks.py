"""Celery tasks of the audit log: the sealer (every settings.AUDIT_SEAL_SECONDS, 10 s by default:
nothing waits on it, unsealed events are stored and counted as pending), the collapsed-refusal
flush (every 30 seconds) and the retention purge (daily)."""

import random

from celery import shared_task
from django.conf import settings

from . import chain, refusals, retention


@shared_task(acks_late=True, ignore_result=True)
def seal_audit_log() -> int:
    """Seal committed events into the chain and write a checkpoint when one is due."""
    return chain.seal_pending().sealed


@shared_task(acks_late=True, ignore_result=True)
def purge_expired_audit() -> int:
    """Archive and purge the sealed range older than retention, if any."""
    result = retention.purge_expired()
    return result.events if result else 0


@shared_task(acks_late=True, ignore_result=True)
def flush_refused_buckets() -> int:
    """Write the counted remainder of every closed bucket of unauthenticated refusals."""
    return refusals.flush_closed()


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver_alert_task(self, delivery_id: int) -> str:
    """Send one alert. A transient failure (connection refused, timeout, 5xx, 429) retries with
    backoff and jitter until SOVEREIGN_ALERT_MAX_ATTEMPTS attempts are recorded on the row."""
    from .services import deliver_alert

    outcome = deliver_alert(delivery_id)
    if outcome == "transient":
        delay = min(300.0, settings.ALERT_RETRY_BASE_SECONDS * 2**self.request.retries) * (0.5 + random.random() / 2)
        raise self.retry(countdown=delay)
    return outcome


@shared_task(acks_late=True, ignore_result=True)
def resend_stalled_alerts() -> int:
    """Periodic: resend alerts the broker lost (the outbox rows are the truth)."""
    from .services import resend_stalled_alerts as resend

    return resend()


@shared_task(acks_late=True, ignore_result=True)
def ship_audit_events() -> int:
    """Periodic: ship sealed events to the external collector (a failed batch is sent again on
    the next run, from the last acknowledged sequence)."""
    from .services import ship_audit_events as ship

    return ship()["shipped"]
