"""Batching configuration rollouts: a new batching config for a LIVE replica set of the same version,
applied replica by replica and judged by the gateway's figures per replica. docs/rollouts.md,
"Batching configuration rollouts".

A version rollout moves traffic between two sets; a config rollout cannot (the version and its Triton
name stay the same), so the unit of the canary is the replica:

1. the canary: one replica reloaded in place with the new config (Triton keeps serving the old config
   until the new one is loaded and swaps them), or, for a set of one replica, a surge replica placed by
   the scheduler with the new config beside it (if none can be placed, the only replica is reloaded);
2. held `hold_seconds`, the canary judged on ITS figures (slo.replica_window) against the SLOs;
3. the rest of the set reloaded, held and judged again; then promoted (a surge replica retired).

A breach, a reload Triton refuses, or replicas not reloaded within ROLLOUT_READY_TIMEOUT_SECONDS roll
back: the previous batching is written back on the replicas that took the new one (reloaded in place
again) and a surge replica is retired after the drain. The Rollout row (kind=config, from_set ==
to_set) holds the plan in `config`: {"after": batching, "before": {deployment id: batching},
"canary": [ids], "surge": id | None, "widened_max": [before, during] when the surge raised
max_replicas (put back with it), else None};
`steps` are the number of replicas on the new config after each step. The public functions are
re-exported by apps.deployments.services.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.errors import Conflict, ServiceError, _
from apps.registry.models import Model
from inference_backend.config import BATCHING_FIELDS

from . import slo
from .models import (
    UNFINISHED_ROLLOUT_STATES,
    Deployment,
    Desired,
    Observed,
    ReplicaSet,
    ReplicaSetState,
    Rollout,
    RolloutKind,
    RolloutState,
    RolloutStrategy,
)


def start_config_rollout(
    *,
    replica_set_id: int,
    batching: dict,
    hold_seconds: int = 60,
    slo_max_error_rate: float = 0.01,
    slo_max_p95_ms: float = 1000.0,
    min_calls: int = 20,
    actor,
    source: Source = SYSTEM,
    sweep=None,
    model_id: int | None = None,
) -> Rollout:
    """Start applying `batching` (a full or partial set of BATCHING_FIELDS, merged over the set's current
    config) to the live replica set `replica_set_id`, canary first. Refusals (audited
    `deployment.rollout.rejected`, nothing else saved): replica_set_not_found (404), replica_set_retired,
    replicas_not_ready, rollout_in_progress (409), invalid_batching, batching_unchanged, invalid_hold,
    invalid_slo (400). `sweep`: the batching sweep (or its id) the config was chosen by. `model_id`: the
    model the caller named (a set of another model is not found)."""
    from . import services
    from .rollouts import _reject, _validate_slos

    sweep_id = getattr(sweep, "pk", sweep)
    request = {"replica_set": replica_set_id, "batching": str(batching)[:300], "sweep": sweep_id}
    sets = ReplicaSet.objects.select_related("model", "model_version")
    rs = sets.filter(pk=replica_set_id, **({"model_id": model_id} if model_id is not None else {})).first()
    label = rs.model.name if rs else f"replica set {replica_set_id}"
    try:
        _validate_slos(hold_seconds, slo_max_error_rate, slo_max_p95_ms, min_calls)
        if rs is None:
            raise ServiceError(
                "replica_set_not_found",
                _("no replica set with id %(replica_set_id)s") % {"replica_set_id": replica_set_id},
                404,
            )
        if not isinstance(batching, dict) or not batching:
            raise ServiceError("invalid_batching", _("batching is a map of batching settings"), field="batching")
        with transaction.atomic():
            Model.objects.select_for_update().filter(pk=rs.model_id).first()  # one start per model at a time
            rs = (
                ReplicaSet.objects.select_for_update(of=("self",))
                .select_related("model", "model_version")
                .get(pk=rs.pk)
            )
            if rs.state != ReplicaSetState.ACTIVE:
                raise Conflict("replica_set_retired", _("replica set %(rs)s is retired") % {"rs": rs.pk})
            if Rollout.objects.filter(model_id=rs.model_id, state__in=UNFINISHED_ROLLOUT_STATES).exists():
                raise Conflict(
                    "rollout_in_progress", _("%(model)s already has a rollout in progress") % {"model": rs.model.name}
                )
            deps = list(rs.deployments.select_for_update().filter(desired_state=Desired.ACTIVE).order_by("pk"))
            if not deps or any(d.observed_state != Observed.ACTIVE for d in deps):
                raise Conflict(
                    "replicas_not_ready",
                    _("every replica of set %(rs)s must be active before its config changes") % {"rs": rs.pk},
                )
            current = deps[0].batching().as_dict()
            after = services._batching({**current, **batching}).as_dict()
            request["batching"] = after
            if all(d.batching().as_dict() == after for d in deps):
                raise ServiceError("batching_unchanged", _("the replicas already run this batching"), field="batching")
            rollout = _create(rs, deps, after, hold_seconds, slo_max_error_rate, slo_max_p95_ms, min_calls,
                              sweep_id, actor, source)  # fmt: skip
    except IntegrityError as err:  # a start that raced another past the check
        conflict = Conflict("rollout_in_progress", _("%(label)s already has a rollout in progress") % {"label": label})
        _reject(conflict, model_name=label, actor=actor, source=source, details=request)
        raise conflict from err
    except ServiceError as err:
        _reject(err, model_name=label, actor=actor, source=source, details={**request, "kind": "config"})
        raise
    return rollout


def apply_batching_sweep(
    *,
    sweep_id: int,
    hold_seconds: int = 60,
    slo_max_error_rate: float = 0.01,
    slo_max_p95_ms: float | None = None,
    min_calls: int = 20,
    actor,
    source: Source = SYSTEM,
) -> Rollout:
    """Apply what a batching sweep chose (docs/tuning.md) to the set it swept, as a config rollout
    (start_config_rollout, `sweep` recorded on the rollout). `slo_max_p95_ms` defaults to the sweep's
    p99 SLO (a p95 above it breaks that SLO too). Refusals (audited `deployment.rollout.rejected`):
    sweep_not_found (404), sweep_not_done, no_chosen_config (409), and start_config_rollout's."""
    from .models import BatchingSweep, SweepState
    from .rollouts import _reject

    sweep = BatchingSweep.objects.select_related("replica_set__model").filter(pk=sweep_id).first()
    try:
        if sweep is None:
            raise ServiceError(
                "sweep_not_found", _("no batching sweep with id %(sweep_id)s") % {"sweep_id": sweep_id}, 404
            )
        if sweep.state != SweepState.DONE:
            raise Conflict(
                "sweep_not_done",
                _("sweep %(sweep)s is %(state)s: only a finished sweep is applied")
                % {"sweep": sweep.pk, "state": sweep.state},
            )
        if not sweep.chosen:
            raise Conflict(
                "no_chosen_config",
                _("sweep %(sweep)s chose no configuration: %(value)s")
                % {"sweep": sweep.pk, "value": sweep.reason[:300]},
            )
    except ServiceError as err:
        label = sweep.replica_set.model.name if sweep else f"sweep {sweep_id}"
        _reject(err, model_name=label, actor=actor, source=source, details={"kind": "config", "sweep": sweep_id})
        raise
    return start_config_rollout(
        replica_set_id=sweep.replica_set_id,
        batching=dict(sweep.chosen),
        hold_seconds=hold_seconds,
        slo_max_error_rate=slo_max_error_rate,
        slo_max_p95_ms=float(sweep.slo_p99_ms) if slo_max_p95_ms is None else slo_max_p95_ms,
        min_calls=min_calls,
        actor=actor,
        source=source,
        sweep=sweep,
    )


