"""Autoscaling on two real tritonservers (issue 16, docs/fleet.md "Autoscaling"): callers loading a
replica set's only replica push it to two (its max, which then holds), placed by the scheduler and
loaded by the Celery worker; idle for the cooldown it goes back to its min; a placement the fleet
cannot make leaves the set as it is, audited. Beat's part (the tick) runs here, every 0.5 s; the
load is read from each server's real Triton metrics (pending requests of the version's Triton name)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.db import connections
from django.utils import timezone
from onnx import TensorProto, helper, numpy_helper
from rest_framework.test import APIClient

from apps.accounts.roles import ADMIN
from apps.accounts.services import issue_token
from apps.audit.models import AuditEvent
from apps.deployments import services
from apps.deployments.models import Deployment, Desired, Observed, ReplicaSet
from inference_backend.demo_model import IR_VERSION, OPSET
from tests.conftest import make_user
from tests.factories import ModelVersionFactory
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

COOLDOWN = 3  # seconds: small, so that the test sees a whole cycle


@pytest.fixture
def operator():
    user = make_user("scaler", ADMIN)
    _, token = issue_token(user=user, name="it", scopes=["read", "manage"], actor=user, otp_verified_at=timezone.now())
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return user, api


@pytest.fixture
def fleet(triton, triton_b, operator):
    user, _ = operator
    servers = [
        services.register_server(name=name, http_url=t.http_url, metrics_url=t.metrics_url, labels=labels, actor=user)
        for name, t, labels in (("as-a", triton, {"zone": "phi"}), ("as-b", triton_b, {"zone": "lab"}))
    ]
    yield servers
    connections.close_all()


def slow_onnx(layers: int = 40, width: int = 512) -> bytes:
    """INPUT FP32 [batch, 4] -> OUTPUT FP32 [batch, 3] through `layers` 512×512 MatMul+Tanh: about 10 ms a
    row on one core, so that a few callers keep requests waiting in Triton's queue."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["INPUT", "W_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "W"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes += [
        helper.make_node("MatMul", [f"h{layers}", "W_out"], ["raw"]),
        helper.make_node("Softmax", ["raw"], ["OUTPUT"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(4, width)).astype(np.float32), "W_in"),
            numpy_helper.from_array((rng.normal(size=(width, width)) / width**0.5).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(width, 3)).astype(np.float32), "W_out"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sovereign")
    model.ir_version = IR_VERSION
    return model.SerializeToString()


class Load:
    """`callers` threads calling one replica on Triton directly, one call after another, until stopped."""

    def __init__(self, url: str, model: str, callers: int = 12):
        self.url, self.model = url.removeprefix("http://"), model
        self.stop = threading.Event()
        self.ok = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(callers)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(url=self.url, network_timeout=60)
        x = np.ones((1, 4), np.float32)
        while not self.stop.is_set():
            inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            client.infer(self.model, [inp])
            self.ok += 1

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def _replicas(rs_id: int) -> list[Deployment]:
    return list(
        Deployment.objects.filter(replica_set_id=rs_id, desired_state=Desired.ACTIVE)
        .select_related("server", "model", "model_version")
        .order_by("pk")
    )


def _all_active(rs_id: int, count: int, timeout: float = 180) -> list[Deployment]:
    def ready():
        deps = _replicas(rs_id)
        failed = [d.last_error for d in deps if d.observed_state == Observed.FAILED]
        assert not failed, failed
        return deps if len(deps) == count and all(d.observed_state == Observed.ACTIVE for d in deps) else None

    return wait_for(ready, timeout, what=f"{count} ACTIVE replica(s) of set {rs_id}", interval=0.3)


def _tick_until(rs_id: int, condition, timeout: float, what: str) -> ReplicaSet:
    """Beat's part: tick the autoscaler every 0.5 s until `condition(set)` holds."""

    def ticked():
        services.autoscale_tick()
        rs = ReplicaSet.objects.get(pk=rs_id)
        return rs if condition(rs) else None

    try:
        return wait_for(
            ticked,
            timeout,
            what=lambda: f"{what}: {ReplicaSet.objects.get(pk=rs_id).autoscale_state.get('last')}",
            interval=0.5,
        )
    finally:
        connections.close_all()


