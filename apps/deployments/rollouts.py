"""Rollouts: moving a model's traffic from its live replica set to a new version's, in weighted steps,
judged by the gateway's own figures of the new version (apps/deployments/slo.py). docs/rollouts.md.

The services (re-exported by apps.deployments.services, the app's public surface):
start_rollout, advance_rollouts (the controller beat runs every ROLLOUT_ADVANCE_SECONDS),
promote_now, rollback_now, abort_rollout and set_traffic. Each runs in one transaction with its
audit event; a refusal raises ServiceError with a stable code, is audited as
`deployment.rollout.rejected` and leaves nothing saved. Weights of both sets are written together.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.context import current_request_id
from apps.core.errors import Conflict, ServiceError, _, get_or_404
from apps.core.policy import policy_changed
from apps.registry.models import Model, ModelVersion
from inference_backend.signature import breaking_changes

from . import config_rollouts, slo
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

logger = logging.getLogger(__name__)
DEFAULT_CANARY_STEPS = (5, 25, 100)


# --- validation ---------------------------------------------------------------------------------


def validate_steps(strategy: str, steps) -> list[int]:
    """The new version's weight at each step: strictly increasing integers in 1..100 ending in 100.
    Blue-green is one switch: [100]."""
    if strategy not in RolloutStrategy.values:
        raise ServiceError(
            "invalid_strategy",
            _("strategy must be one of %(values)s") % {"values": ", ".join(RolloutStrategy.values)},
            field="strategy",
        )
    if steps is None:
        steps = [100] if strategy == RolloutStrategy.BLUE_GREEN else list(DEFAULT_CANARY_STEPS)
    ok = (
        isinstance(steps, list | tuple)
        and steps
        and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in steps)
        and all(a < b for a, b in zip(steps, steps[1:], strict=False))
        and steps[-1] == 100
    )
    if not ok:
        raise ServiceError(
            "invalid_steps",
            _("steps must be strictly increasing whole percentages in 1..100 ending in 100, e.g. [5, 25, 100]"),
            field="steps",
        )
    if strategy == RolloutStrategy.BLUE_GREEN and list(steps) != [100]:
        raise ServiceError("invalid_steps", _("a blue-green rollout is one switch: steps must be [100]"), field="steps")
    return [int(s) for s in steps]


def _validate_slos(hold_seconds, max_error_rate, max_p95_ms, min_calls) -> None:
    if not isinstance(hold_seconds, int) or isinstance(hold_seconds, bool) or not 0 <= hold_seconds <= 7 * 86400:
        raise ServiceError("invalid_hold", _("hold_seconds must be whole seconds, 0..604800"), field="hold_seconds")
    if not isinstance(max_error_rate, int | float) or not 0 <= max_error_rate <= 1:
        raise ServiceError(
            "invalid_slo", _("slo_max_error_rate must be a fraction in 0..1"), field="slo_max_error_rate"
        )
    if not isinstance(max_p95_ms, int | float) or not max_p95_ms > 0 or not math.isfinite(max_p95_ms):
        # 1e400 is valid JSON read as infinity: an SLO that never breaches, and a row no answer can render
        raise ServiceError("invalid_slo", _("slo_max_p95_ms must be a positive number of ms"), field="slo_max_p95_ms")
    if not isinstance(min_calls, int) or isinstance(min_calls, bool) or min_calls < 0:
        raise ServiceError("invalid_slo", _("min_calls must be a whole number >= 0"), field="min_calls")


def _check_weights(weights) -> dict[int, int]:
    try:
        parsed = {int(v): w for v, w in dict(weights).items()}
    except (TypeError, ValueError):
        parsed = None
    if (
        not parsed
        or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 100 for w in parsed.values())
        or sum(parsed.values()) != 100
    ):
        raise ServiceError(
            "invalid_weights",
            _("weights must map versions to whole percentages 0..100 summing to 100"),
            field="weights",
        )
    return parsed


# --- reading --------------------------------------------------------------------------------------


def _active_sets(model) -> list[ReplicaSet]:
    return list(ReplicaSet.objects.filter(model=model, state=ReplicaSetState.ACTIVE).select_related("model_version"))


def _adopt(model, version: ModelVersion, weight: int, actor) -> ReplicaSet | None:
    """A replica set for the desired-active deployments of `version` that have none (deployments
    requested before replica sets existed, or by request_deployment before it attaches one)."""
    deps = list(
        Deployment.objects.filter(
            model=model, model_version=version, desired_state=Desired.ACTIVE, replica_set__isnull=True
        )
    )
    if not deps:
        return None
    rs = ReplicaSet.objects.create(
        model=model,
        model_version=version,
        replicas=len(deps),
        min_replicas=len(deps),
        max_replicas=len(deps),
        traffic_weight=weight,
        requested_by=acting_user(actor),
    )
    Deployment.objects.filter(pk__in=[d.pk for d in deps]).update(replica_set=rs)
    record_event(
        "deployment.replica_set.create",
        actor=actor,
        target=rs,
        details={"after": {"version": version.version, "replicas": rs.replicas, "traffic_weight": weight},
                 "adopted_deployments": [d.pk for d in deps]},
    )  # fmt: skip
    return rs


def _live_set(model, exclude_version: ModelVersion, actor) -> ReplicaSet:
    """The set the rollout moves traffic away from: the model's one live version other than the new one."""
    sets = [s for s in _active_sets(model) if s.model_version_id != exclude_version.pk and s.traffic_weight > 0]
    loose = (
        Deployment.objects.filter(model=model, desired_state=Desired.ACTIVE, replica_set__isnull=True)
        .exclude(model_version=exclude_version)
        .values_list("model_version", flat=True)
        .distinct()
    )
    versions = {s.model_version_id for s in sets} | set(loose)
    if not versions:
        raise Conflict(
            "no_live_version",
            _("%(model)s has no live version to roll from: deploy %(exclude_version)s directly instead")
            % {"model": model.name, "exclude_version": exclude_version},
        )
    if len(versions) > 1:
        raise Conflict(
            "ambiguous_live_version",
            _("%(model)s serves several versions already; set its traffic to one version before a rollout")
            % {"model": model.name},
        )
    if sets:
        return sets[0]
    version = ModelVersion.objects.get(pk=versions.pop())
    return _adopt(model, version, 100, actor)