def _create(rs, deps, after, hold, max_error_rate, max_p95, min_calls, sweep_id, actor, source) -> Rollout:
    from . import services
    from .scheduler import PlacementImpossible

    for dep in deps:  # rows loaded before config rollouts existed: Triton runs their columns
        if not dep.applied_batching:
            dep.applied_batching = dep.batching().as_dict()
            Deployment.objects.filter(pk=dep.pk).update(applied_batching=dep.applied_batching)
    before = {str(d.pk): d.batching().as_dict() for d in deps}
    surge, why = None, ""
    if len(deps) == 1:
        try:
            with transaction.atomic():  # a savepoint: a placement that cannot be made leaves nothing
                surge = services._place_replicas(rs, 1, services._batching(after), actor, source)[0]
        except PlacementImpossible as err:
            why = f"no surge replica could be placed ({err.detail_en[:300]}): the only replica is reloaded in place"
    widened = None
    if surge is not None:
        rs.replicas += 1
        if rs.replicas > rs.max_replicas:  # [before, during]: put back when the surge is retired
            widened = [rs.max_replicas, rs.replicas]
        rs.max_replicas = max(rs.max_replicas, rs.replicas)
        rs.save(update_fields=["replicas", "max_replicas", "updated_at"])
        canary, steps = [surge], [1, 2]
    else:
        canary, steps = [deps[0]], ([1, len(deps)] if len(deps) > 1 else [1])
    plan = {"after": after, "before": before, "canary": [d.pk for d in canary], "surge": surge.pk if surge else None,
            "widened_max": widened}  # fmt: skip
    rollout = Rollout.objects.create(
        model=rs.model,
        from_set=rs,
        to_set=rs,
        kind=RolloutKind.CONFIG,
        strategy=RolloutStrategy.CANARY,
        steps=steps,
        hold_seconds=hold,
        slo_max_error_rate=float(max_error_rate),
        slo_max_p95_ms=float(max_p95),
        min_calls=min_calls,
        state=RolloutState.WAITING_READY,
        config=plan,
        sweep_id=sweep_id,
        reason=why or "waiting for the canary replica to run the new batching",
        created_by=acting_user(actor),
    )
    if surge is None:
        _reconfigure(canary, after)
    record_event(
        "deployment.rollout.start",
        actor=actor,
        source=source,
        target=rollout,
        details={"after": {**summary(rollout), "hold_seconds": hold, "slo_max_error_rate": rollout.slo_max_error_rate,
                           "slo_max_p95_ms": rollout.slo_max_p95_ms, "min_calls": min_calls},
                 "note": why},
    )  # fmt: skip
    return rollout