def _set_up(name: str, operator, *, labels: dict, max_replicas: int) -> ReplicaSet:
    user, api = operator
    mv = ModelVersionFactory(model_name=name, data=slow_onnx(), actor=user)
    rs = services.request_replica_set(model_version_id=mv.pk, replicas=1, labels=labels, actor=user)
    _all_active(rs.pk, 1)
    resp = api.patch(
        f"/api/v1/deployments/replica-sets/{rs.pk}/autoscale/",
        {
            "enabled": True,
            "metric": "in_flight",
            "target": 2,
            "min_replicas": 1,
            "max_replicas": max_replicas,
            "cooldown_seconds": COOLDOWN,
        },
        format="json",
    )
    assert resp.status_code == 200, resp.json()
    return rs


def _retire(rs: ReplicaSet, user) -> None:
    services.retire_replica_set(replica_set_id=rs.pk, actor=user)
    wait_for(
        lambda: not Deployment.objects.filter(replica_set=rs).exclude(observed_state=Observed.INACTIVE).exists(),
        120,
        what="the set's replicas to be unloaded",
    )


def test_load_scales_a_set_to_its_max_and_idle_brings_it_back_to_min(fleet, celery_worker, operator):
    user, _ = operator
    rs = _set_up("autoscale-live", operator, labels={}, max_replicas=2)
    first = _replicas(rs.pk)[0]
    load = Load(first.server.http_url, first.triton_name)
    try:
        up = _tick_until(rs.pk, lambda s: s.replicas == 2, 120, "the load to add a replica")
        deps = _all_active(rs.pk, 2)
        assert {d.server.name for d in deps} == {"as-a", "as-b"}
        event = AuditEvent.objects.filter(event_type="deployment.replica_set.scale", target_id=str(rs.pk)).latest("pk")
        figures = event.details["autoscale"]
        assert event.actor is None and event.details["after"] == {"replicas": 2}
        assert figures["metric"] == "in_flight" and figures["total"] > 2 and figures["wanted"] == 2

        # max holds: a whole cooldown later, still loaded, the autoscaler keeps 2
        _tick_until(
            rs.pk,
            lambda s: (
                (timezone.now() - up.scaled_at).total_seconds() > COOLDOWN
                and s.autoscale_state["last"]["outcome"] == "hold"
                and (s.autoscale_state["last"]["total"] or 0) > 2
            ),
            120,
            "a tick after the cooldown that sees the load and holds at the max",
        )
        assert ReplicaSet.objects.get(pk=rs.pk).replicas == 2
    finally:
        load.finish()
    assert load.ok > 0

    down = _tick_until(rs.pk, lambda s: s.replicas == 1, 120, "idle to bring the set back to its min")
    assert down.autoscale_state["last"]["outcome"] == "down"
    event = AuditEvent.objects.filter(event_type="deployment.replica_set.scale", target_id=str(rs.pk)).latest("pk")
    assert event.details["after"] == {"replicas": 1} and "wanted at most 1" in event.details["autoscale"]["reason"]
    gone = Deployment.objects.filter(replica_set=rs, desired_state=Desired.INACTIVE).get()
    wait_for(
        lambda: Deployment.objects.get(pk=gone.pk).observed_state == Observed.INACTIVE,
        120,
        what="the surplus replica to be unloaded after its drain",
    )
    _retire(rs, user)


def test_a_placement_the_fleet_cannot_make_leaves_the_set_as_it_is(fleet, celery_worker, operator):
    user, _ = operator
    rs = _set_up("autoscale-solo", operator, labels={"zone": "phi"}, max_replicas=2)  # only as-a is in zone phi
    first = _replicas(rs.pk)[0]
    load = Load(first.server.http_url, first.triton_name)
    try:
        _tick_until(
            rs.pk,
            lambda s: s.autoscale_state.get("last", {}).get("outcome") == "refused",
            120,
            "the load to ask for a replica the fleet cannot place",
        )
    finally:
        load.finish()
    refusals = AuditEvent.objects.filter(event_type="deployment.replica_set.scale.rejected", target_id=str(rs.pk))
    assert refusals.count() == 1
    refusal = refusals.get()
    assert refusal.actor is None and refusal.error_code == "placement_impossible"
    assert "as-b: lacks label zone=phi" in refusal.details["reasons"]
    assert refusal.details["autoscale"]["wanted"] == 2
    assert [d.server.name for d in _replicas(rs.pk)] == ["as-a"]
    assert ReplicaSet.objects.get(pk=rs.pk).replicas == 1
    _retire(rs, user)
