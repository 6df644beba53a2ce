"""Celery tasks of the compliance app: thin wrappers that load by id and call one service."""

from celery import shared_task
from django.contrib.auth import get_user_model

from apps.core.context import bound_request_id


@shared_task(acks_late=True)
def evaluate_all() -> int:
    """Periodic: evaluate every attached profile, keep the history, alert on regressions."""
    from .effective import attached_profiles
    from .evaluation import run_evaluation

    if not attached_profiles():
        return 0
    return run_evaluation(trigger="schedule").pk


@shared_task(acks_late=True, autoretry_for=(ConnectionError, TimeoutError), retry_backoff=True, max_retries=3)
def generate_report_task(report_id: int, actor_id: int | None = None, request_id: str = "") -> str:
    """Render and sign one report; attributed to the user who asked for it."""
    from .reports.generate import generate_report

    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    with bound_request_id(request_id):
        report = generate_report(report_id, actor=actor)
    return report.state if report else "skipped"