def _reconfigure(deps, batching: dict) -> list[int]:
    """Write `batching` on replicas whose columns differ and enqueue their reconcile (a reload in place)."""
    from . import services

    changed = []
    for dep in deps:
        if dep.batching().as_dict() == batching:
            continue
        for name in BATCHING_FIELDS:
            setattr(dep, name, batching[name])
        dep.last_error = ""
        dep.save(update_fields=[*BATCHING_FIELDS, "last_error", "updated_at"])
        services._enqueue(dep)
        changed.append(dep.pk)
    return changed


def summary(r: Rollout) -> dict:
    return {
        "kind": RolloutKind.CONFIG,
        "model": r.model.name,
        "version": r.to_set.model_version.version,
        "replica_set": r.to_set_id,
        "batching_before": r.config.get("before"),
        "batching_after": r.config.get("after"),
        "canary": r.config.get("canary"),
        "surge": r.config.get("surge"),
        "steps": r.steps,
        "current_step": r.current_step,
        "state": r.state,
    }


# --- reading -------------------------------------------------------------------------------------


def _live(r: Rollout) -> list[Deployment]:
    return list(
        Deployment.objects.filter(replica_set_id=r.to_set_id, desired_state=Desired.ACTIVE)
        .select_related("server")
        .order_by("pk")
    )


def step_targets(r: Rollout, step: int | None = None) -> list[int]:
    """The replicas that run the new config once step `step` (default: the current one) is reached."""
    step = r.current_step if step is None else step
    if step == 0:
        return list(r.config.get("canary", []))
    return [d.pk for d in _live(r)]


def reconfigured_ids(r: Rollout) -> list[int]:
    """The replicas the current step judges: those that took the new config."""
    after = r.config.get("after")
    targets = set(step_targets(r))
    return [d.pk for d in _live(r) if d.pk in targets and d.batching().as_dict() == after]


def config_window(r: Rollout, now=None) -> slo.Window:
    """The gateway's figures of the reconfigured replicas since the current step started."""
    now = now or timezone.now()
    started = r.step_started_at or now
    seconds = int(now.timestamp()) - int(started.timestamp()) + 1
    return slo.replica_window(reconfigured_ids(r), seconds, now=now.timestamp())


def replica_figures(r: Rollout, now=None) -> list[dict]:
    """Per replica of the set: server, config asked and loaded, and its figures since the step (or the
    rollout) started — what the API and the admin page show."""
    now = now or timezone.now()
    started = r.step_started_at or r.created_at
    seconds = int(now.timestamp()) - int(started.timestamp()) + 1
    after = r.config.get("after")
    rows = []
    for dep in Deployment.objects.filter(replica_set_id=r.to_set_id).select_related("server").order_by("pk"):
        if (
            dep.desired_state != Desired.ACTIVE
            and str(dep.pk) not in r.config.get("before", {})
            and (dep.pk != r.config.get("surge"))
        ):
            continue
        rows.append({
            "deployment": dep.pk,
            "server": dep.server.name,
            "desired_state": dep.desired_state,
            "observed_state": dep.observed_state,
            "surge": dep.pk == r.config.get("surge"),
            "new_config": dep.batching().as_dict() == after,
            "reloaded": dep.applied_batching == dep.batching().as_dict(),
            "last_error": dep.last_error,
            "figures": slo.replica_window([dep.pk], seconds, now=now.timestamp()).as_dict(),
        })  # fmt: skip
    return rows


