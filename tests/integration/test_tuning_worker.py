"""A batching sweep requested as the API does it, run by a real Celery worker on a real tritonserver
(docs/tuning.md): the task is enqueued after commit, the worker claims the row, measures, chooses,
unloads the dedicated replica and attributes its audit events to the person who asked."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.deployments import services, tuning
from apps.deployments.models import BatchingSweep, SweepState
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_demo_onnx
from tests.factories import InferenceServerFactory, ModelVersionFactory
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_worker_runs_a_sweep_to_its_choice(celery_worker, triton, staff_user):
    InferenceServerFactory(name="live-w")  # the live replica's server (never reconciled here)
    mv = ModelVersionFactory(model_name="tune-worker", data=build_demo_onnx(), actor=staff_user)
    rs = services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=staff_user)
    InferenceServerFactory(name="tune-w", http_url=triton.http_url)

    sweep = tuning.request_batching_sweep(
        replica_set_id=rs.pk, arrival="synthetic", rate_per_second=30, slo_p99_ms=3000,
        grid={"max_batch_size": [1, 8], "max_queue_delay_us": [0, 1000], "instance_count": [1]},
        repeats=2, point_seconds=1, warmup_seconds=0.2, actor=staff_user,
    )  # fmt: skip

    done = wait_for(
        lambda: BatchingSweep.objects.filter(pk=sweep.pk, state__in=[SweepState.DONE, SweepState.FAILED]).first(),
        240,
        what="the worker to finish the sweep",
    )
    assert done.state == SweepState.DONE, done.error
    assert len(done.points) == 4 and all(len(p["runs"]) == 2 for p in done.points)
    assert done.chosen is not None and done.reason
    with TritonClient(triton.http_url) as client:
        assert not client.model_ready(done.tune_name)
    kinds = ["deployment.sweep.start", "deployment.sweep.finish"]
    events = AuditEvent.objects.filter(target_id=str(sweep.pk), event_type__in=kinds)
    assert events.count() == 2 and {e.actor_id for e in events} == {staff_user.pk}
