"""The batching tuner without Triton (docs/tuning.md): the load generator's arithmetic, the choice,
the grid, every refusal (a stable code, nothing saved but the audited refusal), the API's roles and
the admin's table and chart. The sweep itself on a real tritonserver: test_tuning_triton.py."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from apps.core.throttling import redis_client
from apps.deployments import services, slo, tuning
from apps.deployments.models import BatchingSweep, SweepState
from apps.deployments.sweep_chart import chart, table
from inference_backend import loadgen
from tests.factories import InferenceServerFactory, ModelVersionFactory

SMALL = {"max_batch_size": [1, 8], "max_queue_delay_us": [0], "instance_count": [1]}


# --- the load generator -------------------------------------------------------------------------


def test_arrivals_have_the_rate_and_the_variation_asked():
    for burstiness in (0.5, 1.0, 2.0):
        offsets = loadgen.arrival_offsets(200, burstiness, 50, seed=3)
        gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
        assert len(offsets) / 50 == pytest.approx(200, rel=0.1)
        assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(burstiness, rel=0.15)
    assert loadgen.arrival_offsets(50, 1, 2, seed=1) == loadgen.arrival_offsets(50, 1, 2, seed=1)
    assert loadgen.arrival_offsets(50, 1, 2, seed=1) != loadgen.arrival_offsets(50, 1, 2, seed=2)


def test_a_recorded_pattern_is_read_over_the_span_with_traffic():
    assert loadgen.pattern_from_counts([0, 0, 0]) is None
    rate, burstiness = loadgen.pattern_from_counts([0, 0, 4, 4, 4, 4, 0])
    assert (rate, burstiness) == (4.0, loadgen.MIN_BURSTINESS)  # regular: clamped to the floor
    rate, burstiness = loadgen.pattern_from_counts([10, 0, 0, 10])  # bursts
    assert rate == 5.0 and burstiness == pytest.approx((25 / 5) ** 0.5)


def test_percentile_is_an_observed_value():
    values = list(range(1, 101))
    assert loadgen.percentile(values, 99) == 99
    assert loadgen.percentile(values, 50) == 50
    assert loadgen.percentile([7.0], 99) == 7.0


def test_open_loop_measures_from_the_due_time_and_counts_errors():
    """A server slower than the arrivals: an open loop keeps sending, and latency includes the wait."""
    calls = []

    def send():
        calls.append(time.perf_counter())
        if len(calls) % 5 == 0:
            raise RuntimeError("boom")
        time.sleep(0.05)  # the simulated server's service time

    result = loadgen.run_open_loop(send, [i * 0.01 for i in range(20)], seconds=0.2, in_flight=1)
    assert result.sent == 20 and result.errors == 4 and result.ok == 16
    assert result.first_error == "boom"
    assert result.p99_ms > 400  # one thread at 50 ms a call: the queue grows (measured from the due time)
    assert result.lag_ms > 300 and result.throughput < 100


# --- the choice and the grid --------------------------------------------------------------------


def _point(label, tp, tp_sd, p99, p99_max, errors=0, batch=8, instances=1):
    return {
        "label": label,
        "config": {"max_batch_size": batch, "instance_count": instances, "label": label},
        "throughput": {"mean": tp, "stdev": tp_sd, "min": tp - tp_sd, "max": tp + tp_sd},
        "p99_ms": {"mean": p99, "stdev": 1.0, "min": p99 - 1, "max": p99_max},
        "errors": errors,
    }


def test_choose_the_most_throughput_under_the_slo_in_every_repeat():
    points = [
        _point("fast-but-slow-p99", 500, 5, 80, 140),  # its worst repeat breaks the 100 ms SLO
        _point("errors", 480, 5, 20, 25, errors=1),
        _point("good", 400, 5, 50, 60),
        _point("slower", 300, 5, 10, 12),
        {"label": "refused", "config": {}, "error": "bad config"},
    ]
    chosen, reason = tuning.choose(points, 100, offered=400)
    assert chosen["label"] == "good"
    assert reason.startswith("good: 400 ± 5 calls/s") and "2 of 5" in reason


def test_choose_among_equals_within_the_noise_prefers_the_lower_p99_then_fewer_instances():
    points = [_point("a", 400, 10, 50, 60), _point("b", 395, 10, 30, 35, instances=2), _point("c", 395, 10, 30, 35)]
    chosen, reason = tuning.choose(points, 100, offered=400)
    assert chosen["label"] == "c" and "3 within the noise" in reason


def test_choose_nothing_when_no_point_qualifies_and_say_which_came_closest():
    chosen, reason = tuning.choose([_point("a", 400, 1, 150, 160), _point("b", 400, 1, 120, 130)], 100, offered=400)
    assert chosen is None and "the closest was b" in reason
    chosen, reason = tuning.choose([_point("a", 40, 1, 50, 60)], 100, offered=400)
    assert chosen["label"] == "a" and "none kept up with the offered 400 calls/s" in reason


def test_the_grid_is_a_product_without_impossible_or_duplicate_configurations():
    configs = tuning.grid_configs(
        {"max_batch_size": [0, 4], "max_queue_delay_us": [0, 100], "preferred_batch_sizes": [[], [2, 8]],
         "instance_count": [1]}
    )  # fmt: skip
    labels = [tuning.config_label(c.as_dict()) for c in configs]
    assert labels == ["b0 i1", "b4 d0µs i1", "b4 d0µs p[2] i1", "b4 d100µs i1", "b4 d100µs p[2] i1"]


# --- refusals -----------------------------------------------------------------------------------


@pytest.fixture
def fleet(db, staff_user):
    """A set of the test model live on `live-1`, and a free server `spare-1` for the dedicated replica."""
    InferenceServerFactory(name="live-1")
    mv = ModelVersionFactory(model_name="tuned", actor=staff_user)
    rs = services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=staff_user)
    spare = InferenceServerFactory(name="spare-1")
    return rs, spare


def _synthetic(rs, actor, **kwargs):
    values = {"arrival": "synthetic", "rate_per_second": 10, "grid": SMALL, "repeats": 2, "point_seconds": 1,
              "warmup_seconds": 0, **kwargs}  # fmt: skip
    return tuning.request_batching_sweep(replica_set_id=rs.pk, actor=actor, **values)


def _refused(code, call):
    with pytest.raises(ServiceError) as caught:
        call()
    assert caught.value.code == code, caught.value.detail
    assert not BatchingSweep.objects.exists()
    event = AuditEvent.objects.filter(event_type="deployment.sweep.rejected").order_by("-pk").first()
    assert event is not None and event.error_code == code
    return caught.value


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad",
    [
        {"grid": ["max_batch_size"]},
        {"grid": {"max_batch_sizes": [1]}},
        {"grid": {"max_batch_size": []}},
        {"grid": {"max_batch_size": [1, "8"]}},
        {"grid": {"max_batch_size": [-1]}},
        {"grid": {"instance_count": [0]}},
        {"grid": {"max_queue_delay_us": [True]}},
        {"grid": {"preferred_batch_sizes": [4]}},
        {"grid": {"max_batch_size": list(range(1, 17)), "max_queue_delay_us": [0, 1, 2, 3]}},  # 128 configurations
        {"repeats": 0},
        {"repeats": 50},
        {"point_seconds": 0.1},
        {"slo_p99_ms": 0},
        {"slo_p99_ms": "fast"},
        {"rate_per_second": 0},
        {"rate_per_second": None},
        {"rate_per_second": 10**6},
        {"burstiness": 50},
        {"arrival": "replayed"},
        {"point_seconds": 600, "repeats": 20},  # hours of sweeping
    ],
)
def test_bad_input_is_refused_as_invalid_sweep_and_nothing_is_saved(fleet, staff_user, bad):
    rs, _ = fleet
    _refused("invalid_sweep", lambda: _synthetic(rs, staff_user, **bad))


def _forget_figures(model_id: int) -> None:
    """Figures a previous session left in Redis under the same model id (ids restart per session)."""
    client = redis_client()
    if client is not None:
        for key in client.scan_iter(match=f"sv:slo:{model_id}:*"):
            client.delete(key)


@pytest.mark.django_db
def test_a_recorded_sweep_of_a_model_with_no_traffic_data(fleet, staff_user):
    rs, _ = fleet
    _forget_figures(rs.model_id)
    err = _refused("no_traffic_data", lambda: tuning.request_batching_sweep(replica_set_id=rs.pk, actor=staff_user))
    assert err.status_code == 409 and "synthetic" in err.detail
    _refused("invalid_sweep", lambda: _synthetic(rs, staff_user, arrival="recorded"))  # recorded takes no rate


@pytest.mark.django_db
def test_a_recorded_sweep_reads_rate_and_burstiness_from_the_gateways_figures(fleet, staff_user):
    rs, spare = fleet
    _forget_figures(rs.model_id)
    now = time.time()
    for second, count in enumerate([3, 0, 9, 3, 0, 9]):
        for _ in range(count):
            slo.recorder.record(rs.model_id, rs.model_version.version, ok=True, latency_ms=4, at=now - 30 + second)
    slo.recorder.flush()

    sweep = tuning.request_batching_sweep(replica_set_id=rs.pk, window_seconds=60, grid=SMALL, actor=staff_user)

    assert (sweep.arrival, sweep.rate_per_second, sweep.window_seconds) == ("recorded", 4.0, 60)
    assert sweep.burstiness == pytest.approx((statistics.pvariance([3, 0, 9, 3, 0, 9]) / 4) ** 0.5, abs=0.001)
    assert sweep.server == spare and sweep.state == SweepState.PENDING


@pytest.mark.django_db
def test_a_retired_set_a_second_sweep_and_no_free_server_are_refused(fleet, staff_user):
    rs, spare = fleet
    first = _synthetic(rs, staff_user)
    with pytest.raises(ServiceError) as caught:
        _synthetic(rs, staff_user)
    assert caught.value.code == "sweep_in_progress"
    assert list(BatchingSweep.objects.all()) == [first]

    BatchingSweep.objects.all().delete()
    spare.delete()  # only live-1 is left, and it holds the live replica
    err = _refused("placement_impossible", lambda: _synthetic(rs, staff_user))
    assert err.reasons == ["live-1: already holds a replica of this version"]
    sweep = _synthetic(rs, staff_user, allow_shared_server=True)
    assert sweep.server.name == "live-1"
    BatchingSweep.objects.all().delete()

    services.retire_replica_set(replica_set_id=rs.pk, actor=staff_user)
    _refused("replica_set_retired", lambda: _synthetic(rs, staff_user, allow_shared_server=True))


@pytest.mark.django_db
def test_a_server_running_another_sweep_is_not_used(fleet, staff_user):
    rs, spare = fleet
    other = ModelVersionFactory(model_name="other", actor=staff_user)
    other_set = services.request_replica_set(model_version_id=other.pk, replicas=1, actor=staff_user)
    busy = _synthetic(other_set, staff_user, allow_shared_server=True)
    assert busy.server == spare or busy.server.name == "live-1"
    mine = _synthetic(rs, staff_user, allow_shared_server=True)
    assert mine.server != busy.server


@pytest.mark.django_db
def test_an_abandoned_sweep_does_not_hold_its_set_forever(fleet, staff_user):
    rs, _ = fleet
    stale = _synthetic(rs, staff_user)
    BatchingSweep.objects.filter(pk=stale.pk).update(
        state=SweepState.RUNNING, started_at=stale.created_at - timedelta(days=1)
    )
    fresh = _synthetic(rs, staff_user)
    stale.refresh_from_db()
    assert stale.state == SweepState.FAILED and "abandoned" in stale.error
    assert fresh.state == SweepState.PENDING


# --- the API and the admin ----------------------------------------------------------------------

URL = "/api/v1/deployments/batching-sweeps/"


@pytest.mark.django_db
def test_the_api_requests_and_reads_sweeps_with_the_roles_of_replica_sets(
    fleet, staff_client, auditor_client, user_client
):
    rs, spare = fleet
    body = {"replica_set": rs.pk, "arrival": "synthetic", "rate_per_second": 20, "grid": SMALL, "repeats": 2}

    answer = staff_client.post(URL, body, format="json")

    assert answer.status_code == 202, answer.content
    data = answer.json()
    assert (data["state"], data["model"], data["server"]) == ("pending", "tuned", "spare-1")
    assert data["rate_per_second"] == 20
    assert data["tune_name"] == f"tuned--v1--tune{data['id']}"
    assert staff_client.post(URL, body, format="json").json()["code"] == "sweep_in_progress"
    assert auditor_client.get(URL).json()["results"][0]["id"] == data["id"]
    assert auditor_client.get(f"{URL}{data['id']}/").status_code == 200
    assert auditor_client.post(URL, body, format="json").status_code == 403
    assert user_client.get(URL).status_code == 403
    bad = staff_client.post(URL, {**body, "grid": {"max_batch_size": [0.5]}}, format="json")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_sweep")


@pytest.mark.django_db
def test_a_token_restricted_to_another_model_cannot_sweep_this_one(fleet, staff_user):
    from django.utils import timezone
    from rest_framework.test import APIClient

    from apps.accounts.services import issue_token

    rs, _ = fleet
    other = ModelVersionFactory(model_name="elsewhere", actor=staff_user)
    _, token = issue_token(user=staff_user, name="narrow", scopes=("read", "manage"), model_ids=[other.model_id],
                           actor=staff_user, otp_verified_at=timezone.now())  # fmt: skip
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    answer = client.post(URL, {"replica_set": rs.pk, "arrival": "synthetic", "rate_per_second": 5}, format="json")
    assert (answer.status_code, answer.json()["code"]) == (404, "replica_set_not_found")
    assert not BatchingSweep.objects.exists()


def _measured(label, tp, p99, config):
    spread = {"mean": tp, "stdev": 1.0, "min": tp - 1, "max": tp + 1}
    return {"label": label, "config": config, "throughput": spread, "errors": 0, "sent": 100, "lag_ms_max": 1.0,
            "cpu_ms_per_call": 0.2, "p99_ms": {"mean": p99, "stdev": 2.0, "min": p99 - 2, "max": p99 + 2},
            "p50_ms": {"mean": p99 / 2, "stdev": 1.0, "min": p99 / 2 - 1, "max": p99 / 2 + 1}}  # fmt: skip


def test_the_chart_and_table_show_spread_the_slo_and_the_choice_and_escape_labels():
    chosen = {"max_batch_size": 8}
    points = [
        _measured("b1 <script>", 40, 12, {"max_batch_size": 1}),
        _measured("b8", 55, 30, chosen),
        {"label": "b16", "config": {"max_batch_size": 16}, "error": "refused <b>"},
    ]
    svg = str(chart(points, 50, chosen))
    assert svg.startswith("<svg") and "SLO p99 50 ms" in svg and "★" in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 3  # the frame and two bars (the refused point has none)
    html = str(table(points, chosen))
    assert "55 ± 1 (54–56)" in html and "chosen" in html and "refused &lt;b&gt;" in html


@pytest.mark.django_db
def test_the_admin_shows_a_sweep_with_its_table_and_chart(fleet, staff_user, staff_session):
    rs, _ = fleet
    sweep = _synthetic(rs, staff_user)
    chosen = {"max_batch_size": 8, "dynamic_batching": True, "preferred_batch_sizes": [], "max_queue_delay_us": 0,
              "instance_count": 1, "kind": "KIND_CPU"}  # fmt: skip
    BatchingSweep.objects.filter(pk=sweep.pk).update(
        state=SweepState.DONE, chosen=chosen, points=[_measured("b8 d0µs i1", 55, 30, chosen)], reason="the best"
    )
    page = staff_session.get(f"/admin/deployments/batchingsweep/{sweep.pk}/change/").content.decode()
    assert "<svg" in page and "55 ± 1 (54–56)" in page and "the best" in page
    listing = staff_session.get("/admin/deployments/batchingsweep/").content.decode()
    assert "b8 d0µs i1" in listing
