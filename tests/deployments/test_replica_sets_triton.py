"""A replica set of two on two real local tritonservers: the scheduler spreads it, the reconcile
loads each replica, both reach ACTIVE and answer (issue 16, docs/fleet.md). Also the time from a
deploy request to ACTIVE for the demo model, measured in a small loop."""

from __future__ import annotations

import contextlib
import statistics
import time

import pytest

from apps.deployments import services
from apps.deployments.models import Desired, Observed
from inference_backend.client import TritonClient, TritonError
from inference_backend.demo_model import build_demo_onnx
from tests.factories import InferenceServerFactory, ModelVersionFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

NAME = "fleet-demo"
PHI = {"zone": "phi"}


@pytest.fixture
def pair(triton, triton_b):
    servers = [
        InferenceServerFactory(name="triton-a", http_url=triton.http_url, labels={"zone": "phi"}, memory_mb=4096),
        InferenceServerFactory(name="triton-b", http_url=triton_b.http_url, labels={"zone": "phi"}, memory_mb=4096),
        InferenceServerFactory(name="public-1", labels={"zone": "public"}),  # never chosen: wrong zone
    ]
    yield servers
    for server in (triton, triton_b):
        with TritonClient(server.http_url) as client, contextlib.suppress(TritonError):  # not loaded: fine
            client.unload_model(NAME)


def _converge(rs) -> list:
    for dep in rs.deployments.all():
        services.reconcile_deployment(dep.pk)
    return list(rs.deployments.select_related("server").order_by("server__name"))


def test_a_set_of_two_reaches_active_on_both_servers(pair, staff_user):
    mv = ModelVersionFactory(model_name=NAME, data=build_demo_onnx(), actor=staff_user)

    rs = services.request_replica_set(
        model_version_id=mv.pk, replicas=2, labels={"zone": "phi"}, memory_mb=1024, actor=staff_user
    )
    deps = _converge(rs)

    assert [(d.server.name, d.observed_state) for d in deps] == [
        ("triton-a", Observed.ACTIVE),
        ("triton-b", Observed.ACTIVE),
    ], [d.last_error for d in deps]
    for dep in deps:
        with TritonClient(dep.server.http_url) as client:
            assert client.model_ready(dep.triton_name)

    rs = services.scale_replica_set(replica_set_id=rs.pk, replicas=1, actor=staff_user)
    deps = _converge(rs)
    assert sorted((d.desired_state, d.observed_state) for d in deps) == [
        (Desired.ACTIVE, Observed.ACTIVE),
        (Desired.INACTIVE, Observed.INACTIVE),
    ]


def test_deploy_request_to_active_for_the_demo_model(pair, staff_user, capsys):
    """Request → ACTIVE (placement, the load on Triton, the smoke inference), reconciled here, in
    process, as the Celery worker does. Figures printed for docs/fleet.md and bench/RESULTS.md."""
    mv = ModelVersionFactory(model_name=NAME, data=build_demo_onnx(), actor=staff_user)
    one, two = [], []
    for _ in range(3):  # a median of three in the suite; bench/fleet.py measures the target's p50 over more
        for replicas, figures in ((1, one), (2, two)):
            started = time.perf_counter()
            rs = services.request_replica_set(model_version_id=mv.pk, replicas=replicas, labels=PHI, actor=staff_user)
            deps = _converge(rs)
            figures.append(time.perf_counter() - started)
            assert {d.observed_state for d in deps} == {Observed.ACTIVE}, [d.last_error for d in deps]
            services.retire_replica_set(replica_set_id=rs.pk, actor=staff_user)
            _converge(rs)
    with capsys.disabled():
        for label, figures in (("set of 1", one), ("set of 2 (sequential loads)", two)):
            print(
                f"\ndeploy request → ACTIVE, demo model, {label}: p50 {statistics.median(figures):.2f} s, "
                f"min {min(figures):.2f} s, max {max(figures):.2f} s over {len(figures)} runs"
            )
    assert statistics.median(one) <= 5.0
