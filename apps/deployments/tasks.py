"""Celery tasks: thin wrappers that load by id and call one service."""

import random

from celery import shared_task
from django.conf import settings

from apps.core.context import bound_request_id
from inference_backend.client import TritonUnavailable

from . import services
from .models import InferenceServer


@shared_task(bind=True, acks_late=True, max_retries=None)
def reconcile_deployment_task(self, deployment_id: int, request_id: str = "") -> str:
    """Converge one deployment. Transient Triton failures retry with backoff and jitter; when the
    retries run out the deployment ends FAILED with the reason."""
    with bound_request_id(request_id):
        try:
            dep = services.reconcile_deployment(deployment_id)
        except TritonUnavailable as err:
            retries = self.request.retries
            if retries >= settings.DEPLOY_MAX_RETRIES:
                services.fail_deployment(deployment_id, f"Triton unreachable after {retries} retries: {err.message}")
                return "failed"
            delay = min(60.0, settings.DEPLOY_RETRY_BASE_SECONDS * 2**retries) * (0.5 + random.random() / 2)
            services.note_reconcile_retry(deployment_id, retries + 1, delay)  # shown on its page (issue 17)
            raise self.retry(exc=err, countdown=delay) from err
        return dep.observed_state if dep else "skipped"


@shared_task(acks_late=True)
def reconcile_all() -> int:
    """Periodic sweep: record which servers answer, converge everything not yet converged and
    re-check ACTIVE deployments (a restarted Triton has lost its models)."""
    for server_id in InferenceServer.objects.values_list("pk", flat=True):
        services.probe_server(server_id)
    ids = list(services.deployments_needing_reconcile())
    for pk in ids:
        reconcile_deployment_task.delay(pk)
    return len(ids)


@shared_task(acks_late=True)
def advance_rollouts_task() -> dict:
    """The rollout controller's tick (beat, every ROLLOUT_ADVANCE_SECONDS): docs/rollouts.md."""
    return {str(pk): action for pk, action in services.advance_rollouts().items()}


@shared_task(acks_late=True)
def autoscale_task() -> dict:
    """The autoscaler's tick (beat, every AUTOSCALE_SECONDS): docs/fleet.md, "Autoscaling"."""
    return {str(pk): action for pk, action in services.autoscale_tick().items()}


@shared_task(acks_late=True)
def run_batching_sweep_task(sweep_id: int, request_id: str = "") -> str:
    """Run one batching sweep (docs/tuning.md); a sweep already claimed or gone is skipped."""
    from . import tuning

    with bound_request_id(request_id):
        sweep = tuning.run_batching_sweep(sweep_id)
    return sweep.state if sweep else "skipped"
