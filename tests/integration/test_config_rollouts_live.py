"""Batching configuration rollouts on real tritonservers, through the API, with a caller calling the
model through the data plane all along (docs/rollouts.md, "Batching configuration rollouts"):

- a set of one replica and no room for a surge: the replica is reloaded in place (Triton keeps serving
  the old config until the new one is loaded) and the rollout promoted with 0 failed calls, Triton then
  serving the new config;
- a config whose queue delay breaks the p95 SLO, canaried on a surge replica on a second server: rolled
  back by the controller on that replica's own figures, the surge retired, audited, 0 failed calls."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.deployments.models import Deployment, Observed, ReplicaSet, RolloutState
from apps.deployments.transport import client_for
from apps.registry.models import Model
from inference_backend.demo_model import build_test_onnx
from tests.conftest import grant
from tests.integration.test_rollouts_live import (  # noqa: F401 - fixtures
    Caller,
    _controller_until,
    _deploy_active,
    _server,
    _upload,
    dataplane,
    operator,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _live_model(api, name, triton, user, token, plane) -> tuple[Caller, int]:
    v1 = _upload(api, name, build_test_onnx(4, 3, seed=41))
    dep = _deploy_active(api, v1, _server(api, triton.http_url, f"{name}-a"))
    grant(user, Model.objects.get(name=name))
    plane.sync_policy()
    caller = Caller(plane.url, name, token)
    caller.start()
    wait_for(lambda: caller.ok >= 5, 60, what="the first calls")
    return caller, dep


def _triton_config(dep_id: int) -> dict:
    dep = Deployment.objects.select_related("server", "model", "model_version").get(pk=dep_id)
    with client_for(dep.server.http_url, 10.0) as client:
        return client.model_config(dep.triton_name)


def test_config_reloaded_in_place_drops_no_call(triton, celery_worker, live_server, dataplane, operator):  # noqa: F811
    user, token, api = operator
    caller, dep = _live_model(api, "tune-inplace", triton, user, token, dataplane)
    rs = Deployment.objects.get(pk=dep).replica_set_id
    before = _triton_config(dep)
    assert before["dynamic_batching"].get("max_queue_delay_microseconds", 0) != 2000
    try:
        resp = api.post(
            "/api/v1/deployments/rollouts/",
            {"model": "tune-inplace", "replica_set": rs, "hold_seconds": 2, "min_calls": 5,
             "batching": {"max_batch_size": 16, "max_queue_delay_us": 2000, "preferred_batch_sizes": [2]},
             "slo_max_error_rate": 0.0, "slo_max_p95_ms": 5000},
            format="json",
        )  # fmt: skip
        assert resp.status_code == 201, resp.json()
        body = resp.json()
        assert body["kind"] == "config" and body["config"]["surge"] is None, body
        assert body["config_diff"]["max_queue_delay_us"] == [100, 2000]
        rollout = _controller_until(body["id"], {RolloutState.PROMOTED, RolloutState.ROLLED_BACK}, 120)
        assert rollout.state == RolloutState.PROMOTED, rollout.reason
        seen = caller.calls()
        wait_for(lambda: caller.calls() >= seen + 20, 60, what="calls after the promotion")
    finally:
        caller.finish()
    print(f"in-place reload: {caller.ok} calls, {caller.failed} failed")  # noqa: T201 - the figure
    assert caller.failed == 0, caller.errors[:5]
    after = _triton_config(dep)
    assert after["max_batch_size"] == 16
    assert int(after["dynamic_batching"]["max_queue_delay_microseconds"]) == 2000
    assert after["dynamic_batching"]["preferred_batch_size"] == [2]
    assert Deployment.objects.get(pk=dep).observed_state == Observed.ACTIVE
    assert AuditEvent.objects.filter(event_type="deployment.reconfigure", target_id=str(dep), outcome="success")
    shown = api.get(f"/api/v1/deployments/rollouts/{rollout.pk}/").json()
    assert [r["deployment"] for r in shown["replicas"]] == [dep] and shown["replicas"][0]["new_config"]


def test_slow_config_on_a_surge_is_rolled_back(triton, triton_b, celery_worker, live_server, dataplane, operator):  # noqa: F811
    user, token, api = operator
    caller, dep = _live_model(api, "tune-slow", triton, user, token, dataplane)
    _server(api, triton_b.http_url, "tune-slow-b")  # room for a surge replica
    rs = Deployment.objects.get(pk=dep).replica_set_id
    before = _triton_config(dep)
    try:
        resp = api.post(
            "/api/v1/deployments/rollouts/",
            {"model": "tune-slow", "replica_set": rs, "hold_seconds": 120, "min_calls": 3,
             # a batch of 2 waits the whole delay for a preferred batch of 8 that never comes
             "batching": {"max_queue_delay_us": 1_000_000, "preferred_batch_sizes": [8]},  # the ceiling: 1 s
             "slo_max_error_rate": 0.05, "slo_max_p95_ms": 500},
            format="json",
        )  # fmt: skip
        assert resp.status_code == 201, resp.json()
        body = resp.json()
        surge = body["config"]["surge"]
        assert surge is not None and body["config"]["canary"] == [surge]
        rollout = _controller_until(body["id"], {RolloutState.ROLLED_BACK, RolloutState.PROMOTED}, 180)
        assert rollout.state == RolloutState.ROLLED_BACK, rollout.reason
        assert "p95" in rollout.reason, rollout.reason
        wait_for(lambda: Deployment.objects.get(pk=surge).observed_state == Observed.INACTIVE, 60, what="surge gone")
        seen = caller.calls()
        wait_for(lambda: caller.calls() >= seen + 20, 60, what="calls after the rollback")
    finally:
        caller.finish()
    print(f"slow config rolled back: {caller.ok} calls, {caller.failed} failed")  # noqa: T201 - the figure
    assert caller.failed == 0, caller.errors[:5]
    event = AuditEvent.objects.get(event_type="deployment.rollout.rollback", target_id=str(rollout.pk))
    assert event.error_code == "slo_breached" and event.details["figures"]["calls"] >= 3
    assert event.details["retired_surge"] == surge
    assert _triton_config(dep) == before  # the live replica never changed
    assert ReplicaSet.objects.get(pk=rs).replicas == 1
