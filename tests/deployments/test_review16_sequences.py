"""Review of issue 16's fleet features as sequences an attacker or a bad day would run (REVIEW16):
each test is a finding, written failing first; docs in the commit that fixed it."""

from __future__ import annotations

import time

import pytest

from apps.audit.models import AuditEvent, Outcome
from apps.core.errors import ServiceError
from apps.deployments import services, tuning
from apps.deployments.models import BatchingSweep, Deployment, InferenceServer, ReplicaSet, Rollout
from inference_backend.config import BatchingSettings
from inference_backend.demo_model import build_test_onnx
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db
OLD = BatchingSettings().as_dict()


def _live_set(user, name="triage", replicas=2) -> ReplicaSet:
    mv = ModelVersionFactory(model_name=name, data=build_test_onnx(4, 3, seed=1), actor=user)
    rs = ReplicaSet.objects.create(
        model=mv.model, model_version=mv, replicas=replicas, max_replicas=replicas, traffic_weight=100
    )
    for _ in range(replicas):
        DeploymentFactory(model_version=mv, replica_set=rs, requested_by=user, applied_batching=OLD)
    return rs


def test_a_huge_grid_is_refused_at_once_not_after_minutes_of_cpu(staff_user):
    """16 values for each of the four settings is 65,536 combinations; deduplicating them by a linear scan
    of the list built so far cost the request minutes of CPU (an admin, or any admin token, could pin the
    web workers). The refusal must come as soon as the 49th distinct configuration appears."""
    InferenceServerFactory(name="live-1")
    mv = ModelVersionFactory(model_name="tuned", actor=staff_user)
    rs = services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=staff_user)
    InferenceServerFactory(name="spare-1")
    grid = {"max_batch_size": list(range(1, 17)), "max_queue_delay_us": list(range(16)),
            "preferred_batch_sizes": [[i] for i in range(1, 17)], "instance_count": list(range(1, 17))}  # fmt: skip
    started = time.process_time()
    with pytest.raises(ServiceError) as caught:
        tuning.request_batching_sweep(replica_set_id=rs.pk, arrival="synthetic", rate_per_second=10, grid=grid,
                                      actor=staff_user)  # fmt: skip
    assert time.process_time() - started < 2.0
    assert caught.value.code == "invalid_sweep"
    assert not BatchingSweep.objects.exists()
    assert AuditEvent.objects.filter(event_type="deployment.sweep.rejected", error_code="invalid_sweep").exists()


@pytest.mark.parametrize(
    "batching",
    [
        {"instance_count": 5000},
        {"instance_count": 10**10},
        {"max_batch_size": 10**10},
        {"max_queue_delay_us": 10**12},
    ],  # fmt: skip
)
def test_a_config_rollout_cannot_ask_triton_for_thousands_of_instances(staff_user, batching):
    """A config rollout (or a token restricted to this model) reloading the live replicas with 5,000
    instances makes Triton start 5,000 model instances on servers other models share; a value past
    PostgreSQL's integer was a 500 with no audited refusal. Both are `invalid_batching`, nothing saved."""
    rs = _live_set(staff_user)
    with pytest.raises(ServiceError) as caught:
        services.start_config_rollout(replica_set_id=rs.pk, batching=batching, hold_seconds=10, actor=staff_user)
    assert caught.value.code == "invalid_batching"
    event = AuditEvent.objects.filter(event_type="deployment.rollout.rejected").order_by("id").last()
    assert event is not None and (event.outcome, event.error_code) == (Outcome.FAILURE, "invalid_batching")
    assert not Rollout.objects.exists()
    assert all(d.batching().as_dict() == OLD for d in Deployment.objects.all())