def _target_set(model, version: ModelVersion, from_set: ReplicaSet, actor, source: Source) -> ReplicaSet:
    """The new version's set: its active one, or one adopted from its deployments, or a new one with
    the live set's replica count on the live set's servers."""
    existing = ReplicaSet.objects.filter(model_version=version, state=ReplicaSetState.ACTIVE).first()
    if existing is not None:
        return existing
    adopted = _adopt(model, version, 0, actor)
    if adopted is not None:
        return adopted
    return _create_like(from_set, version, actor, source)


def _create_like(from_set: ReplicaSet, version: ModelVersion, actor, source: Source) -> ReplicaSet:
    """A set of `version` shaped like `from_set` (same replica count and placement constraints),
    requested through the replica-set service: placed by the scheduler, each replica audited as
    `deployment.request`, all or nothing (409 `placement_impossible` with a reason per server)."""
    from . import services

    return services.request_replica_set(
        model_version_id=version.pk,
        replicas=from_set.replicas,
        labels=from_set.labels or None,
        accelerator=from_set.accelerator,
        memory_mb=from_set.memory_mb,
        batching=_batching_of(from_set),
        actor=actor,
        source=source,
    )


def _batching_of(rs: ReplicaSet) -> dict | None:
    """The batching of the set's first live replica (the new set's replicas are configured alike)."""
    dep = Deployment.objects.filter(replica_set=rs, desired_state=Desired.ACTIVE).order_by("pk").first()
    if dep is None:
        return None
    return dep.batching().as_dict()


def rollout_window(rollout: Rollout, now=None) -> slo.Window:
    """The gateway's figures of the new version since the current step started (of a config rollout:
    the figures of its reconfigured replicas)."""
    if rollout.kind == RolloutKind.CONFIG:
        return config_rollouts.config_window(rollout, now)
    now = now or timezone.now()
    started = rollout.step_started_at or now
    # every second from the one the step started in up to now, both included
    seconds = int(now.timestamp()) - int(started.timestamp()) + 1
    version = rollout.to_set.model_version
    return slo.window(rollout.model_id, version.version, seconds, now=now.timestamp())


