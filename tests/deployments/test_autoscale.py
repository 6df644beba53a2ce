"""Autoscaling of replica sets (issue 16, docs/fleet.md "Autoscaling"): the decision (a pure function),
the settings service and its API, and the controller's tick reading Triton-format metrics over HTTP
from a local endpoint (real tritonservers: tests/integration/test_autoscale_live.py)."""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent, Outcome
from apps.core.errors import ServiceError
from apps.deployments import services, tasks
from apps.deployments.autoscale import Policy, decide
from apps.deployments.models import Deployment, Desired, Observed, ReplicaSet, Rollout
from inference_backend.metrics import parse_metrics, parse_model_metrics, queue_ms_between
from tests.factories import InferenceServerFactory, ModelVersionFactory

SETS = "/api/v1/deployments/replica-sets/"
POLICY = Policy(target=2.0, min_replicas=1, max_replicas=4, cooldown_seconds=60)


# --- the decision ------------------------------------------------------------------------------------


class TestDecide:
    def test_load_above_target_scales_up_to_ceil_load_over_target(self):
        d = decide(POLICY, 1, [5.0], now=1000, scaled_at=None)
        assert (d.desired, d.action, d.total, d.wanted) == (3, "up", 5.0, 3)

    def test_up_is_clamped_to_max(self):
        assert decide(POLICY, 2, [40.0, 40.0], now=1000, scaled_at=None).desired == 4

    def test_no_change_within_the_cooldown_of_the_last(self):
        d = decide(POLICY, 1, [5.0], now=1000, scaled_at=950)
        assert (d.desired, d.action) == (1, "hold") and "cooldown" in d.reason
        assert decide(POLICY, 1, [5.0], now=1010, scaled_at=950).action == "up"

    def test_down_only_after_the_load_stayed_low_for_the_cooldown_to_the_most_it_wanted(self):
        first = decide(POLICY, 4, [0.0, 0.0, 0.0, 1.0], now=1000, scaled_at=0)
        assert (first.action, first.low_since, first.low_peak) == ("hold", 1000, 1)
        middle = decide(POLICY, 4, [1.0, 1.0, 1.0, 1.0], now=1030, scaled_at=0, low_since=1000, low_peak=1)
        assert (middle.action, middle.low_since, middle.low_peak) == ("hold", 1000, 2)
        last = decide(POLICY, 4, [0.0] * 4, now=1060, scaled_at=0, low_since=1000, low_peak=2)
        assert (last.desired, last.action, last.low_since) == (2, "down", None)

    def test_load_back_at_target_forgets_the_low_period(self):
        d = decide(POLICY, 2, [2.0, 2.0], now=1030, scaled_at=0, low_since=1000, low_peak=1)
        assert (d.action, d.low_since, d.low_peak) == ("hold", None, 0)

    def test_idle_goes_to_min(self):
        d = decide(POLICY, 3, [0.0, 0.0, 0.0], now=2000, scaled_at=0, low_since=1000, low_peak=1)
        assert (d.desired, d.action) == (1, "down")

    def test_unmeasured_replicas_are_extrapolated_up_but_block_a_scale_down(self):
        up = decide(POLICY, 2, [4.0, None], now=1000, scaled_at=None)
        assert (up.desired, up.total) == (4, 8.0)
        down = decide(POLICY, 3, [0.0, None, 0.0], now=5000, scaled_at=0, low_since=1000, low_peak=1)
        assert (down.action, down.low_since) == ("hold", None) and "not every replica" in down.reason

    @pytest.mark.parametrize("loads", [[], [None, None]])
    def test_no_figures_change_nothing(self, loads):
        d = decide(POLICY, 2, loads, now=1000, scaled_at=None)
        assert (d.desired, d.action, d.total) == (2, "hold", None)

    def test_bounds_hold_whatever_the_figures_and_the_cooldown(self):
        assert decide(POLICY, 6, [], now=1000, scaled_at=999).desired == 4
        assert decide(Policy(2.0, 3, 4, 60), 1, [None], now=1000, scaled_at=999).desired == 3


class TestMetrics:
    TEXT = """\
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="triage--v1",version="1"} 3
nv_inference_pending_request_count{model="triage--v2",version="2"} 1
nv_inference_queue_duration_us{model="triage--v1",version="1"} 30000
nv_inference_request_success{model="triage--v1",version="1"} 100
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
"""

    def test_per_model_figures_and_the_balancers_totals(self):
        assert parse_model_metrics(self.TEXT) == {
            "triage--v1": {"pending": 3, "queue_us": 30000, "success": 100},
            "triage--v2": {"pending": 1},
        }
        assert parse_metrics(self.TEXT) == {"pending": 4, "queue_us": 30000, "success": 100, "gpu": 0.5}

    def test_queue_time_per_request_from_counter_deltas(self):
        before = {"queue_us": 30000, "success": 100}
        assert queue_ms_between(before, {"queue_us": 230000, "success": 200}) == 2.0
        assert queue_ms_between(None, before) is None  # no earlier reading
        assert queue_ms_between(before, before) is None  # nothing answered in between
        assert queue_ms_between(before, {"queue_us": 10, "success": 1}) is None  # Triton restarted


