"""Rollouts on real tritonservers, through the API, with a caller calling the model through the data
plane all along: a canary and a blue-green switch promoted without one failed call, and a canary
whose version fails rolled back by the controller on the gateway's own figures within 30 s, audited.

Until versions load under their own Triton names (helper "tname"), v1 and v2 run on two servers.
Until the data plane honours traffic weights (helper "balance"), unversioned calls are split at
random across both versions' replicas while both are ACTIVE; the controller is judged on the weights
it writes and on the figures the gateway records."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.utils import timezone
from onnx import TensorProto, helper, numpy_helper
from rest_framework.test import APIClient

from apps.accounts.roles import ADMIN
from apps.accounts.services import issue_token
from apps.audit.models import AuditEvent
from apps.deployments import services
from apps.deployments.models import Deployment, Observed, ReplicaSet, Rollout, RolloutState
from apps.registry.models import Model
from inference_backend.demo_model import IR_VERSION, OPSET, build_test_onnx
from tests.conftest import grant, make_user
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def dataplane(live_server):
    """As tests/conftest.py's, with more time to start on a machine shared by many test runs."""
    from apps.gateway.dataplane.server import ServerThread

    server = ServerThread().start(timeout=120)
    yield server
    server.stop()


@pytest.fixture
def operator(settings):
    settings.ROLLOUT_DRAIN_SECONDS = 2.0
    user = make_user("operator", ADMIN)
    _, token = issue_token(
        user=user, name="it", scopes=["invoke", "read", "manage"], actor=user, otp_verified_at=timezone.now()
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return user, token, api


def batch_one_only_onnx() -> bytes:
    """INPUT FP32 [batch, 4] -> OUTPUT FP32 [batch, 3], like build_test_onnx, but reshaped to a batch
    of one inside: it passes the deploy's smoke inference (one row) and fails on any larger batch."""
    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Reshape", ["INPUT", "SHAPE"], ["one"]),
            helper.make_node("MatMul", ["one", "W"], ["raw"]),
            helper.make_node("Softmax", ["raw"], ["OUTPUT"], axis=-1),
        ],
        name="batch_one_only",
        inputs=[helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "SHAPE"),
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sovereign")
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def _upload(api, name: str, data: bytes) -> int:
    resp = api.post(
        f"/api/v1/registry/models/{name}/versions/", {"file": SimpleUploadedFile("m.onnx", data)}, format="multipart"
    )
    assert resp.status_code == 201, resp.json()
    return resp.json()["id"]


def _server(api, url: str, name: str) -> int:
    resp = api.post("/api/v1/deployments/servers/", {"name": name, "http_url": url}, format="json")
    assert resp.status_code == 201, resp.json()
    return resp.json()["id"]


def _deploy_active(api, version_id: int, server_id: int) -> int:
    resp = api.post(
        "/api/v1/deployments/deployments/", {"model_version": version_id, "server": server_id}, format="json"
    )
    assert resp.status_code == 202, resp.json()
    pk = resp.json()["id"]
    dep = wait_for(
        lambda: (d := Deployment.objects.get(pk=pk)).observed_state in (Observed.ACTIVE, Observed.FAILED) and d,
        180,
        what=f"deployment {pk} to settle",
    )
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    return pk


class Caller(threading.Thread):
    """Calls the model through the data plane, one call after another, until stopped; keeps count."""

    def __init__(self, url: str, model: str, token: str, batch: int = 2):
        super().__init__(daemon=True)
        self.client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
        self.model, self.auth = model, {"Authorization": f"Bearer {token}"}
        self.x = np.random.default_rng(1).normal(size=(batch, 4)).astype(np.float32)
        self.ok, self.failed, self.errors = 0, 0, []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            inp = httpclient.InferInput("INPUT", list(self.x.shape), "FP32")
            inp.set_data_from_numpy(self.x)
            try:
                self.client.infer(self.model, [inp], headers=dict(self.auth))
                self.ok += 1
            except Exception as err:  # noqa: BLE001 - counted and shown
                self.failed += 1
                self.errors.append(str(err)[:200])

    def calls(self) -> int:
        return self.ok + self.failed

    def finish(self) -> None:
        self.stop.set()
        self.join(30)


def _controller_until(rollout_id: int, states: set[str], timeout: float) -> Rollout:
    """Beat's part: tick the controller (every 0.5 s) until the rollout reaches one of `states`."""

    def ticked():
        services.advance_rollouts()
        r = Rollout.objects.get(pk=rollout_id)
        return r if r.state in states else None

    try:
        return wait_for(
            ticked,
            timeout,
            what=lambda: f"rollout {rollout_id} to reach {states}: {Rollout.objects.get(pk=rollout_id).reason}",
            interval=0.5,
        )
    finally:
        connections.close_all()


