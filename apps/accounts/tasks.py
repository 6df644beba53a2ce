from celery import shared_task

from . import services


@shared_task(acks_late=True)
def disable_dormant_accounts() -> list[str]:
    """Periodic: disable accounts unused for SOVEREIGN_DORMANT_DAYS."""
    return services.disable_dormant_accounts()


@shared_task(acks_late=True)
def purge_expired_grants() -> int:
    """Periodic: delete expired per-model grants (each audited)."""
    return services.purge_expired_grants()
