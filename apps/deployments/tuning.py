"""The batching tuner (issue 16, docs/tuning.md): sweep a replica set's batching settings on a
dedicated replica against a recorded or synthetic arrival pattern, and pick the configuration with
the most throughput whose p99 stays under the SLO.

Services: request_batching_sweep (audited `deployment.sweep.request`, refusals audited as
`deployment.sweep.rejected` with a stable code and nothing saved) and run_batching_sweep (the
Celery task's body: claims the row, loads the dedicated replica under its own Triton name — no
Deployment row, so no gateway route — measures every point `repeats` times, unloads it at the end
whatever happens; audited `deployment.sweep.start` then `.finish` or `.fail`). Applying the chosen
configuration is a canary rollout of the live set (another module).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.context import current_request_id
from apps.core.errors import Conflict, ServiceError, _, get_or_404
from inference_backend import loadgen
from inference_backend.client import TritonError, TritonUnavailable, clean_upstream_text
from inference_backend.config import BatchingSettings

from . import slo
from .credentials import credential_for
from .models import (
    UNFINISHED_SWEEP_STATES,
    ArrivalKind,
    BatchingSweep,
    Deployment,
    ReplicaSet,
    ReplicaSetState,
    SweepState,
    tune_model_name,
)
from .scheduler import Ask, PlacementImpossible, place
from .services import _candidates, render_for_triton, required_backend, smoke_inputs
from .transport import client_for

logger = logging.getLogger(__name__)

GRID_FIELDS = ("max_batch_size", "max_queue_delay_us", "preferred_batch_sizes", "instance_count")
DEFAULT_GRID = {
    "max_batch_size": [1, 4, 8, 16],
    "max_queue_delay_us": [0, 500, 2000],
    "preferred_batch_sizes": [[]],
    "instance_count": [1, 2],
}
# Per value: (lowest, highest). max_batch_size 0 is "no batching" (a baseline); the queue delay at most 1 s.
LIMITS = {"max_batch_size": (0, 1024), "max_queue_delay_us": (0, 1_000_000), "instance_count": (1, 16)}
MAX_VALUES = 16  # values per setting
LOAD_OVERHEAD_SECONDS = 5.0  # a reload and its smoke call, for the time budget
MAX_WINDOW_SECONDS = 24 * 3600


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _invalid(detail: str, field: str | None = "grid") -> ServiceError:
    return ServiceError("invalid_sweep", detail, field=field)


def _values(grid: dict, name: str) -> list:
    values = grid.get(name, DEFAULT_GRID[name])
    if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
        raise _invalid(
            _("grid.%(name)s is a list of 1 to %(max_values)s values") % {"name": name, "max_values": MAX_VALUES}
        )
    if name == "preferred_batch_sizes":
        for sizes in values:
            if not isinstance(sizes, list) or not all(_whole(s, 1, LIMITS["max_batch_size"][1]) for s in sizes):
                raise _invalid(_("grid.preferred_batch_sizes is a list of lists of batch sizes, e.g. [[], [4, 8]]"))
        return [tuple(sorted(set(sizes))) for sizes in values]
    low, high = LIMITS[name]
    if not all(_whole(v, low, high) for v in values):
        raise _invalid(
            _("grid.%(name)s values are whole numbers from %(low)s to %(high)s")
            % {"name": name, "low": low, "high": high}
        )
    return values


def grid_configs(grid, base: BatchingSettings | None = None) -> list[BatchingSettings]:
    """Every configuration of the grid (the cartesian product), in grid order, without duplicates.
    A preferred batch size above a configuration's max_batch_size is left out of that configuration;
    max_batch_size 0 is Triton without batching (no queue delay, no preferred sizes). Raises
    ServiceError `invalid_sweep` for a grid that is not a map of the four settings to lists of
    valid values, or that has more than TUNER_MAX_POINTS configurations."""
    if not isinstance(grid, dict) or set(grid) - set(GRID_FIELDS):
        raise _invalid(
            _("grid maps some of %(grid_fields)s to lists of values") % {"grid_fields": ", ".join(GRID_FIELDS)}
        )
    lists = [_values(grid, name) for name in GRID_FIELDS]
    base = base or BatchingSettings()
    out: list[BatchingSettings] = []
    for batch, delay, sizes, instances in itertools.product(*lists):
        if batch == 0:
            config = replace(base, max_batch_size=0, dynamic_batching=False, preferred_batch_sizes=(),
                             max_queue_delay_us=0, instance_count=instances)  # fmt: skip
        else:
            preferred = tuple(s for s in sizes if s <= batch)
            config = replace(base, max_batch_size=batch, dynamic_batching=True, max_queue_delay_us=delay,
                             preferred_batch_sizes=preferred, instance_count=instances)  # fmt: skip
        if config not in out:
            out.append(config)
            if len(out) > settings.TUNER_MAX_POINTS:  # at once: 16^4 combinations deduplicated would pin a CPU
                raise _invalid(
                    _("the grid has more than %(tuner_max_points)s configurations")
                    % {"tuner_max_points": settings.TUNER_MAX_POINTS}
                )
    return out


def config_label(config: dict) -> str:
    """A short name of a configuration, e.g. `b8 d500µs p[4,8] i2` (`b0` = no batching)."""
    if not config["max_batch_size"]:
        return f"b0 i{config['instance_count']}"
    sizes = ",".join(str(s) for s in config["preferred_batch_sizes"])
    preferred = f" p[{sizes}]" if sizes else ""
    return f"b{config['max_batch_size']} d{config['max_queue_delay_us']}µs{preferred} i{config['instance_count']}"


# --- the arrival pattern ---------------------------------------------------------------------------


def _arrival(rs: ReplicaSet, arrival: str, rate_per_second, burstiness, window_seconds) -> tuple[float, float, int]:
    """(rate, burstiness, window) the sweep offers. Recorded: from the gateway's per-second figures of
    the set's version over the window (docs/rollouts.md, apps/deployments/slo.py)."""
    if arrival == ArrivalKind.SYNTHETIC:
        if isinstance(rate_per_second, bool) or not isinstance(rate_per_second, int | float) or rate_per_second <= 0:
            raise _invalid(_("a synthetic sweep needs rate_per_second > 0"), "rate_per_second")
        if isinstance(burstiness, bool) or not isinstance(burstiness, int | float):
            raise _invalid(_("burstiness is a number (1: Poisson)"), "burstiness")
        if not loadgen.MIN_BURSTINESS <= burstiness <= loadgen.MAX_BURSTINESS:
            raise _invalid(
                _("burstiness is from %(min_burstiness)s to %(max_burstiness)s")
                % {"min_burstiness": loadgen.MIN_BURSTINESS, "max_burstiness": loadgen.MAX_BURSTINESS},
                "burstiness",
            )
        return float(rate_per_second), float(burstiness), 0
    if arrival != ArrivalKind.RECORDED:
        raise _invalid(_("arrival is one of %(values)s") % {"values": ", ".join(ArrivalKind.values)}, "arrival")
    if rate_per_second is not None:
        raise _invalid(
            _("a recorded sweep reads its rate from the gateway; give no rate_per_second"), "rate_per_second"
        )
    window = settings.TUNER_WINDOW_SECONDS if window_seconds is None else window_seconds
    limit = min(MAX_WINDOW_SECONDS, int(settings.SLO_RETENTION_SECONDS))
    if not _whole(window, 10, limit):
        raise _invalid(_("window_seconds is a whole number from 10 to %(limit)s") % {"limit": limit}, "window_seconds")
    counts = slo.calls_per_second(rs.model_id, rs.model_version.version, window)
    pattern = loadgen.pattern_from_counts(counts)
    if pattern is None:
        raise Conflict(
            "no_traffic_data",
            _(
                "the gateway recorded no call of %(model)s v%(version)s in the last %(window)s s: "
                "nothing to replay. Widen window_seconds, or sweep a synthetic arrival with "
                "rate_per_second"
            )
            % {"model": rs.model.name, "version": rs.model_version.version, "window": window},
            "arrival",
        )
    return round(pattern[0], 3), round(pattern[1], 3), window