def _setup(api, name: str, triton, triton_b, v2_data: bytes, user, token, dataplane):
    v1 = _upload(api, name, build_test_onnx(4, 3, seed=31))
    _deploy_active(api, v1, _server(api, triton.http_url, f"{name}-a"))
    grant(user, Model.objects.get(name=name))
    dataplane.sync_policy()
    caller = Caller(dataplane.url, name, token)
    caller.start()
    wait_for(lambda: caller.ok >= 5, 60, what="the first calls to v1")
    v2 = _upload(api, name, v2_data)
    d2 = _deploy_active(api, v2, _server(api, triton_b.http_url, f"{name}-b"))
    return caller, v1, v2, d2


@pytest.mark.parametrize(("strategy", "steps"), [("canary", [25, 100]), ("blue_green", [100])])
def test_rollout_through_the_api_drops_no_call(
    strategy, steps, triton, triton_b, celery_worker, live_server, dataplane, operator
):
    user, token, api = operator
    name = f"upgrade-{strategy.replace('_', '-')}"
    v2_data = build_test_onnx(4, 3, seed=32)
    caller, v1, v2, d2 = _setup(api, name, triton, triton_b, v2_data, user, token, dataplane)
    try:
        resp = api.post(
            "/api/v1/deployments/rollouts/",
            {"model": name, "to_version": v2, "strategy": strategy, "steps": steps, "hold_seconds": 2,
             "min_calls": 5, "slo_max_error_rate": 0.0, "slo_max_p95_ms": 5000},
            format="json",
        )  # fmt: skip
        assert resp.status_code == 201, resp.json()
        rollout_id = resp.json()["id"]
        rollout = _controller_until(rollout_id, {RolloutState.PROMOTED, RolloutState.ROLLED_BACK}, 120)
        assert rollout.state == RolloutState.PROMOTED, rollout.reason
        assert api.get(f"/api/v1/deployments/rollouts/{rollout_id}/").json()["weights"] == {"v1": 0, "v2": 100}
        # the old replica leaves routing, then is unloaded after the drain; calls go on meanwhile
        old = Deployment.objects.get(model_version_id=v1)
        wait_for(lambda: Deployment.objects.get(pk=old.pk).observed_state == Observed.INACTIVE, 60, what="v1 unloaded")
        seen = caller.calls()
        wait_for(lambda: caller.calls() >= seen + 20, 60, what="calls after v1 was unloaded")
    finally:
        caller.finish()
    print(f"{strategy}: {caller.ok} calls, {caller.failed} failed")  # noqa: T201 - the figure
    assert caller.failed == 0, caller.errors[:5]
    assert caller.ok > 50
    events = AuditEvent.objects.filter(target_type="deployments.rollout", target_id=str(rollout_id))
    assert set(events.values_list("event_type", flat=True)) == {
        "deployment.rollout.start",
        "deployment.rollout.step",
        "deployment.rollout.promote",
    }
    assert events.filter(event_type="deployment.rollout.step").count() == len(steps)
    assert Deployment.objects.get(pk=d2).observed_state == Observed.ACTIVE
    assert ReplicaSet.objects.get(model_version_id=v1).state == "retired"


def test_failing_canary_is_rolled_back_within_30_s(triton, triton_b, celery_worker, live_server, dataplane, operator):
    user, token, api = operator
    caller, v1, v2, d2 = _setup(api, "regress", triton, triton_b, batch_one_only_onnx(), user, token, dataplane)
    try:
        resp = api.post(
            "/api/v1/deployments/rollouts/",
            {"model": "regress", "to_version": v2, "steps": [10, 50, 100], "hold_seconds": 60, "min_calls": 3,
             "slo_max_error_rate": 0.05},
            format="json",
        )  # fmt: skip
        assert resp.status_code == 201, resp.json()
        rollout_id = resp.json()["id"]
        running = _controller_until(rollout_id, {RolloutState.RUNNING}, 60)
        started = time.monotonic()
        rollout = _controller_until(rollout_id, {RolloutState.ROLLED_BACK, RolloutState.PROMOTED}, 30)
        took = time.monotonic() - started
        assert rollout.state == RolloutState.ROLLED_BACK and running.current_step == 0
        assert "error rate" in rollout.reason, rollout.reason
        # v2 leaves routing: calls succeed again
        wait_for(lambda: Deployment.objects.get(pk=d2).observed_state == Observed.INACTIVE, 60, what="v2 unloaded")
        failed, seen = caller.failed, caller.calls()
        wait_for(lambda: caller.calls() >= seen + 20, 60, what="calls after the rollback")
        assert caller.failed == failed, caller.errors[-5:]
    finally:
        caller.finish()
    print(f"rolled back {took:.1f} s after the canary started taking traffic")  # noqa: T201 - the figure
    assert took < 30
    event = AuditEvent.objects.get(event_type="deployment.rollout.rollback", target_id=str(rollout_id))
    assert event.error_code == "slo_breached" and event.details["figures"]["errors"] >= 1
    assert api.get(f"/api/v1/deployments/rollouts/{rollout_id}/").json()["weights"] == {"v1": 100, "v2": 0}
    assert Deployment.objects.get(model_version_id=v1).observed_state == Observed.ACTIVE
