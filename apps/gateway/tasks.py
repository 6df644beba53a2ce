from celery import shared_task

from . import services


@shared_task(acks_late=True)
def purge_expired_exchanges() -> dict:
    """Retention of retained chat exchanges (beat, hourly): expired rows deleted, idle day keys
    destroyed (apps.gateway.services.purge_expired_exchanges)."""
    return services.purge_expired_exchanges()
