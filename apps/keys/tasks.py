"""Celery tasks for key rotation: thin wrappers that call one service."""

from celery import shared_task

from apps.core.context import bound_request_id

from . import services


@shared_task(acks_late=True)
def rewrap_task(rotation_id: int, request_id: str = "") -> str:
    """Re-wrap the data keys of one rotation; safe to run twice (it carries on where it stopped)."""
    with bound_request_id(request_id):
        return services.run_rotation(rotation_id).state


@shared_task(acks_late=True)
def resume_stalled_rotations() -> int:
    """Periodic: queue again any rotation whose worker died (its lease ran out)."""
    ids = services.stalled_rotations()
    for pk in ids:
        rewrap_task.delay(pk)
    return len(ids)