def rollout_weights(rollout: Rollout) -> dict[str, int]:
    """The two sets' weights now, by version (for the API and the admin)."""
    sets = ReplicaSet.objects.filter(pk__in=[rollout.from_set_id, rollout.to_set_id]).select_related("model_version")
    return {f"v{s.model_version.version}": s.traffic_weight for s in sets}


# --- writing --------------------------------------------------------------------------------------


def _write_weights(model, weights: dict[int, int], *, actor, source: Source, rollout: Rollout | None = None) -> dict:
    """Set the weight of each active set of `model` named by id (every other active set: 0), all in
    the caller's transaction, audited as one `deployment.traffic.set` on the model; and tell the
    data plane's snapshot. Returns the weights after, by version."""
    before, after = {}, {}
    sets = ReplicaSet.objects.select_for_update().select_related("model_version")
    for rs in sets.filter(model=model, state=ReplicaSetState.ACTIVE):
        label = f"v{rs.model_version.version}"
        weight = weights.get(rs.pk, 0)
        before[label], after[label] = rs.traffic_weight, weight
        if rs.traffic_weight != weight:
            rs.traffic_weight = weight
            rs.save(update_fields=["traffic_weight", "updated_at"])
    record_event(
        "deployment.traffic.set",
        actor=actor,
        source=source,
        target=model,
        details={"before": before, "after": after, "rollout": rollout.pk if rollout else None},
    )
    policy_changed.send(sender=ReplicaSet)
    return after


def _undeploy_drained(rs: ReplicaSet, actor, source: Source) -> list[int]:
    """Retire a set: weight 0, state retired, each replica desired inactive at once (so routing drops
    it within ms) and unloaded from Triton ROLLOUT_DRAIN_SECONDS later, so calls the gateway had
    already sent finish on a loaded model. Each replica audited as `deployment.undeploy`."""
    from .tasks import reconcile_deployment_task

    rs.state = ReplicaSetState.RETIRED
    rs.traffic_weight = 0
    rs.save(update_fields=["state", "traffic_weight", "updated_at"])
    ids = []
    from .services import mark_undeployed

    for dep in Deployment.objects.select_for_update().filter(replica_set=rs, desired_state=Desired.ACTIVE):
        mark_undeployed(dep, actor, source, drain_seconds=settings.ROLLOUT_DRAIN_SECONDS)
        ids.append(dep.pk)
    rid, drain = current_request_id(), settings.ROLLOUT_DRAIN_SECONDS
    transaction.on_commit(lambda: [reconcile_deployment_task.apply_async((pk, rid), countdown=drain) for pk in ids])
    return ids


def _summary(r: Rollout) -> dict:
    return {
        "model": r.model.name,
        "from_version": r.from_set.model_version.version,
        "to_version": r.to_set.model_version.version,
        "strategy": r.strategy,
        "steps": r.steps,
        "current_step": r.current_step,
        "state": r.state,
    }


def _reject(err: ServiceError, *, model_name: str, actor, source: Source, details: dict) -> None:
    with transaction.atomic():
        record_event(
            "deployment.rollout.rejected",
            actor=actor,
            source=source,
            target_type="registry.model",
            target_display=model_name[:200],
            outcome=Outcome.FAILURE,
            error_code=err.code,
            details={**details, "reason": err.detail_en},
        )


