from celery import shared_task

from . import services


@shared_task(acks_late=True)
def purge_expired_exchanges() -> dict:
    """Retention of retained chat exchanges (beat, hourly): expired rows deleted, idle day keys
    destroyed (apps.gateway.services.purge_expired_exchanges)."""
    return services.purge_expired_exchanges()


@shared_task(acks_late=True)
def evaluate_monitor_alerts() -> dict:
    """Periodic (beat, SOVEREIGN_MONITOR_ALERT_SECONDS): raise and resolve the monitoring alerts
    (apps.gateway.alerting.evaluate_alerts; docs/metrics.md)."""
    from .alerting import evaluate_alerts

    return evaluate_alerts()
