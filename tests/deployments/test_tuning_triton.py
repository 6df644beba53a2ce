"""The batching tuner on a real tritonserver (issue 16, docs/tuning.md): a 2×2 grid, 2 repeats, short
points. The sweep runs on a dedicated replica under its own Triton name, stores every point with its
spread, picks the best configuration under the SLO, and leaves nothing behind: no tune model loaded
on Triton, no deployment row, no gateway route."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.deployments import services, slo, tuning
from apps.deployments.models import BatchingSweep, Deployment, SweepState
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_demo_onnx
from tests.factories import InferenceServerFactory, ModelVersionFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

GRID = {"max_batch_size": [1, 8], "max_queue_delay_us": [0, 2000], "preferred_batch_sizes": [[]], "instance_count": [1]}


@pytest.fixture
def live_set(staff_user):
    """A replica set of the demo model whose live replica sits on a server of its own (never
    contacted here: the reconcile is not run), so the real Triton is free for the dedicated replica."""
    InferenceServerFactory(name="live-1")
    mv = ModelVersionFactory(model_name="tune-demo", data=build_demo_onnx(), actor=staff_user)
    return services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=staff_user)


@pytest.fixture
def tune_server(triton, live_set):
    return InferenceServerFactory(name="tune-1", http_url=triton.http_url)


def _loaded(triton, name: str) -> bool:
    """Whether Triton serves `name`. (Not the repository index: a model loaded with its files in the
    load request is not in the repository directory, so the index never lists it — REVIEW16 found the
    "nothing left behind" checks below could not fail that way.)"""
    with TritonClient(triton.http_url) as client:
        return client.model_ready(name)


def test_a_small_sweep_finishes_with_spread_and_picks_the_best_under_the_slo(triton, live_set, tune_server, staff_user):
    deployments = Deployment.objects.count()
    sweep = tuning.request_batching_sweep(
        replica_set_id=live_set.pk, arrival="synthetic", rate_per_second=40, burstiness=1.0, slo_p99_ms=2000,
        grid=GRID, repeats=2, point_seconds=1.5, warmup_seconds=0.3, actor=staff_user,
    )  # fmt: skip
    assert sweep.server == tune_server and sweep.tune_name == f"tune-demo--v1--tune{sweep.pk}"

    sweep = tuning.run_batching_sweep(sweep.pk)

    assert sweep.state == SweepState.DONE, sweep.error
    assert [p["label"] for p in sweep.points] == ["b1 d0µs i1", "b1 d2000µs i1", "b8 d0µs i1", "b8 d2000µs i1"]
    for point in sweep.points:
        assert "error" not in point, point
        assert len(point["runs"]) == 2
        assert point["sent"] == sum(r["sent"] for r in point["runs"]) > 0
        assert point["errors"] == 0, point["first_error"]
        assert point["throughput"]["mean"] > 0
        assert point["throughput"]["min"] <= point["throughput"]["mean"] <= point["throughput"]["max"]
        assert point["p99_ms"]["min"] <= point["p99_ms"]["mean"] <= point["p99_ms"]["max"]
        assert point["throughput"]["stdev"] >= 0 and point["p99_ms"]["stdev"] >= 0
    qualified = [p for p in sweep.points if p["p99_ms"]["max"] < 2000]
    assert sweep.chosen in [p["config"] for p in qualified], sweep.reason
    pick = next(p for p in sweep.points if p["config"] == sweep.chosen)
    for other in qualified:  # nothing qualified is clearly faster than the pick
        assert other["throughput"]["mean"] - other["throughput"]["stdev"] <= (
            pick["throughput"]["mean"] + pick["throughput"]["stdev"]
        )
    assert sweep.reason.startswith(pick["label"])

    assert not _loaded(triton, sweep.tune_name)  # the dedicated replica is gone
    assert Deployment.objects.count() == deployments  # never a deployment (so never a gateway route)
    events = list(AuditEvent.objects.filter(target_id=str(sweep.pk), event_type__startswith="deployment.sweep."))
    assert sorted(e.event_type for e in events) == [
        "deployment.sweep.finish",
        "deployment.sweep.request",
        "deployment.sweep.start",
    ]


def test_a_configuration_triton_refuses_is_a_point_with_its_error_and_the_replica_still_goes(
    triton, live_set, tune_server, staff_user, monkeypatch
):
    """A failure in the middle of the sweep (here Triton refusing a config) ends as a point with the
    error; a failure of the whole run (the server gone) ends the sweep failed — both unload."""
    real = tuning.render_for_triton

    def broken(replica, name):
        config, files = real(replica, name=name)
        if replica.max_batch_size == 8:
            config["backend"] = "no-such-backend"
        return config, files

    monkeypatch.setattr(tuning, "render_for_triton", broken)
    sweep = tuning.request_batching_sweep(
        replica_set_id=live_set.pk, arrival="synthetic", rate_per_second=20, grid={**GRID, "max_queue_delay_us": [0]},
        repeats=1, point_seconds=0.5, warmup_seconds=0, slo_p99_ms=5000, actor=staff_user,
    )  # fmt: skip
    sweep = tuning.run_batching_sweep(sweep.pk)

    assert sweep.state == SweepState.DONE
    assert ["error" in p for p in sweep.points] == [False, True]
    assert sweep.chosen["max_batch_size"] == 1
    assert not _loaded(triton, sweep.tune_name)


def test_a_recorded_pattern_replays_the_gateways_own_rate(triton, live_set, tune_server, staff_user):
    """The rate comes from the per-second figures the data plane recorded for the version."""
    from apps.core.throttling import redis_client

    client = redis_client()
    for key in client.scan_iter(match=f"sv:slo:{live_set.model_id}:*"):
        client.delete(key)
    import time

    now = time.time()
    for second in range(10):  # 10 seconds of 6 calls each, ending now
        for _ in range(6):
            slo.recorder.record(live_set.model_id, 1, ok=True, latency_ms=3, at=now - second)
    slo.recorder.flush()

    sweep = tuning.request_batching_sweep(
        replica_set_id=live_set.pk, window_seconds=60, grid={"max_batch_size": [4], "max_queue_delay_us": [0],
        "instance_count": [1]}, repeats=1, point_seconds=0.5, warmup_seconds=0, actor=staff_user,
    )  # fmt: skip

    assert sweep.arrival == "recorded" and sweep.rate_per_second == 6.0 and sweep.burstiness == 0.1
    sweep = tuning.run_batching_sweep(sweep.pk)
    assert sweep.state == SweepState.DONE and len(sweep.points) == 1
    assert BatchingSweep.objects.get(pk=sweep.pk).points[0]["sent"] >= 1


def test_an_abandoned_sweeps_dedicated_replica_is_unloaded_when_it_is_expired(
    triton, live_set, tune_server, staff_user, django_capture_on_commit_callbacks
):
    """REVIEW16: the worker dies mid-sweep (kill -9): its dedicated replica stays loaded on Triton,
    taking the server's memory and cores with no Deployment row to show for it. When the sweep is
    expired as abandoned, the replica is unloaded."""
    from datetime import timedelta

    from apps.deployments.credentials import credential_for
    from apps.deployments.services import render_for_triton, smoke_inputs
    from apps.deployments.transport import client_for
    from tests.waiting import wait_for

    small = {"max_batch_size": [1], "max_queue_delay_us": [0], "instance_count": [1]}
    sweep = tuning.request_batching_sweep(
        replica_set_id=live_set.pk, arrival="synthetic", rate_per_second=10, grid=small, repeats=1, point_seconds=1,
        warmup_seconds=0, actor=staff_user,
    )  # fmt: skip
    # what the worker had done before it died: the dedicated replica loaded, the row `running`
    replica = Deployment(model=live_set.model, model_version=live_set.model_version, server=tune_server)
    cfg, files = render_for_triton(replica, name=sweep.tune_name)
    with client_for(tune_server.http_url, 30, credential_for(tune_server)) as client:
        client.load_model(sweep.tune_name, cfg, files, timeout=120)
        client.infer_json(sweep.tune_name, smoke_inputs(live_set.model_version.signature))
    assert _loaded(triton, sweep.tune_name)
    BatchingSweep.objects.filter(pk=sweep.pk).update(
        state=SweepState.RUNNING, started_at=sweep.created_at - timedelta(days=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        fresh = tuning.request_batching_sweep(
            replica_set_id=live_set.pk, arrival="synthetic", rate_per_second=10, grid=small, repeats=1,
            point_seconds=1, warmup_seconds=0, actor=staff_user,
        )  # fmt: skip

    sweep.refresh_from_db()
    assert sweep.state == SweepState.FAILED and fresh.state == SweepState.PENDING
    wait_for(lambda: not _loaded(triton, sweep.tune_name), timeout=30, what="the abandoned replica unloaded")