# --- the settings service and its API ------------------------------------------------------------------


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: calls.append(args))
    monkeypatch.setattr(
        tasks.reconcile_deployment_task, "apply_async", lambda args, countdown=0: calls.append((*args, countdown))
    )
    return calls


@pytest.fixture
def rs(staff_user, enqueued):
    InferenceServerFactory(name="triton-1", state="up")
    mv = ModelVersionFactory(model_name="triage", actor=staff_user)
    return services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=staff_user)


def settings_of(rs) -> tuple:
    rs.refresh_from_db()
    return (
        rs.autoscale,
        rs.autoscale_metric,
        rs.autoscale_target,
        rs.min_replicas,
        rs.max_replicas,
        rs.autoscale_cooldown_seconds,
    )


@pytest.mark.django_db
class TestConfigure:
    def test_sets_and_audits_only_what_changed(self, rs, staff_user):
        services.configure_autoscale(
            replica_set_id=rs.pk, enabled=True, metric="queue_ms", target=50, max_replicas=5, actor=staff_user
        )

        assert settings_of(rs) == (True, "queue_ms", 50.0, 1, 5, 300)
        event = AuditEvent.objects.get(event_type="deployment.replica_set.autoscale")
        assert event.actor == staff_user and event.target_id == str(rs.pk)
        assert event.details["before"] == {"enabled": False, "metric": "in_flight", "target": 4.0, "max_replicas": 1}
        assert event.details["after"] == {"enabled": True, "metric": "queue_ms", "target": 50.0, "max_replicas": 5}

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"min_replicas": 3, "max_replicas": 2}, "min_replicas"),
            ({"max_replicas": 65}, "max_replicas"),
            ({"min_replicas": 0}, "min_replicas"),
            ({"target": 0}, "target"),
            ({"target": -1.5}, "target"),
            ({"target": float("nan")}, "target"),
            ({"target": "4"}, "target"),
            ({"metric": "gpu"}, "metric"),
            ({"cooldown_seconds": -1}, "cooldown_seconds"),
            ({"enabled": "yes"}, "enabled"),
            ({"max_replicas": True}, "max_replicas"),
            ({"surprise": 1}, "surprise"),
        ],
    )
    def test_bad_input_is_refused_whole_and_audited(self, rs, staff_user, changes, field):
        before = settings_of(rs)

        with pytest.raises(ServiceError) as info:
            services.configure_autoscale(replica_set_id=rs.pk, actor=staff_user, **{"enabled": True, **changes})

        assert (info.value.code, info.value.field, info.value.status_code) == ("invalid_autoscale", field, 400)
        assert settings_of(rs) == before  # not even `enabled`
        assert not AuditEvent.objects.filter(event_type="deployment.replica_set.autoscale").exists()
        refused = AuditEvent.objects.get(event_type="deployment.replica_set.autoscale.rejected")
        assert (refused.outcome, refused.error_code) == (Outcome.FAILURE, "invalid_autoscale")

    def test_a_retired_set_is_not_configured(self, rs, staff_user):
        services.retire_replica_set(replica_set_id=rs.pk, actor=staff_user)

        with pytest.raises(ServiceError) as info:
            services.configure_autoscale(replica_set_id=rs.pk, enabled=True, actor=staff_user)

        assert info.value.code == "replica_set_retired"

    def test_api_patch(self, rs, staff_client, auditor_client):
        url = f"{SETS}{rs.pk}/autoscale/"
        body = {"enabled": True, "metric": "in_flight", "target": 2, "min_replicas": 1, "max_replicas": 3}

        resp = staff_client.patch(url, body, format="json")

        assert resp.status_code == 200, resp.json()
        got = resp.json()
        assert (got["autoscale"], got["autoscale_target"], got["max_replicas"]) == (True, 2.0, 3)
        assert got["autoscale_status"] == {}
        bad = staff_client.patch(url, {"min_replicas": 4}, format="json")
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_autoscale"
        assert auditor_client.patch(url, {"target": 9}, format="json").status_code == 403
        assert staff_client.patch(f"{SETS}999999/autoscale/", body, format="json").status_code == 404
        assert settings_of(rs)[2] == 2.0


