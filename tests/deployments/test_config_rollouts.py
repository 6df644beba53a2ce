"""Batching configuration rollouts without a Triton: every refusal (audited, nothing saved), and the
controller's canary, step, promotion and rollback on per-replica figures written to the gateway's
recorder directly; the reload a replica would do is played by setting what Triton "applied"."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent, Outcome
from apps.core.errors import ServiceError
from apps.deployments import services, slo
from apps.deployments.models import (
    Deployment,
    Desired,
    Observed,
    ReplicaSet,
    ReplicaSetState,
    Rollout,
    RolloutKind,
    RolloutState,
)
from inference_backend.config import BatchingSettings
from inference_backend.demo_model import build_test_onnx
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db
OLD = BatchingSettings().as_dict()
NEW = {**OLD, "max_queue_delay_us": 5000, "preferred_batch_sizes": [4]}


@pytest.fixture(autouse=True)
def _no_figures():
    slo.recorder.flush()
    client = slo._redis()
    if client is not None:
        keys = list(client.scan_iter(match="sv:slo:*"))
        if keys:
            client.delete(*keys)
    else:
        slo._memory._rows.clear()


def _set(user, replicas: int, spare_servers: int = 0) -> ReplicaSet:
    mv = ModelVersionFactory(model_name="triage", data=build_test_onnx(4, 3, seed=1), actor=user)
    rs = ReplicaSet.objects.create(
        model=mv.model, model_version=mv, replicas=replicas, max_replicas=replicas, traffic_weight=100
    )
    for _ in range(replicas):
        DeploymentFactory(model_version=mv, replica_set=rs, requested_by=user, applied_batching=OLD)
    for _ in range(spare_servers):
        InferenceServerFactory()
    return rs


def _start(rs, user, **kw):
    kw.setdefault("batching", NEW)
    kw.setdefault("hold_seconds", 10)
    kw.setdefault("min_calls", 5)
    kw.setdefault("slo_max_p95_ms", 500.0)
    return services.start_config_rollout(replica_set_id=rs.pk, actor=user, **kw)


def _reload_all(rollout) -> None:
    """What the reconcile does once Triton has the new config: applied = asked."""
    for dep in Deployment.objects.filter(replica_set_id=rollout.to_set_id, desired_state=Desired.ACTIVE):
        Deployment.objects.filter(pk=dep.pk).update(applied_batching=dep.batching().as_dict())


def _record(dep, version, calls, latency_ms=10.0, errors=0, at=None):
    for i in range(calls):
        slo.recorder.record(dep.model_id, version, ok=i >= errors, latency_ms=latency_ms, at=at, deployment_id=dep.pk)
    slo.recorder.flush()


def _batching(pk) -> dict:
    return Deployment.objects.get(pk=pk).batching().as_dict()


def _refused(code: str) -> None:
    event = AuditEvent.objects.filter(event_type="deployment.rollout.rejected").order_by("id").last()
    assert event is not None and (event.outcome, event.error_code) == (Outcome.FAILURE, code)
    assert not Rollout.objects.exists()
    assert all(d.batching().as_dict() == OLD for d in Deployment.objects.all())


class TestRefusals:
    def test_unknown_set(self, staff_user):
        with pytest.raises(ServiceError) as exc:
            services.start_config_rollout(replica_set_id=999999, batching=NEW, actor=staff_user)
        assert (exc.value.code, exc.value.status_code) == ("replica_set_not_found", 404)
        _refused("replica_set_not_found")

    def test_retired_set(self, staff_user):
        rs = _set(staff_user, 2)
        ReplicaSet.objects.filter(pk=rs.pk).update(state=ReplicaSetState.RETIRED)
        with pytest.raises(ServiceError) as exc:
            _start(rs, staff_user)
        assert (exc.value.code, exc.value.status_code) == ("replica_set_retired", 409)
        _refused("replica_set_retired")

    @pytest.mark.parametrize(
        "batching",
        [{}, {"max_batch_size": -1}, {"queue": 5}, {"preferred_batch_sizes": [64]}, "fast", {"instance_count": 0}],
    )
    def test_invalid_batching(self, staff_user, batching):
        rs = _set(staff_user, 2)
        with pytest.raises(ServiceError) as exc:
            _start(rs, staff_user, batching=batching)
        assert exc.value.code == "invalid_batching"
        _refused("invalid_batching")

    def test_no_change(self, staff_user):
        rs = _set(staff_user, 2)
        with pytest.raises(ServiceError) as exc:
            _start(rs, staff_user, batching={"max_batch_size": OLD["max_batch_size"]})
        assert exc.value.code == "batching_unchanged"
        _refused("batching_unchanged")

    def test_invalid_slo(self, staff_user):
        rs = _set(staff_user, 2)
        with pytest.raises(ServiceError) as exc:
            _start(rs, staff_user, slo_max_error_rate=2)
        assert exc.value.code == "invalid_slo"
        _refused("invalid_slo")

    def test_replica_not_ready(self, staff_user):
        rs = _set(staff_user, 2)
        Deployment.objects.filter(pk=rs.deployments.first().pk).update(observed_state=Observed.LOADING)
        with pytest.raises(ServiceError) as exc:
            _start(rs, staff_user)
        assert (exc.value.code, exc.value.status_code) == ("replicas_not_ready", 409)
        _refused("replicas_not_ready")

    def test_one_unfinished_rollout_per_model(self, staff_user):
        rs = _set(staff_user, 2)
        first = _start(rs, staff_user)
        with pytest.raises(ServiceError) as exc:
            _start(rs, staff_user, batching={"max_queue_delay_us": 7})
        assert (exc.value.code, exc.value.status_code) == ("rollout_in_progress", 409)
        assert list(Rollout.objects.all()) == [first]
        # nor a version rollout meanwhile
        v2 = ModelVersionFactory(model_name="triage", data=build_test_onnx(4, 3, seed=2), actor=staff_user)
        with pytest.raises(ServiceError) as exc:
            services.start_rollout(model_id=rs.model_id, to_version_id=v2.pk, actor=staff_user)
        assert exc.value.code == "rollout_in_progress"

    def test_set_is_not_scaled_retired_or_undeployed_by_hand_meanwhile(self, staff_user):
        rs = _set(staff_user, 2, spare_servers=1)
        _start(rs, staff_user)
        for call in (
            lambda: services.scale_replica_set(replica_set_id=rs.pk, replicas=3, actor=staff_user),
            lambda: services.retire_replica_set(replica_set_id=rs.pk, actor=staff_user),
            lambda: services.request_undeploy(deployment_id=rs.deployments.first().pk, actor=staff_user),
        ):
            with pytest.raises(ServiceError) as exc:
                call()
            assert exc.value.code == "rollout_in_progress"
        assert rs.deployments.filter(desired_state=Desired.ACTIVE).count() == 2


class TestController:
    def test_canary_then_the_rest_then_promoted(self, staff_user):
        rs = _set(staff_user, 2)
        d1, d2 = rs.deployments.order_by("pk")
        r = _start(rs, staff_user)
        assert (r.kind, r.state, r.steps, r.config["canary"]) == (RolloutKind.CONFIG, "waiting_ready", [1, 2], [d1.pk])
        assert _batching(d1.pk) == NEW and _batching(d2.pk) == OLD  # only the canary reloads
        assert services.advance_rollouts() == {r.pk: "waiting_ready"}  # not reloaded yet
        _reload_all(r)
        assert services.advance_rollouts() == {r.pk: "running"}
        r.refresh_from_db()
        _record(d1, rs.model_version.version, 10)
        _record(d2, rs.model_version.version, 10, latency_ms=5000)  # the old config's figures do not count
        later = r.step_started_at + timedelta(seconds=11)
        assert services.advance_rollouts(now=later) == {r.pk: "stepped"}
        assert _batching(d2.pk) == NEW
        assert services.advance_rollouts(now=later) == {r.pk: "waiting_ready"}
        _reload_all(r)
        assert services.advance_rollouts(now=later) == {r.pk: "running"}
        _record(d1, rs.model_version.version, 5, at=later.timestamp() + 1)
        _record(d2, rs.model_version.version, 5, at=later.timestamp() + 1)
        assert services.advance_rollouts(now=later + timedelta(seconds=12)) == {r.pk: "promoted"}
        r.refresh_from_db()
        assert r.state == RolloutState.PROMOTED
        events = list(
            AuditEvent.objects.filter(target_type="deployments.rollout", target_id=str(r.pk))
            .order_by("id")
            .values_list("event_type", flat=True)
        )
        assert events.count("deployment.rollout.step") == 3 and events[-1] == "deployment.rollout.promote"

    def test_slow_canary_is_rolled_back_and_its_batching_restored(self, staff_user):
        rs = _set(staff_user, 2)
        d1, d2 = rs.deployments.order_by("pk")
        r = _start(rs, staff_user)
        _reload_all(r)
        services.advance_rollouts()
        _record(d1, rs.model_version.version, 6, latency_ms=1500)
        assert services.advance_rollouts() == {r.pk: "rolled_back"}
        r.refresh_from_db()
        assert r.state == RolloutState.ROLLED_BACK and "p95" in r.reason
        assert _batching(d1.pk) == OLD and _batching(d2.pk) == OLD
        assert Deployment.objects.get(pk=d1.pk).reload_pending  # the reconcile reloads the old config
        event = AuditEvent.objects.get(event_type="deployment.rollout.rollback", target_id=str(r.pk))
        assert (event.outcome, event.error_code) == (Outcome.FAILURE, "slo_breached")
        assert event.details["restored"] == [d1.pk] and event.details["figures"]["calls"] == 6

    def test_refused_reload_fails_the_rollout(self, staff_user):
        rs = _set(staff_user, 2)
        d1 = rs.deployments.order_by("pk").first()
        r = _start(rs, staff_user)
        Deployment.objects.filter(pk=d1.pk).update(last_error="reload refused: bad config")
        assert services.advance_rollouts() == {r.pk: "failed"}
        assert _batching(d1.pk) == OLD and not Deployment.objects.get(pk=d1.pk).reload_pending
        assert AuditEvent.objects.filter(event_type="deployment.rollout.fail", target_id=str(r.pk)).exists()

    def test_one_replica_set_surges_a_replica_with_the_new_config(self, staff_user):
        rs = _set(staff_user, 1, spare_servers=1)
        only = rs.deployments.get()
        r = _start(rs, staff_user)
        surge = Deployment.objects.get(pk=r.config["surge"])
        assert surge.batching().as_dict() == NEW and surge.server_id != only.server_id
        assert _batching(only.pk) == OLD and ReplicaSet.objects.get(pk=rs.pk).replicas == 2
        Deployment.objects.filter(pk=surge.pk).update(observed_state=Observed.ACTIVE, applied_batching=NEW)
        assert services.advance_rollouts() == {r.pk: "running"}
        services.rollback_now(rollout_id=r.pk, actor=staff_user)
        assert Deployment.objects.get(pk=surge.pk).desired_state == Desired.INACTIVE
        assert ReplicaSet.objects.get(pk=rs.pk).replicas == 1 and _batching(only.pk) == OLD

    def test_one_replica_and_no_room_reloads_it_in_place(self, staff_user):
        rs = _set(staff_user, 1)
        only = rs.deployments.get()
        r = _start(rs, staff_user)
        assert r.config["surge"] is None and r.steps == [1] and "in place" in r.reason
        assert _batching(only.pk) == NEW
        _reload_all(r)
        services.advance_rollouts()
        services.promote_now(rollout_id=r.pk, actor=staff_user)
        assert Rollout.objects.get(pk=r.pk).state == RolloutState.PROMOTED

    def test_abort_keeps_each_replica_as_it_is(self, staff_user):
        rs = _set(staff_user, 2)
        d1, d2 = rs.deployments.order_by("pk")
        r = _start(rs, staff_user)
        services.abort_rollout(rollout_id=r.pk, actor=staff_user)
        assert Rollout.objects.get(pk=r.pk).state == RolloutState.ABORTED
        assert (_batching(d1.pk), _batching(d2.pk)) == (NEW, OLD)
        assert timezone.now()


ROLLOUTS = "/api/v1/deployments/rollouts/"


class TestApiAndAdmin:
    def test_start_read_and_refuse_through_the_api(self, staff_user, staff_client):
        rs = _set(staff_user, 2)
        d1, _ = rs.deployments.order_by("pk")
        other = ModelVersionFactory(model_name="other", data=build_test_onnx(4, 3, seed=9), actor=staff_user)
        body = {"model": "other", "replica_set": rs.pk, "batching": NEW}
        resp = staff_client.post(ROLLOUTS, body, format="json")  # a set of another model
        assert (resp.status_code, resp.json()["code"]) == (404, "replica_set_not_found")
        assert other.model.name == "other"
        same = {**body, "model": "triage", "batching": {"max_batch_size": 8}}
        resp = staff_client.post(ROLLOUTS, same, format="json")
        assert (resp.status_code, resp.json()["code"]) == (400, "batching_unchanged")
        resp = staff_client.post(ROLLOUTS, {**body, "model": "triage", "hold_seconds": 5}, format="json")
        assert resp.status_code == 201, resp.json()
        shown = resp.json()
        assert (shown["kind"], shown["state"], shown["steps"]) == ("config", "waiting_ready", [1, 2])
        assert shown["config_diff"] == {"preferred_batch_sizes": [[], [4]], "max_queue_delay_us": [100, 5000]}
        assert [(r["deployment"], r["new_config"], r["reloaded"]) for r in shown["replicas"]][0] == (d1.pk, True, False)
        assert staff_client.get(ROLLOUTS, {"kind": "config"}).json()["count"] == 1
        resp = staff_client.post(f"{ROLLOUTS}{shown['id']}/rollback/")
        assert (resp.status_code, resp.json()["state"]) == (200, "rolled_back")
        assert _batching(d1.pk) == OLD

    def test_admin_starts_and_shows_a_config_rollout(self, staff_user, staff_session):
        rs = _set(staff_user, 2)
        resp = staff_session.post(
            "/admin/deployments/replicaset/",
            {"action": "roll_out_batching", "_selected_action": [rs.pk], "apply": "1", "max_queue_delay_us": 900,
             "preferred_batch_sizes": "2, 4", "hold_seconds": 30, "slo_max_error_rate": 0.01,
             "slo_max_p95_ms": 800, "min_calls": 10},
        )  # fmt: skip
        assert resp.status_code == 302
        r = Rollout.objects.get()
        assert r.config["after"]["max_queue_delay_us"] == 900 and r.config["after"]["preferred_batch_sizes"] == [2, 4]
        _reload_all(r)
        services.advance_rollouts()
        _record(Deployment.objects.get(pk=r.config["canary"][0]), rs.model_version.version, 3, latency_ms=40)
        text = staff_session.get(f"/admin/deployments/rollout/{r.pk}/change/").content.decode()
        assert "max_queue_delay_us: 100 → 900" in text and "3 calls, 0 failed, p95 50 ms" in text


class TestApplyASweep:
    """The tuner's choice (docs/tuning.md) applied as a config rollout, through the API and the admin."""

    def _sweep(self, rs, **kw):
        from apps.deployments.models import BatchingSweep, SweepState

        kw.setdefault("state", SweepState.DONE)
        kw.setdefault("chosen", {**OLD, "max_batch_size": 16, "max_queue_delay_us": 2000})
        return BatchingSweep.objects.create(replica_set=rs, rate_per_second=20, slo_p99_ms=250, **kw)

    def test_apply_through_the_api(self, staff_user, staff_client):
        rs = _set(staff_user, 2)
        sweep = self._sweep(rs)
        resp = staff_client.post(f"/api/v1/deployments/batching-sweeps/{sweep.pk}/apply/", {"hold_seconds": 30},
                                 format="json")  # fmt: skip
        assert resp.status_code == 201, resp.json()
        body = resp.json()
        assert (body["kind"], body["sweep"], body["hold_seconds"], body["slo_max_p95_ms"]) == (
            "config",
            sweep.pk,
            30,
            250,
        )
        assert body["config_diff"] == {"max_batch_size": [8, 16], "max_queue_delay_us": [100, 2000]}
        assert _batching(rs.deployments.order_by("pk").first().pk)["max_batch_size"] == 16  # the canary
        start = AuditEvent.objects.get(event_type="deployment.rollout.start", target_id=str(body["id"]))
        assert start.actor == staff_user

    @pytest.mark.parametrize(
        ("state", "chosen", "code"),
        [("running", {"max_batch_size": 16}, "sweep_not_done"), ("done", None, "no_chosen_config")],
    )
    def test_refused_sweeps(self, staff_user, state, chosen, code):
        sweep = self._sweep(_set(staff_user, 2), state=state, chosen=chosen)
        with pytest.raises(ServiceError) as exc:
            services.apply_batching_sweep(sweep_id=sweep.pk, actor=staff_user)
        assert (exc.value.code, exc.value.status_code) == (code, 409)
        _refused(code)
        with pytest.raises(ServiceError) as exc:
            services.apply_batching_sweep(sweep_id=999999, actor=staff_user)
        assert (exc.value.code, exc.value.status_code) == ("sweep_not_found", 404)

    def test_apply_from_the_admin(self, staff_user, staff_session):
        rs = _set(staff_user, 2)
        sweep = self._sweep(rs)
        resp = staff_session.post(
            "/admin/deployments/batchingsweep/", {"action": "apply", "_selected_action": [sweep.pk]}
        )
        assert resp.status_code == 302
        r = Rollout.objects.get()
        assert (r.kind, r.sweep_id, r.config["after"]["max_queue_delay_us"]) == ("config", sweep.pk, 2000)
        # applying it again while that rollout runs is refused, and says why
        resp = staff_session.post(
            "/admin/deployments/batchingsweep/", {"action": "apply", "_selected_action": [sweep.pk]}, follow=True
        )
        assert "rollout_in_progress" in resp.content.decode() and Rollout.objects.count() == 1
