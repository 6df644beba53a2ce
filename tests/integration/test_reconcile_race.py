"""Two Celery workers handed the same deployment at once (issue 16: reconcile claims are safe under two
workers, as on two portal nodes): one converges it on the real Triton, the other leaves it alone."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Observed
from apps.registry.services import register_model_version
from inference_backend.demo_model import build_test_onnx

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_two_workers_reconciling_one_deployment_load_it_once(triton, monkeypatch):
    from apps.deployments import tasks

    # the two threads are the workers: no Celery worker another test left running takes it first
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: None)
    mv = register_model_version(model_name="race", data=build_test_onnx(4, 3, seed=71), actor=None)
    server = deployments.register_server(name="triton-race", http_url=triton.http_url, actor=None)
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=None)
    start = threading.Barrier(2)
    results: list = []

    def worker() -> None:
        try:
            start.wait()
            results.append(deployments.reconcile_deployment(dep.pk))
        finally:
            connection.close()  # each thread has its own database connection

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)

    assert len(results) == 2
    assert sum(r is None for r in results) == 1, "exactly one worker may hold the claim"
    dep = Deployment.objects.get(pk=dep.pk)
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    assert dep.claimed_until is None
    assert list(dep.transitions.values_list("to_state", flat=True)) == [
        Observed.PENDING,
        Observed.LOADING,
        Observed.ACTIVE,
    ]