# --- the controller's tick -----------------------------------------------------------------------------


class MetricsEndpoint:
    """Serves Triton-format metrics per path (`/<server>/metrics`), as the test sets them."""

    def __init__(self):
        self.texts: dict[str, str] = {}
        texts = self.texts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = texts.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write((body or "").encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{name}/metrics"

    def set(self, name: str, model: str, pending: float = 0, queue_us: float = 0, success: float = 0) -> None:
        self.texts[f"/{name}/metrics"] = (
            f'nv_inference_pending_request_count{{model="{model}",version="1"}} {pending}\n'
            f'nv_inference_queue_duration_us{{model="{model}",version="1"}} {queue_us}\n'
            f'nv_inference_request_success{{model="{model}",version="1"}} {success}\n'
        )

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endpoint():
    server = MetricsEndpoint()
    yield server
    server.close()


@pytest.fixture
def fleet(endpoint):
    """Three UP servers in zone phi reporting metrics, and one without a metrics URL in zone dark."""
    servers = {
        name: InferenceServerFactory(name=name, state="up", labels={"zone": "phi"}, metrics_url=endpoint.url(name))
        for name in ("triton-1", "triton-2", "triton-3")
    }
    servers["dark-1"] = InferenceServerFactory(name="dark-1", state="up", labels={"zone": "dark"})
    return servers


def autoscaled(staff_user, *, labels=None, **settings_) -> ReplicaSet:
    mv = ModelVersionFactory(model_name="triage", actor=staff_user)
    rs = services.request_replica_set(
        model_version_id=mv.pk, replicas=1, labels=labels or {"zone": "phi"}, actor=staff_user
    )
    options = {"enabled": True, "metric": "in_flight", "target": 2, "min_replicas": 1, "max_replicas": 3}
    services.configure_autoscale(replica_set_id=rs.pk, actor=staff_user, **{**options, **settings_})
    all_active(rs)
    return rs


def all_active(rs) -> list[Deployment]:
    rs.deployments.filter(desired_state=Desired.ACTIVE).update(observed_state=Observed.ACTIVE)
    return list(rs.deployments.filter(desired_state=Desired.ACTIVE).select_related("server"))


def load(endpoint, rs, **figures) -> None:
    for dep in rs.deployments.filter(desired_state=Desired.ACTIVE).select_related("server", "model_version", "model"):
        endpoint.set(dep.server.name, dep.triton_name, **figures)


def scale_events(rs):
    return AuditEvent.objects.filter(event_type="deployment.replica_set.scale", target_id=str(rs.pk)).exclude(
        details__autoscale=None
    )


@pytest.mark.django_db
class TestTick:
    def test_load_scales_up_through_the_scheduler_audited_with_its_figures(self, fleet, endpoint, staff_user, enqueued):
        rs = autoscaled(staff_user)
        load(endpoint, rs, pending=5)

        assert services.autoscale_tick() == {rs.pk: "up"}

        rs.refresh_from_db()
        assert rs.replicas == 3 and rs.scaled_at is not None
        assert sorted(rs.deployments.values_list("server__name", flat=True)) == ["triton-1", "triton-2", "triton-3"]
        event = scale_events(rs).get()
        assert event.actor is None and event.details["after"] == {"replicas": 3}
        figures = event.details["autoscale"]
        assert (figures["metric"], figures["total"], figures["wanted"], figures["target"]) == ("in_flight", 5, 3, 2)
        assert rs.autoscale_state["last"]["outcome"] == "up"

    def test_cooldown_then_sustained_low_load_brings_it_back_to_min_drained(
        self, fleet, endpoint, staff_user, enqueued, django_capture_on_commit_callbacks
    ):
        rs = autoscaled(staff_user, cooldown_seconds=60)
        load(endpoint, rs, pending=3)
        t0 = timezone.now()
        assert services.autoscale_set(rs.pk, now=t0) == "up"
        assert len(all_active(rs)) == 2  # ceil(3 / 2)
        load(endpoint, rs, pending=0)

        assert services.autoscale_set(rs.pk, now=t0 + timedelta(seconds=30)) == "hold"  # in the cooldown; low from now
        assert services.autoscale_set(rs.pk, now=t0 + timedelta(seconds=70)) == "hold"  # low for 40 s
        load(endpoint, rs, pending=1)  # 2 in all: still wants 1
        assert services.autoscale_set(rs.pk, now=t0 + timedelta(seconds=85)) == "hold"  # low for 55 s
        enqueued.clear()
        with django_capture_on_commit_callbacks(execute=True):
            assert services.autoscale_set(rs.pk, now=t0 + timedelta(seconds=91)) == "down"  # low for 61 s

        rs.refresh_from_db()
        assert rs.replicas == 1 and rs.deployments.filter(desired_state=Desired.ACTIVE).count() == 1
        assert [call[-1] for call in enqueued] == [5.0]  # unloaded after the drain, not at once
        down = scale_events(rs).order_by("-pk").first()
        assert down.details["after"] == {"replicas": 1} and "wanted at most 1" in down.details["autoscale"]["reason"]

    def test_impossible_placement_grows_by_what_fits_and_is_audited_once_per_cooldown(
        self, fleet, endpoint, staff_user, enqueued
    ):
        rs = autoscaled(staff_user, max_replicas=5, cooldown_seconds=60)
        load(endpoint, rs, pending=20)
        t0 = timezone.now()

        assert services.autoscale_set(rs.pk, now=t0) == "up"  # 5 wanted, 2 more fit (zone phi)
        rs.refresh_from_db()
        assert rs.replicas == 3
        all_active(rs)
        load(endpoint, rs, pending=20)
        refusals = AuditEvent.objects.filter(event_type="deployment.replica_set.scale.rejected")
        assert refusals.count() == 1  # 5 could not be placed
        assert any("dark-1: lacks label zone=phi" in r for r in refusals[0].details["reasons"])
        for seconds in (61, 62, 90, 122):  # nothing more fits; audited again once a cooldown has passed
            assert services.autoscale_set(rs.pk, now=t0 + timedelta(seconds=seconds)) == "refused"

        rs.refresh_from_db()
        assert rs.replicas == 3
        assert refusals.count() == 3  # at 0, 61 and 122 s: not every tick

    def test_max_holds_whatever_the_load(self, fleet, endpoint, staff_user, enqueued):
        rs = autoscaled(staff_user, max_replicas=2)
        load(endpoint, rs, pending=100)

        services.autoscale_tick()

        rs.refresh_from_db()
        assert rs.replicas == 2

    def test_a_server_without_metrics_url_changes_nothing(self, fleet, endpoint, staff_user, enqueued):
        rs = autoscaled(staff_user, labels={"zone": "dark"})

        assert services.autoscale_tick() == {rs.pk: "hold"}

        rs.refresh_from_db()
        assert rs.replicas == 1
        assert rs.autoscale_state["last"]["reason"] == "no replica's load could be read"
        assert rs.autoscale_state["last"]["unmeasured"] == {"dark-1": "no metrics_url"}

    def test_queue_time_from_counter_deltas(self, fleet, endpoint, staff_user, enqueued):
        rs = autoscaled(staff_user, metric="queue_ms", target=10)
        load(endpoint, rs, queue_us=0, success=0)
        assert services.autoscale_tick() == {rs.pk: "hold"}  # a first reading: no interval yet
        load(endpoint, rs, queue_us=2_500_000, success=100)  # 25 ms per request over the interval

        assert services.autoscale_tick() == {rs.pk: "up"}

        rs.refresh_from_db()
        assert rs.replicas == 3
        assert scale_events(rs).get().details["autoscale"]["total"] == 25.0

    def test_a_set_in_an_unfinished_rollout_is_left_alone(self, fleet, endpoint, staff_user, enqueued):
        rs = autoscaled(staff_user)
        other = ModelVersionFactory(model_name="triage", actor=staff_user)
        to_set = services.request_replica_set(model_version_id=other.pk, replicas=1, actor=staff_user)
        Rollout.objects.create(model=rs.model, from_set=rs, to_set=to_set, steps=[100])
        load(endpoint, rs, pending=50)

        assert services.autoscale_tick() == {rs.pk: "rollout"}

        rs.refresh_from_db()
        assert rs.replicas == 1 and "rollout" in rs.autoscale_state["last"]["reason"]

    def test_sets_with_autoscale_off_are_not_touched(self, fleet, endpoint, staff_user, enqueued):
        rs = autoscaled(staff_user)
        services.configure_autoscale(replica_set_id=rs.pk, enabled=False, actor=staff_user)
        load(endpoint, rs, pending=50)

        assert services.autoscale_tick() == {}

    def test_beat_runs_the_tick_every_autoscale_seconds(self, fleet, endpoint, staff_user, enqueued, settings):
        entry = settings.CELERY_BEAT_SCHEDULE["autoscale-replica-sets"]
        assert (entry["task"], entry["schedule"]) == (tasks.autoscale_task.name, settings.AUTOSCALE_SECONDS)
        rs = autoscaled(staff_user)
        load(endpoint, rs, pending=4)

        assert tasks.autoscale_task() == {str(rs.pk): "up"}
