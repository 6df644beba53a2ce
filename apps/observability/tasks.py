"""Celery tasks of the observability app."""

from celery import shared_task


@shared_task(acks_late=True)
def roll_up_calls_task() -> int:
    """Periodic (beat, OBSERVABILITY_ROLLUP_SECONDS): add newly sealed gateway calls to the series."""
    from .services import roll_up_calls

    return roll_up_calls().events