def config_diff(r: Rollout) -> dict:
    """{field: [before, after]} for the batching fields the rollout changes (before: the first replica's)."""
    before = next(iter(r.config.get("before", {}).values()), {})
    after = r.config.get("after", {})
    return {n: [before.get(n), after.get(n)] for n in BATCHING_FIELDS if before.get(n) != after.get(n)}


# --- the controller --------------------------------------------------------------------------------


def advance(r: Rollout, now, actor) -> str:
    """One look at a config rollout (locked by rollouts.advance_rollout): wait for the current step's
    replicas to run the new config, judge them, step, promote or roll back."""
    from .rollouts import breaches

    if r.state in (RolloutState.PENDING, RolloutState.WAITING_READY):
        return _advance_waiting(r, now, actor)
    figures = config_window(r, now)
    breached = breaches(r, figures)
    if breached:
        reason = (
            f"SLO breached at step {r.current_step + 1} ({r.steps[r.current_step]} replica(s) on the new batching): "
            f"{', '.join(breached)} over {figures.calls} calls ({figures.errors} failed)"
        )
        _restore(r, RolloutState.ROLLED_BACK, reason, figures, actor, SYSTEM, now, by="controller")
        return "rolled_back"
    if (now - r.step_started_at).total_seconds() < r.hold_seconds:
        return "holding"
    if figures.calls < r.min_calls:
        reason = f"step {r.current_step + 1} held; waiting for {r.min_calls} calls (seen {figures.calls})"
        if r.reason != reason:
            Rollout.objects.filter(pk=r.pk).update(reason=reason, updated_at=now)
        return "waiting_calls"
    if r.current_step + 1 >= len(r.steps):
        _promote(r, f"every step held within the SLOs ({figures.calls} calls in the last step)", figures, actor,
                 SYSTEM, now, by="controller")  # fmt: skip
        return "promoted"
    before = {"state": r.state, "current_step": r.current_step}
    r.current_step += 1
    changed = _reconfigure(
        Deployment.objects.select_for_update().filter(pk__in=step_targets(r)).order_by("pk"), r.config["after"]
    )
    r.state, r.step_started_at = RolloutState.WAITING_READY, now
    r.reason = f"step {r.current_step + 1} of {len(r.steps)}: reloading {len(changed)} more replica(s)"
    r.save(update_fields=["state", "current_step", "step_started_at", "reason", "updated_at"])
    _event("deployment.rollout.step", r, actor, SYSTEM, before, figures, reconfigured=changed)
    return "stepped"


def _advance_waiting(r: Rollout, now, actor) -> str:
    after = r.config["after"]
    deps = [d for d in _live(r) if d.pk in set(step_targets(r))]
    failed = [d for d in deps if d.observed_state == Observed.FAILED or (d.reload_pending and d.last_error)]
    if failed or len(deps) < len(set(step_targets(r))):
        d = failed[0] if failed else None
        why = (
            f"replica on {d.server.name} did not take the new batching: {d.last_error[:300]}"
            if d
            else ("a replica of the step left the set")
        )
        _restore(r, RolloutState.FAILED, why, None, actor, SYSTEM, now, by="controller")
        return "failed"
    ready = all(d.observed_state == Observed.ACTIVE and d.applied_batching == after for d in deps)
    if ready:
        before = {"state": r.state, "current_step": r.current_step}
        r.state, r.step_started_at = RolloutState.RUNNING, now
        r.reason = f"step {r.current_step + 1} of {len(r.steps)}: {len(deps)} replica(s) on the new batching"
        r.save(update_fields=["state", "step_started_at", "reason", "updated_at"])
        _event("deployment.rollout.step", r, actor, SYSTEM, before, None, replicas=[d.pk for d in deps])
        return "running"
    since = r.step_started_at or r.created_at
    if (now - since) > timedelta(seconds=settings.ROLLOUT_READY_TIMEOUT_SECONDS):
        why = f"the replicas did not run the new batching within {settings.ROLLOUT_READY_TIMEOUT_SECONDS:g} s"
        _restore(r, RolloutState.FAILED, why, None, actor, SYSTEM, now, by="controller")
        return "failed"
    return "waiting_ready"


def _event(event_type: str, r: Rollout, actor, source, before: dict, figures, outcome=Outcome.SUCCESS,
           error_code: str = "", **extra) -> None:  # fmt: skip
    record_event(
        event_type,
        actor=actor,
        source=source,
        target=r,
        outcome=outcome,
        error_code=error_code,
        details={"before": before, "after": {"state": r.state, "current_step": r.current_step}, "kind": "config",
                 "reason": r.reason, "figures": figures.as_dict() if figures else None, **extra},
    )  # fmt: skip