def start_rollout(
    *,
    model_id: int,
    to_version_id: int | None = None,
    to_set_id: int | None = None,
    strategy: str = RolloutStrategy.CANARY,
    steps: list[int] | None = None,
    hold_seconds: int = 60,
    slo_max_error_rate: float = 0.01,
    slo_max_p95_ms: float = 1000.0,
    min_calls: int = 20,
    force: bool = False,
    actor,
    source: Source = SYSTEM,
) -> Rollout:
    """Start moving `model`'s traffic to a new version (`to_version_id`, or the version of the set
    `to_set_id`). The rollout waits for the new set's replicas to be ACTIVE, then the controller
    (advance_rollouts) moves traffic step by step. Refusals: invalid_strategy, invalid_steps,
    invalid_hold, invalid_slo, model_not_found, model_version_not_found, replica_set_not_found,
    artifact_shredded, rollout_in_progress, no_live_version, ambiguous_live_version,
    breaking_change (unless `force`, which is audited with the changes)."""
    model = get_or_404(
        Model, "model_not_found", _("no model with id %(model_id)s") % {"model_id": model_id}, pk=model_id
    )
    request = {"model": model.name, "to_version_id": to_version_id, "to_set_id": to_set_id, "strategy": strategy,
               "steps": steps, "force": bool(force)}  # fmt: skip
    try:
        steps = validate_steps(strategy, steps)
        _validate_slos(hold_seconds, slo_max_error_rate, slo_max_p95_ms, min_calls)
        with transaction.atomic():
            Model.objects.select_for_update().filter(pk=model.pk).first()  # one start per model at a time
            if to_set_id is not None:
                to_set = get_or_404(
                    ReplicaSet.objects.select_related("model_version"),
                    "replica_set_not_found",
                    _("no active replica set %(to_set_id)s of %(model)s")
                    % {"to_set_id": to_set_id, "model": model.name},
                    pk=to_set_id,
                    model=model,
                    state=ReplicaSetState.ACTIVE,
                )
                version = to_set.model_version
            elif to_version_id is not None:
                to_set = None
                version = get_or_404(
                    ModelVersion.objects.select_related("artifact"),
                    "model_version_not_found",
                    _("no version %(to_version_id)s of %(model)s")
                    % {"to_version_id": to_version_id, "model": model.name},
                    pk=to_version_id,
                    model=model,
                )
            else:
                raise ServiceError("invalid_target", _("give to_version or to_set"), field="to_version")
            if version.artifact.is_shredded:
                raise Conflict(
                    "artifact_shredded",
                    _("the data key of %(version)s was destroyed; it can no longer be rolled out")
                    % {"version": version},
                )
            if Rollout.objects.filter(model=model, state__in=UNFINISHED_ROLLOUT_STATES).exists():
                raise Conflict(
                    "rollout_in_progress", _("%(model)s already has a rollout in progress") % {"model": model.name}
                )
            from_set = _live_set(model, version, actor)
            changes = breaking_changes(from_set.model_version.signature, version.signature)
            if changes and not force:
                raise Conflict(
                    "breaking_change",
                    _(
                        "%(version)s breaks the signature of live %(model_version)s: %(value)s (force to roll "
                        "out anyway)"
                    )
                    % {"version": version, "model_version": from_set.model_version, "value": "; ".join(changes)[:500]},
                )
            if to_set is None:
                to_set = _target_set(model, version, from_set, actor, source)
            # the live set keeps all traffic until the new replicas are ready (adopted sets included)
            _write_weights(model, {from_set.pk: 100}, actor=actor, source=source)
            rollout = Rollout.objects.create(
                model=model,
                from_set=from_set,
                to_set=to_set,
                strategy=strategy,
                steps=steps,
                hold_seconds=hold_seconds,
                slo_max_error_rate=float(slo_max_error_rate),
                slo_max_p95_ms=float(slo_max_p95_ms),
                min_calls=min_calls,
                state=RolloutState.WAITING_READY,
                forced=bool(changes),
                reason="waiting for the new replicas to be active",
                created_by=acting_user(actor),
            )
            if changes:
                record_event(
                    "deployment.rollout.forced",
                    actor=actor,
                    source=source,
                    target=rollout,
                    details={"alert": True, "breaking_changes": changes, **_summary(rollout)},
                )
            record_event(
                "deployment.rollout.start",
                actor=actor,
                source=source,
                target=rollout,
                details={"after": {**_summary(rollout), "hold_seconds": hold_seconds,
                                   "slo_max_error_rate": rollout.slo_max_error_rate,
                                   "slo_max_p95_ms": rollout.slo_max_p95_ms, "min_calls": min_calls,
                                   "forced": rollout.forced}},
            )  # fmt: skip
    except IntegrityError as err:  # a start that raced another past the check
        conflict = Conflict(
            "rollout_in_progress", _("%(model)s already has a rollout in progress") % {"model": model.name}
        )
        _reject(conflict, model_name=model.name, actor=actor, source=source, details=request)
        raise conflict from err
    except ServiceError as err:
        _reject(err, model_name=model.name, actor=actor, source=source, details=request)
        raise
    return rollout