def _check_scalars(slo_p99_ms, repeats, point_seconds, warmup_seconds) -> None:
    if isinstance(slo_p99_ms, bool) or not isinstance(slo_p99_ms, int | float) or not 0 < slo_p99_ms <= 600_000:
        raise _invalid(_("slo_p99_ms is a number of ms above 0 (at most 600000)"), "slo_p99_ms")
    if not _whole(repeats, 1, 20):
        raise _invalid(_("repeats is a whole number from 1 to 20"), "repeats")
    for name, value, low in (("point_seconds", point_seconds, 0.5), ("warmup_seconds", warmup_seconds, 0.0)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= 600:
            raise _invalid(_("%(name)s is a number of seconds from %(low)s to 600") % {"name": name, "low": low}, name)


def _budget_seconds(points: int, repeats: int, point_seconds: float, warmup_seconds: float) -> float:
    return points * (repeats * point_seconds + warmup_seconds + LOAD_OVERHEAD_SECONDS)


# --- the dedicated replica's server ----------------------------------------------------------------


def _place_tune_replica(rs: ReplicaSet, allow_shared_server: bool):
    """The server for the dedicated replica: one the scheduler allows for the set (labels,
    accelerator, backend, memory), not running another sweep, and — unless allowed — not holding
    a live replica of the version, so the live replicas keep their cores. Raises PlacementImpossible."""
    ask = Ask(count=1, labels=rs.labels or {}, accelerator=rs.accelerator,
              backend=required_backend(rs.model_version), memory_mb=rs.memory_mb)  # fmt: skip
    busy = dict(
        BatchingSweep.objects.filter(state__in=UNFINISHED_SWEEP_STATES, server__isnull=False)
        .values_list("server_id", "pk")
    )  # fmt: skip
    candidates, reasons = [], []
    for candidate in _candidates(rs.model_version_id):
        if candidate.id in busy:
            reasons.append(
                _("%(server)s: runs sweep #%(sweep)s") % {"server": candidate.name, "sweep": busy[candidate.id]}
            )
            continue
        candidates.append(replace(candidate, holds_version=False) if allow_shared_server else candidate)
    try:
        return place(ask, candidates)[0]
    except PlacementImpossible as err:
        raise PlacementImpossible(ask, [], sorted(reasons + err.reasons)) from err


# --- request ---------------------------------------------------------------------------------------


def request_batching_sweep(
    *,
    replica_set_id: int,
    arrival: str = ArrivalKind.RECORDED,
    rate_per_second: float | None = None,
    burstiness: float = 1.0,
    window_seconds: int | None = None,
    slo_p99_ms: float | None = None,
    grid: dict | None = None,
    repeats: int | None = None,
    point_seconds: float | None = None,
    warmup_seconds: float | None = None,
    allow_shared_server: bool = False,
    actor,
    source: Source = SYSTEM,
) -> BatchingSweep:
    """Record a sweep of a replica set's batching and enqueue it (after commit). Guarantees: the
    sweep's server is chosen now (the scheduler's rules for the set, no other sweep on it), the
    arrival pattern is fixed now (read from the gateway's figures, or given), and a refusal saves
    nothing but its audit event. Refusals: replica_set_not_found (404), invalid_sweep (400: grid
    too big or bad values, an LLM or a model without a batch dimension), replica_set_retired,
    no_traffic_data, sweep_in_progress, placement_impossible (409)."""
    rs = get_or_404(
        ReplicaSet.objects.select_related("model", "model_version"),
        "replica_set_not_found",
        _("no replica set with id %(replica_set_id)s") % {"replica_set_id": replica_set_id},
        pk=replica_set_id,
    )
    asked = {"replica_set": rs.pk, "arrival": arrival, "rate_per_second": rate_per_second, "grid": grid,
             "repeats": repeats, "slo_p99_ms": slo_p99_ms}  # fmt: skip
    try:
        return _request(rs, arrival, rate_per_second, burstiness, window_seconds, slo_p99_ms, grid, repeats,
                        point_seconds, warmup_seconds, allow_shared_server, actor, source)  # fmt: skip
    except ServiceError as err:
        extra = {"reasons": err.reasons} if isinstance(err, PlacementImpossible) else {}
        with transaction.atomic():
            record_event("deployment.sweep.rejected", actor=actor, source=source, target=rs, outcome=Outcome.FAILURE,
                         error_code=err.code, details={**asked, "reason": err.detail_en, **extra})  # fmt: skip
        raise


def _request(rs, arrival, rate, burstiness, window, slo_p99_ms, grid, repeats, point_seconds, warmup_seconds,
             allow_shared, actor, source) -> BatchingSweep:  # fmt: skip
    slo_p99_ms = settings.TUNER_DEFAULT_SLO_P99_MS if slo_p99_ms is None else slo_p99_ms
    repeats = settings.TUNER_REPEATS if repeats is None else repeats
    point_seconds = settings.TUNER_POINT_SECONDS if point_seconds is None else point_seconds
    warmup_seconds = settings.TUNER_WARMUP_SECONDS if warmup_seconds is None else warmup_seconds
    _check_scalars(slo_p99_ms, repeats, point_seconds, warmup_seconds)
    mv = rs.model_version
    if mv.is_llm or not mv.signature.get("batch_dynamic"):
        raise _invalid(
            _("%(mv)s has no batch dimension Triton can batch on: nothing to tune") % {"mv": mv}, "replica_set"
        )
    configs = grid_configs(DEFAULT_GRID if grid is None else grid, _base_batching(rs))
    budget = _budget_seconds(len(configs), repeats, point_seconds, warmup_seconds)
    if budget > settings.TUNER_MAX_SECONDS:
        raise _invalid(
            _("the sweep would take about %(budget)s s; at most %(tuner_max_seconds)s s")
            % {"budget": format(budget, ".0f"), "tuner_max_seconds": format(settings.TUNER_MAX_SECONDS, ".0f")}
        )
    if rs.state == ReplicaSetState.RETIRED:
        raise Conflict(
            "replica_set_retired", _("replica set %(rs)s is retired: nothing serves it to tune") % {"rs": rs.pk}
        )
    rate, burstiness, window = _arrival(rs, arrival, rate, burstiness, window)
    if rate > settings.TUNER_MAX_RATE:
        raise _invalid(
            _("%(rate)s calls/s is above what the tuner drives (%(tuner_max_rate)s)")
            % {"rate": format(rate, ".0f"), "tuner_max_rate": format(settings.TUNER_MAX_RATE, ".0f")},
            "arrival",
        )
    try:
        with transaction.atomic():
            ReplicaSet.objects.select_for_update().filter(pk=rs.pk).first()  # one request per set at a time
            _expire_abandoned(rs, actor)
            if BatchingSweep.objects.filter(replica_set=rs, state__in=UNFINISHED_SWEEP_STATES).exists():
                raise Conflict(
                    "sweep_in_progress", _("replica set %(rs)s already has a sweep pending or running") % {"rs": rs.pk}
                )
            server = _place_tune_replica(rs, bool(allow_shared))
            sweep = BatchingSweep.objects.create(
                replica_set=rs, requested_by=acting_user(actor), arrival=arrival, rate_per_second=rate,
                burstiness=burstiness, window_seconds=window, slo_p99_ms=float(slo_p99_ms),
                grid=_stored_grid(grid), repeats=repeats, point_seconds=float(point_seconds),
                warmup_seconds=float(warmup_seconds), server_id=server.id,
            )  # fmt: skip
            sweep.tune_name = tune_model_name(rs.model.name, mv.version, sweep.pk)
            sweep.save(update_fields=["tune_name"])
            record_event("deployment.sweep.request", actor=actor, source=source, target=sweep,
                         details={"after": snapshot(sweep), "configurations": len(configs),
                                  "estimated_seconds": round(budget)})  # fmt: skip
            _enqueue(sweep)
    except IntegrityError as err:  # the partial unique constraint: a request raced this one
        raise Conflict(
            "sweep_in_progress", _("replica set %(rs)s already has a sweep pending or running") % {"rs": rs.pk}
        ) from err
    return sweep


def _stored_grid(grid) -> dict:
    grid = DEFAULT_GRID if grid is None else grid
    return {name: grid.get(name, DEFAULT_GRID[name]) for name in GRID_FIELDS}


def _base_batching(rs: ReplicaSet) -> BatchingSettings:
    """The settings a sweep does not vary (kind) come from the set's newest replica."""
    dep = rs.deployments.order_by("-created_at").first()
    return dep.batching() if dep is not None else BatchingSettings()


def _expire_abandoned(rs: ReplicaSet, actor) -> None:
    """A sweep whose worker stopped (killed, machine restarted) would hold its set — and its server,
    for every other set's sweeps — forever: one still unfinished well past its time budget, of ANY
    set, is failed, audited, before a new one is requested, and its dedicated replica (which its dead
    worker never unloaded) is unloaded after the commit, best effort. Rows another request is
    expiring are skipped (skip_locked), so two requests never wait on each other here."""
    unfinished = BatchingSweep.objects.select_for_update(skip_locked=True, of=("self",))
    for sweep in unfinished.filter(state__in=UNFINISHED_SWEEP_STATES).select_related("server").order_by("pk"):
        configs = len(grid_configs(sweep.grid))
        budget = _budget_seconds(configs, sweep.repeats, sweep.point_seconds, sweep.warmup_seconds)
        since = sweep.started_at or sweep.created_at
        if timezone.now() > since + timedelta(seconds=2 * budget + 600):
            _finish(sweep, SweepState.FAILED, error="abandoned: no worker finished it within twice its time budget")
            if sweep.server_id is not None and sweep.started_at is not None:
                server, name = sweep.server, sweep.tune_name
                transaction.on_commit(lambda server=server, name=name: _unload_abandoned(server, name))


def _unload_abandoned(server, tune_name: str) -> None:
    """Unload a dead worker's dedicated replica; a server that does not answer is only logged (the
    replica then goes with the server's next restart)."""
    try:
        with client_for(server.http_url, settings.TRITON_TIMEOUT, credential_for(server)) as client:
            client.unload_model(tune_name, timeout=settings.TRITON_TIMEOUT)
    except Exception as err:  # noqa: BLE001 - after the commit, a failure must not fail the request
        logger.warning("could not unload abandoned sweep replica %s on %s: %s", tune_name, server.name, err)


def _enqueue(sweep: BatchingSweep) -> None:
    from .tasks import run_batching_sweep_task

    rid = current_request_id()
    transaction.on_commit(lambda: run_batching_sweep_task.delay(sweep.pk, rid))


def snapshot(sweep: BatchingSweep) -> dict:
    """What the audit trail keeps of a sweep's request."""
    return {
        "model": sweep.replica_set.model.name,
        "version": sweep.replica_set.model_version.version,
        "replica_set": sweep.replica_set_id,
        "arrival": sweep.arrival,
        "rate_per_second": sweep.rate_per_second,
        "burstiness": sweep.burstiness,
        "window_seconds": sweep.window_seconds,
        "slo_p99_ms": sweep.slo_p99_ms,
        "grid": sweep.grid,
        "repeats": sweep.repeats,
        "point_seconds": sweep.point_seconds,
        "server": sweep.server.name if sweep.server_id else None,
        "tune_name": sweep.tune_name,
    }


# --- run -------------------------------------------------------------------------------------------


def run_batching_sweep(sweep_id: int) -> BatchingSweep | None:
    """Run a pending sweep (the Celery task's body): None when it is gone or already claimed.
    The dedicated replica is unloaded at the end, on failure too; the row records every point as
    it is measured, then the choice (done) or the error (failed). Work is attributed to the person
    who asked for the sweep."""
    if not BatchingSweep.objects.filter(pk=sweep_id, state=SweepState.PENDING).update(
        state=SweepState.RUNNING, started_at=timezone.now()
    ):
        return None
    sweep = BatchingSweep.objects.select_related(
        "replica_set__model", "replica_set__model_version__artifact__data_key", "server"
    ).get(pk=sweep_id)
    with transaction.atomic():
        record_event("deployment.sweep.start", actor=sweep.requested_by, target=sweep,
                     details={"server": sweep.server.name if sweep.server_id else None, "tune_name": sweep.tune_name,
                              "rate_per_second": sweep.rate_per_second, "burstiness": sweep.burstiness})  # fmt: skip
    try:
        if sweep.server_id is None:
            raise TritonError(None, "the server chosen for the dedicated replica was removed")
        _sweep_points(sweep)
    except Exception as err:  # noqa: BLE001 - any failure ends the sweep failed, with its reason recorded
        logger.warning("batching sweep %s failed: %s", sweep_id, err)
        message = err.message if isinstance(err, TritonError) else f"{type(err).__name__}: {err}"
        return _finish(sweep, SweepState.FAILED, error=clean_upstream_text(message)[:2000])
    chosen, reason = choose(sweep.points, sweep.slo_p99_ms, sweep.rate_per_second)
    return _finish(sweep, SweepState.DONE, chosen=chosen, reason=reason)


def _sweep_points(sweep: BatchingSweep) -> None:
    configs = grid_configs(sweep.grid, _base_batching(sweep.replica_set))
    server = sweep.server
    with client_for(server.http_url, settings.TRITON_TIMEOUT, credential_for(server)) as client:
        try:
            for config in configs:
                point = _measure(client, sweep, config)
                sweep.points = [*sweep.points, point]
                BatchingSweep.objects.filter(pk=sweep.pk).update(points=sweep.points)
        finally:
            _unload(client, sweep)


def _measure(client, sweep: BatchingSweep, config: BatchingSettings) -> dict:
    """Load one configuration on the dedicated replica, warm it up, drive it `repeats` times (the same
    arrival times for every configuration: repeat i uses seed i), and summarise."""
    rs = sweep.replica_set
    replica = Deployment(model=rs.model, model_version=rs.model_version, server=sweep.server, **config.as_dict())
    point = {"config": config.as_dict(), "label": config_label(config.as_dict())}
    try:
        cfg, files = render_for_triton(replica, name=sweep.tune_name)
        client.load_model(sweep.tune_name, cfg, files, timeout=settings.TRITON_LOAD_TIMEOUT)
        inputs = smoke_inputs(rs.model_version.signature)
        client.infer_json(sweep.tune_name, inputs)
    except TritonUnavailable:
        raise
    except TritonError as err:  # Triton refused this configuration: a point without figures
        return {**point, "error": clean_upstream_text(err.message)[:500]}
    timeout = min(30.0, max(5.0, 10 * sweep.slo_p99_ms / 1000.0))

    def send():
        client.infer_json(sweep.tune_name, inputs, timeout=timeout)

    def drive(seconds: float, seed: int) -> loadgen.RunResult:
        offsets = loadgen.arrival_offsets(sweep.rate_per_second, sweep.burstiness, seconds, seed)
        return loadgen.run_open_loop(send, offsets, seconds=seconds, in_flight=settings.TUNER_IN_FLIGHT)

    if sweep.warmup_seconds:
        drive(sweep.warmup_seconds, seed=10_000)
    runs = [drive(sweep.point_seconds, seed=i) for i in range(sweep.repeats)]
    return {**point, **loadgen.summarise(runs), "runs": [r.as_dict() for r in runs]}


def _unload(client, sweep: BatchingSweep) -> None:
    try:
        client.unload_model(sweep.tune_name)
    except TritonUnavailable:
        raise
    except TritonError as err:
        if "not found" not in err.message.lower() and "unknown" not in err.message.lower():
            raise


def choose(points: list[dict], slo_p99_ms: float, offered: float) -> tuple[dict | None, str]:
    """The configuration to apply, and why. A point qualifies when Triton loaded it, no call failed,
    and its p99 stayed under the SLO in every repeat (the worst repeat, not the mean). Among those,
    the most throughput (mean of repeats); points whose throughput is within the noise of the best
    (their mean + stdev reaches the best's mean − stdev) are equals, and of equals the lowest mean
    p99 wins, then fewer instances, then the smaller max_batch_size (less memory, less waiting)."""
    measured = [p for p in points if "error" not in p]
    qualified = [p for p in measured if p["errors"] == 0 and p["p99_ms"]["max"] < slo_p99_ms]
    if not qualified:
        if not measured:
            return None, "no configuration could be loaded: nothing measured"
        closest = min(measured, key=lambda p: (p["errors"], p["p99_ms"]["max"]))
        return None, (
            f"no configuration kept p99 under {slo_p99_ms:g} ms without errors in every repeat; the closest was "
            f"{closest['label']} (p99 up to {closest['p99_ms']['max']:g} ms, {closest['errors']} failed call(s))"
        )
    best = max(qualified, key=lambda p: p["throughput"]["mean"])
    floor = best["throughput"]["mean"] - best["throughput"]["stdev"]
    equals = [p for p in qualified if p["throughput"]["mean"] + p["throughput"]["stdev"] >= floor]
    pick = min(
        equals,
        key=lambda p: (p["p99_ms"]["mean"], p["config"]["instance_count"], p["config"]["max_batch_size"]),
    )
    tp, p99 = pick["throughput"], pick["p99_ms"]
    reason = (
        f"{pick['label']}: {tp['mean']:g} ± {tp['stdev']:g} calls/s with p99 {p99['mean']:g} ms "
        f"(at most {p99['max']:g}) under the {slo_p99_ms:g} ms SLO; {len(qualified)} of {len(points)} "
        f"configuration(s) qualified"
    )
    if len(equals) > 1:
        reason += f", {len(equals)} within the noise of the best throughput: the lowest p99 of them"
    if best["throughput"]["mean"] < 0.95 * offered:
        reason += f"; none kept up with the offered {offered:g} calls/s"
    return dict(pick["config"]), reason


def _finish(sweep: BatchingSweep, state: str, *, chosen=None, reason: str = "", error: str = "") -> BatchingSweep:
    with transaction.atomic():
        sweep.state, sweep.chosen, sweep.reason, sweep.error = state, chosen, reason, error
        sweep.finished_at = timezone.now()
        sweep.save(update_fields=["state", "chosen", "reason", "error", "finished_at", "points"])
        failed = state == SweepState.FAILED
        record_event(
            "deployment.sweep.fail" if failed else "deployment.sweep.finish",
            actor=sweep.requested_by,
            target=sweep,
            outcome=Outcome.FAILURE if failed else Outcome.SUCCESS,
            error_code="sweep_failed" if failed else "",
            details={"state": state, "chosen": chosen, "reason": reason, "error": error,
                     "points": len(sweep.points), "tune_name": sweep.tune_name},
        )  # fmt: skip
    return sweep