def _retire_surge(r: Rollout, actor, source: Source) -> int | None:
    """Undeploy the surge replica after the drain (it leaves routing at once) and shrink the set back."""
    from . import services
    from .tasks import reconcile_deployment_task

    pk = r.config.get("surge")
    dep = Deployment.objects.select_for_update().filter(pk=pk, desired_state=Desired.ACTIVE).first() if pk else None
    if dep is None:
        return None
    services.mark_undeployed(dep, actor, source, drain_seconds=settings.ROLLOUT_DRAIN_SECONDS, surge=True)
    rs = ReplicaSet.objects.select_for_update().get(pk=r.to_set_id)
    rs.replicas = max(1, rs.replicas - 1)
    widened = r.config.get("widened_max")
    if widened and rs.max_replicas == widened[1]:  # the surge raised the ceiling and nobody changed it since
        rs.max_replicas = max(rs.min_replicas, rs.replicas, widened[0])
    rs.save(update_fields=["replicas", "max_replicas", "updated_at"])
    drain = settings.ROLLOUT_DRAIN_SECONDS
    transaction.on_commit(lambda: reconcile_deployment_task.apply_async((dep.pk, ""), countdown=drain))
    return dep.pk


def _finish(r: Rollout, state: str, reason: str, now) -> None:
    r.state, r.reason, r.finished_at = state, reason, now
    r.save(update_fields=["state", "reason", "finished_at", "updated_at"])


def _promote(r: Rollout, reason: str, figures, actor, source: Source, now, by: str) -> None:
    before = {"state": r.state, "current_step": r.current_step}
    changed = _reconfigure(  # a person may promote before the last step: the rest reload now
        Deployment.objects.select_for_update().filter(replica_set_id=r.to_set_id, desired_state=Desired.ACTIVE)
        .exclude(pk=r.config.get("surge")).order_by("pk"),
        r.config["after"],
    )  # fmt: skip
    retired = _retire_surge(r, actor, source)
    _finish(r, RolloutState.PROMOTED, reason, now)
    _event("deployment.rollout.promote", r, actor, source, before, figures, by=by, reconfigured=changed,
           retired_surge=retired)  # fmt: skip


def _restore(r: Rollout, state: str, reason: str, figures, actor, source: Source, now, by: str) -> None:
    """Roll back (or fail): the previous batching written back on every replica that took the new one
    (reloaded in place again), the surge replica retired after the drain."""
    before_state = {"state": r.state, "current_step": r.current_step}
    restored = []
    for pk, batching in r.config.get("before", {}).items():
        dep = Deployment.objects.select_for_update().filter(pk=int(pk), desired_state=Desired.ACTIVE).first()
        if dep is not None:
            restored += _reconfigure([dep], batching)
    retired = _retire_surge(r, actor, source)
    _finish(r, state, reason, now)
    failure = by == "controller"
    _event(
        "deployment.rollout.fail" if state == RolloutState.FAILED else "deployment.rollout.rollback",
        r,
        actor,
        source,
        before_state,
        figures,
        outcome=Outcome.FAILURE if failure else Outcome.SUCCESS,
        error_code=("rollout_not_ready" if state == RolloutState.FAILED else "slo_breached") if failure else "",
        by=by,
        restored=restored,
        retired_surge=retired,
    )


def promote_config(r: Rollout, actor, source: Source) -> None:
    now = timezone.now()
    _promote(r, f"promoted by {getattr(actor, 'username', 'the system')}", config_window(r, now), actor, source,
             now, by="person")  # fmt: skip


def rollback_config(r: Rollout, actor, source: Source) -> None:
    now = timezone.now()
    figures = config_window(r, now) if r.step_started_at else None
    _restore(r, RolloutState.ROLLED_BACK, f"rolled back by {getattr(actor, 'username', 'the system')}", figures,
             actor, source, now, by="person")  # fmt: skip


def abort_config(r: Rollout, actor, source: Source) -> None:
    """Stop where it stands: each replica keeps the config it has now (a surge replica stays in the set)."""
    before = {"state": r.state, "current_step": r.current_step}
    _finish(r, RolloutState.ABORTED, f"aborted by {getattr(actor, 'username', 'the system')}", timezone.now())
    _event("deployment.rollout.abort", r, actor, source, before, None)


def in_config_rollout(replica_set_id: int) -> Rollout | None:
    """The unfinished config rollout reconfiguring this set, if any."""
    return Rollout.objects.filter(
        kind=RolloutKind.CONFIG, to_set_id=replica_set_id, state__in=UNFINISHED_ROLLOUT_STATES
    ).first()