def set_traffic(*, model_id: int, weights: dict, actor, source: Source = SYSTEM) -> list[ReplicaSet]:
    """Set by hand the share of `model`'s unversioned calls each version's active set receives
    ({version number: weight}, summing to 100; a set not named gets 0). Refused while a rollout
    runs (the controller owns the weights then): rollout_in_progress."""
    model = get_or_404(
        Model, "model_not_found", _("no model with id %(model_id)s") % {"model_id": model_id}, pk=model_id
    )
    try:
        parsed = _check_weights(weights)
        with transaction.atomic():
            Model.objects.select_for_update().filter(pk=model.pk).first()
            if Rollout.objects.filter(model=model, state__in=UNFINISHED_ROLLOUT_STATES).exists():
                raise Conflict(
                    "rollout_in_progress",
                    _("%(model)s has a rollout in progress; it sets the weights") % {"model": model.name},
                )
            sets = {s.model_version.version: s for s in _active_sets(model)}
            missing = sorted(set(parsed) - set(sets))
            if missing:
                raise ServiceError(
                    "invalid_weights",
                    _("%(model)s has no active replica set of version(s) %(versions)s")
                    % {"model": model.name, "versions": ", ".join(map(str, missing))},
                    field="weights",
                )
            _write_weights(model, {sets[v].pk: w for v, w in parsed.items()}, actor=actor, source=source)
    except ServiceError as err:
        _reject(err, model_name=model.name, actor=actor, source=source, details={"weights": str(weights)[:200]})
        raise
    return _active_sets(model)


# --- the controller -------------------------------------------------------------------------------


def advance_rollouts(now=None) -> dict[int, str]:
    """One tick of the controller (beat, every ROLLOUT_ADVANCE_SECONDS): every unfinished rollout
    is looked at once, each in its own transaction, locked (a second worker skips it)."""
    ids = list(Rollout.objects.filter(state__in=UNFINISHED_ROLLOUT_STATES).values_list("pk", flat=True))
    done = {}
    for pk in ids:
        try:
            done[pk] = advance_rollout(pk, now=now)
        except Exception:  # noqa: BLE001 - one broken rollout must not stop the others
            logger.exception("advancing rollout %s failed", pk)
            done[pk] = "error"
    return done


def advance_rollout(rollout_id: int, now=None) -> str:
    """Look at one rollout and take the step its figures call for; returns what was done."""
    with transaction.atomic():
        r = (
            Rollout.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("model", "from_set__model_version", "to_set__model_version", "created_by")
            .filter(pk=rollout_id, state__in=UNFINISHED_ROLLOUT_STATES)
            .first()
        )
        if r is None:
            return "skipped"
        now = now or timezone.now()
        actor = r.created_by  # work the controller does is attributed to who started the rollout
        if r.kind == RolloutKind.CONFIG:
            return config_rollouts.advance(r, now, actor)
        if r.state in (RolloutState.PENDING, RolloutState.WAITING_READY):
            return _advance_waiting(r, now, actor)
        figures = rollout_window(r, now)
        breached = breaches(r, figures)
        if breached:
            reason = (
                f"SLO breached at step {r.current_step + 1} ({r.steps[r.current_step]}%): {', '.join(breached)} "
                f"over {figures.calls} calls ({figures.errors} failed)"
            )
            _rollback(r, reason, figures, actor, SYSTEM, now, by="controller")
            return "rolled_back"
        held = (now - r.step_started_at).total_seconds()
        if held < r.hold_seconds:
            return "holding"
        if figures.calls < r.min_calls:
            reason = f"step {r.current_step + 1} held; waiting for {r.min_calls} calls (seen {figures.calls})"
            if r.reason != reason:
                Rollout.objects.filter(pk=r.pk).update(reason=reason, updated_at=now)
            return "waiting_calls"
        if r.current_step + 1 >= len(r.steps):
            _promote(r, f"every step held within the SLOs ({figures.calls} calls in the last step)", figures,
                     actor, SYSTEM, now, by="controller")  # fmt: skip
            return "promoted"
        _step(r, r.current_step + 1, figures, actor, SYSTEM, now)
        return "stepped"


