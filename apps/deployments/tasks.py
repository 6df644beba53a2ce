"""Celery tasks: thin wrappers that load by id and call one service."""

import random

from celery import shared_task

from apps.core.context import bound_request_id
from inference_backend.client import TritonUnavailable

from . import services

MAX_RETRIES = 5


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def reconcile_deployment_task(self, deployment_id: int, request_id: str = "") -> str:
    """Converge one deployment. Transient Triton failures retry with backoff and jitter; when the
    retries run out the deployment ends FAILED with the reason."""
    with bound_request_id(request_id):
        try:
            dep = services.reconcile_deployment(deployment_id)
        except TritonUnavailable as err:
            if self.request.retries >= MAX_RETRIES:
                services.fail_deployment(deployment_id, f"Triton unreachable after {MAX_RETRIES} retries: {err}")
                return "failed"
            raise self.retry(exc=err, countdown=min(60, 2**self.request.retries) + random.random()) from err
        return dep.observed_state if dep else "skipped"


@shared_task(acks_late=True)
def reconcile_all() -> int:
    """Periodic sweep: converge everything that is not yet converged, re-check ACTIVE ones."""
    ids = list(services.deployments_needing_reconcile())
    for pk in ids:
        reconcile_deployment_task.delay(pk)
    return len(ids)
