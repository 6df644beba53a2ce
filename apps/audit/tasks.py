"""Celery tasks of the audit log: the sealer (every settings.AUDIT_SEAL_SECONDS, 10 s by default:
nothing waits on it, unsealed events are stored and counted as pending), the collapsed-refusal
flush (every 30 seconds) and the retention purge (daily)."""

from celery import shared_task

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