def breaches(r: Rollout, figures: slo.Window) -> list[str]:
    """The SLOs `figures` breach (empty: none, or too few calls to judge yet).

    The error rate is judged early when the errors seen already breach it over min_calls calls: the
    gateway's failover and circuit breaker take a failing canary's traffic away, so waiting for
    min_calls could wait for ever while its errors are plain."""
    enough = figures.calls >= r.min_calls and figures.calls > 0
    error_floor = figures.errors / max(figures.calls, r.min_calls, 1)
    breached = []
    if figures.error_rate > r.slo_max_error_rate and (enough or error_floor > r.slo_max_error_rate):
        breached.append(f"error rate {figures.error_rate:.2%} > {r.slo_max_error_rate:.2%}")
    if enough and figures.p95_ms is not None and figures.p95_ms > r.slo_max_p95_ms:
        breached.append(f"p95 {figures.p95_ms:g} ms > {r.slo_max_p95_ms:g} ms")
    return breached


def _advance_waiting(r: Rollout, now, actor) -> str:
    deps = list(Deployment.objects.filter(replica_set=r.to_set, desired_state=Desired.ACTIVE).select_related("server"))
    failed = [d for d in deps if d.observed_state == Observed.FAILED]
    if failed:
        d = failed[0]
        _fail(r, f"replica on {d.server.name} failed: {d.last_error[:300]}", actor, now)
        return "failed"
    if deps and all(d.observed_state == Observed.ACTIVE for d in deps) and len(deps) >= r.to_set.replicas:
        _step(r, 0, None, actor, SYSTEM, now)
        return "running"
    if (now - r.created_at) > timedelta(seconds=settings.ROLLOUT_READY_TIMEOUT_SECONDS):
        _fail(r, f"the new replicas were not active within {settings.ROLLOUT_READY_TIMEOUT_SECONDS:g} s", actor, now)
        return "failed"
    return "waiting_ready"


def _step(r: Rollout, index: int, figures: slo.Window | None, actor, source: Source, now) -> None:
    before = {"state": r.state, "current_step": r.current_step, **rollout_weights(r)}
    weight = r.steps[index]
    _write_weights(r.model, {r.to_set_id: weight, r.from_set_id: 100 - weight}, actor=actor, source=source, rollout=r)
    r.state = RolloutState.RUNNING
    r.current_step = index
    r.step_started_at = now
    r.reason = f"step {index + 1} of {len(r.steps)}: {weight}% to v{r.to_set.model_version.version}"
    r.save(update_fields=["state", "current_step", "step_started_at", "reason", "updated_at"])
    record_event(
        "deployment.rollout.step",
        actor=actor,
        source=source,
        target=r,
        details={"before": before, "after": {"state": r.state, "current_step": index, **rollout_weights(r)},
                 "previous_step_figures": figures.as_dict() if figures else None, "reason": r.reason},
    )  # fmt: skip


def _finish(r: Rollout, state: str, reason: str, now) -> None:
    r.state = state
    r.reason = reason
    r.finished_at = now
    r.save(update_fields=["state", "reason", "finished_at", "updated_at"])


def _promote(r: Rollout, reason: str, figures, actor, source: Source, now, by: str) -> None:
    before = {"state": r.state, **rollout_weights(r)}
    _write_weights(r.model, {r.to_set_id: 100}, actor=actor, source=source, rollout=r)
    retired = _undeploy_drained(r.from_set, actor, source)
    _finish(r, RolloutState.PROMOTED, reason, now)
    record_event(
        "deployment.rollout.promote",
        actor=actor,
        source=source,
        target=r,
        details={"before": before, "after": {"state": r.state, **rollout_weights(r)}, "by": by, "reason": reason,
                 "figures": figures.as_dict() if figures else None, "retired_deployments": retired},
    )  # fmt: skip