@pytest.mark.parametrize("end", ["promote", "rollback"])
def test_a_surge_replica_does_not_leave_the_autoscalers_ceiling_raised(staff_user, end):
    """Autoscaling capped at 1 replica (a budget, or a server kept free), then a config rollout of that
    one-replica set: the surge replica raised max_replicas to 2 and nothing lowered it after the surge
    was retired, so the autoscaler could from then on grow the set past the cap its owner set, with no
    `deployment.replica_set.autoscale` event saying the cap had changed."""
    from apps.deployments.models import Desired, Observed

    rs = _live_set(staff_user, replicas=1)
    InferenceServerFactory()  # room for the surge replica
    services.configure_autoscale(replica_set_id=rs.pk, enabled=True, min_replicas=1, max_replicas=1,
                                 actor=staff_user)  # fmt: skip
    rollout = services.start_config_rollout(replica_set_id=rs.pk, batching={"max_queue_delay_us": 5000},
                                            hold_seconds=10, actor=staff_user)  # fmt: skip
    surge = rollout.config["surge"]
    assert surge is not None
    Deployment.objects.filter(pk=surge).update(observed_state=Observed.ACTIVE, applied_batching={**OLD,
                                               "max_queue_delay_us": 5000})  # fmt: skip
    assert services.advance_rollouts() == {rollout.pk: "running"}
    if end == "promote":
        services.promote_now(rollout_id=rollout.pk, actor=staff_user)
    else:
        services.rollback_now(rollout_id=rollout.pk, actor=staff_user)
    rs.refresh_from_db()
    assert Deployment.objects.get(pk=surge).desired_state == Desired.INACTIVE
    assert (rs.replicas, rs.min_replicas, rs.max_replicas) == (1, 1, 1)


def test_an_abandoned_sweep_of_another_set_does_not_hold_its_server_forever(staff_user):
    """The worker running set A's sweep dies (kill -9, a redeploy): its sweep stays `running`. It was
    failed as abandoned only when someone asked to sweep set A again, so until then its server counted
    as busy for every other set: set B, whose only possible server it is, was refused
    `placement_impossible` (`runs sweep #n`) for as long as nobody touched set A."""
    from datetime import timedelta

    from apps.deployments.models import SweepState

    live, spare = InferenceServerFactory(name="live-1"), InferenceServerFactory(name="spare-1")
    a = _live_set(staff_user, name="alpha", replicas=1)
    b = _live_set(staff_user, name="beta", replicas=1)
    Deployment.objects.filter(replica_set__in=[a, b]).update(server=live)
    InferenceServer.objects.exclude(pk__in=[live.pk, spare.pk]).delete()  # the factories' own servers
    common = {"arrival": "synthetic", "rate_per_second": 10, "repeats": 1, "point_seconds": 1, "warmup_seconds": 0,
              "grid": {"max_batch_size": [1], "max_queue_delay_us": [0], "instance_count": [1]}}  # fmt: skip
    stale = tuning.request_batching_sweep(replica_set_id=a.pk, actor=staff_user, **common)
    assert stale.server == spare
    BatchingSweep.objects.filter(pk=stale.pk).update(
        state=SweepState.RUNNING, started_at=stale.created_at - timedelta(days=1)
    )

    mine = tuning.request_batching_sweep(replica_set_id=b.pk, actor=staff_user, **common)

    assert mine.server == spare
    stale.refresh_from_db()
    assert stale.state == SweepState.FAILED and "abandoned" in stale.error
    assert AuditEvent.objects.filter(event_type="deployment.sweep.fail", target_id=str(stale.pk)).exists()


def test_a_ceiling_changed_by_a_person_during_the_surge_is_kept(staff_user):
    """The other side of the fix above: an owner who sets max_replicas while the surge runs keeps it."""
    from apps.deployments.models import Observed

    rs = _live_set(staff_user, replicas=1)
    InferenceServerFactory()
    services.configure_autoscale(replica_set_id=rs.pk, enabled=True, min_replicas=1, max_replicas=1,
                                 actor=staff_user)  # fmt: skip
    rollout = services.start_config_rollout(replica_set_id=rs.pk, batching={"max_queue_delay_us": 5000},
                                            hold_seconds=10, actor=staff_user)  # fmt: skip
    assert rollout.config["widened_max"] == [1, 2]
    Deployment.objects.filter(pk=rollout.config["surge"]).update(
        observed_state=Observed.ACTIVE, applied_batching={**OLD, "max_queue_delay_us": 5000}
    )
    services.advance_rollouts()
    services.configure_autoscale(replica_set_id=rs.pk, max_replicas=4, actor=staff_user)
    services.promote_now(rollout_id=rollout.pk, actor=staff_user)
    rs.refresh_from_db()
    assert (rs.replicas, rs.max_replicas) == (1, 4)