def _rollback(r: Rollout, reason: str, figures, actor, source: Source, now, by: str) -> None:
    before = {"state": r.state, **rollout_weights(r)}
    _write_weights(r.model, {r.from_set_id: 100}, actor=actor, source=source, rollout=r)
    retired = _undeploy_drained(r.to_set, actor, source)
    _finish(r, RolloutState.ROLLED_BACK, reason, now)
    record_event(
        "deployment.rollout.rollback",
        actor=actor,
        source=source,
        target=r,
        outcome=Outcome.FAILURE if by == "controller" else Outcome.SUCCESS,
        error_code="slo_breached" if by == "controller" else "",
        details={"before": before, "after": {"state": r.state, **rollout_weights(r)}, "by": by, "reason": reason,
                 "figures": figures.as_dict() if figures else None, "retired_deployments": retired},
    )  # fmt: skip


def _fail(r: Rollout, reason: str, actor, now) -> None:
    before = {"state": r.state, **rollout_weights(r)}
    _write_weights(r.model, {r.from_set_id: 100}, actor=actor, source=SYSTEM, rollout=r)
    _finish(r, RolloutState.FAILED, reason, now)
    record_event(
        "deployment.rollout.fail",
        actor=actor,
        target=r,
        outcome=Outcome.FAILURE,
        error_code="rollout_not_ready",
        details={"before": before, "after": {"state": r.state, **rollout_weights(r)}, "reason": reason},
    )


def _locked_unfinished(rollout_id: int) -> Rollout:
    r = get_or_404(
        Rollout.objects.select_for_update(of=("self",)).select_related(
            "model", "from_set__model_version", "to_set__model_version"
        ),
        "rollout_not_found",
        _("no rollout with id %(rollout_id)s") % {"rollout_id": rollout_id},
        pk=rollout_id,
    )
    if r.finished:
        raise Conflict(
            "rollout_finished", _("rollout %(r)s has already ended (%(state)s)") % {"r": r.pk, "state": r.state}
        )
    return r


def promote_now(*, rollout_id: int, actor, source: Source = SYSTEM) -> Rollout:
    """A person promotes at once: the new version takes all traffic, the old set is retired.
    Refused before the new replicas are active (rollout_not_ready) or after the end (rollout_finished)."""
    with transaction.atomic():
        r = _locked_unfinished(rollout_id)
        if r.state != RolloutState.RUNNING:
            raise Conflict("rollout_not_ready", _("rollout %(r)s is still waiting for its new replicas") % {"r": r.pk})
        if r.kind == RolloutKind.CONFIG:
            config_rollouts.promote_config(r, actor, source)
            return r
        now = timezone.now()
        _promote(r, f"promoted by {getattr(actor, 'username', 'the system')}", rollout_window(r, now), actor, source,
                 now, by="person")  # fmt: skip
    return r


def rollback_now(*, rollout_id: int, actor, source: Source = SYSTEM) -> Rollout:
    """A person rolls back: the old version takes all traffic again, the new set is retired."""
    with transaction.atomic():
        r = _locked_unfinished(rollout_id)
        if r.kind == RolloutKind.CONFIG:
            config_rollouts.rollback_config(r, actor, source)
            return r
        now = timezone.now()
        figures = rollout_window(r, now) if r.step_started_at else None
        _rollback(r, f"rolled back by {getattr(actor, 'username', 'the system')}", figures, actor, source, now,
                  by="person")  # fmt: skip
    return r


def abort_rollout(*, rollout_id: int, actor, source: Source = SYSTEM) -> Rollout:
    """A person stops the rollout: the old version takes all traffic again; the new set's replicas are
    kept (weight 0) for a look or a later rollout."""
    with transaction.atomic():
        r = _locked_unfinished(rollout_id)
        if r.kind == RolloutKind.CONFIG:
            config_rollouts.abort_config(r, actor, source)
            return r
        before = {"state": r.state, **rollout_weights(r)}
        _write_weights(r.model, {r.from_set_id: 100}, actor=actor, source=source, rollout=r)
        _finish(r, RolloutState.ABORTED, f"aborted by {getattr(actor, 'username', 'the system')}", timezone.now())
        record_event(
            "deployment.rollout.abort",
            actor=actor,
            source=source,
            target=r,
            details={"before": before, "after": {"state": r.state, **rollout_weights(r)}},
        )
    return r