def test_a_server_running_a_sweep_is_not_deleted_under_it(staff_user):
    """Server delete vs sweep: the dedicated replica has no Deployment row, so a server running a
    sweep was deleted (its credential shredded) while the worker drove it; the sweep's server became
    NULL, so nothing could unload the dedicated replica any more and it stayed loaded on a Triton the
    portal no longer knows. Refused like a server holding replicas, audited, nothing deleted."""
    InferenceServerFactory(name="live-1")
    mv = ModelVersionFactory(model_name="tuned", actor=staff_user)
    rs = services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=staff_user)
    spare = InferenceServerFactory(name="spare-1")
    sweep = tuning.request_batching_sweep(
        replica_set_id=rs.pk, arrival="synthetic", rate_per_second=10, repeats=1, point_seconds=1,
        warmup_seconds=0, grid={"max_batch_size": [1], "max_queue_delay_us": [0], "instance_count": [1]},
        actor=staff_user,
    )  # fmt: skip
    assert sweep.server == spare
    with pytest.raises(ServiceError) as caught:
        services.delete_server(server_id=spare.pk, actor=staff_user)
    assert (caught.value.code, caught.value.status_code) == ("server_has_replicas", 409)
    assert f"sweep #{sweep.pk}" in caught.value.detail
    assert InferenceServer.objects.filter(pk=spare.pk).exists()
    assert AuditEvent.objects.filter(event_type="deployment.server.delete.rejected", target_id=str(spare.pk)).exists()
    sweep.refresh_from_db()
    assert sweep.server == spare


def test_an_infinite_slo_is_refused_by_the_service_not_only_by_the_api(staff_user, staff_client):
    """`1e400` is valid JSON that Python reads as infinity. The API's JSONField refuses it (held), but the
    service took `slo_max_p95_ms=inf` (a p95 SLO that never breaches, from any other caller: a
    command, the sweep apply's default of the sweep's SLO) and the rollout saved with it could not be
    rendered by the API any more (a 500 on every listing). The service refuses it `invalid_slo`."""
    rs = _live_set(staff_user)
    body = (
        f'{{"model": "triage", "replica_set": {rs.pk}, "batching": {{"max_queue_delay_us": 5000}}, '
        '"hold_seconds": 10, "slo_max_p95_ms": 1e400}'
    )
    answer = staff_client.post("/api/v1/deployments/rollouts/", body, content_type="application/json")
    assert answer.status_code == 400 and answer.json()["field"] == "slo_max_p95_ms"
    with pytest.raises(ServiceError) as caught:
        services.start_config_rollout(replica_set_id=rs.pk, batching={"max_queue_delay_us": 5000}, hold_seconds=10,
                                      slo_max_p95_ms=float("inf"), actor=staff_user)  # fmt: skip
    assert caught.value.code == "invalid_slo"
    assert not Rollout.objects.exists()
    assert staff_client.get("/api/v1/deployments/rollouts/").status_code == 200


def test_a_configuration_far_below_the_rate_does_not_hold_the_worker_past_its_budget():
    """The generator queued every call of a run without bound: a configuration answering 20 calls/s
    driven at 200/s for 1 s kept the worker (and the Triton server, shared or not) busy 10 s, so a
    sweep of point_seconds 60 at 2000/s could run for days against a budget of one hour. Calls that
    fall more than a run's length behind are not sent; they count as errors (the point cannot keep up)."""
    from inference_backend import loadgen

    def slow():
        time.sleep(0.05)  # the server's service time: what is measured, not a wait for a condition

    offsets = loadgen.arrival_offsets(200, 1.0, 1.0, seed=1)
    started = time.monotonic()
    run = loadgen.run_open_loop(slow, offsets, seconds=1.0, in_flight=1)
    assert time.monotonic() - started < 4.0
    assert run.errors > 0 and "behind" in run.first_error
    assert run.ok + run.errors == run.sent == len(offsets)
