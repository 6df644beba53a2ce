"""Autoscaling of replica sets (issue 16, docs/fleet.md "Autoscaling").

A set with `autoscale` on is looked at by `autoscale_tick` (Celery beat, every AUTOSCALE_SECONDS):
its ACTIVE replicas' load is read from their servers' Triton metrics (for the version's Triton model
name), the wanted number of replicas is ceil(load / target) clamped to [min_replicas, max_replicas]
(`decide`, a pure function), and a change goes through the same scale service as a person's
(services.apply_scale: placement by the scheduler, within the fleet's capacity), audited
`deployment.replica_set.scale` with the figures that caused it (actor: system).

- **cooldown**: no change within `autoscale_cooldown_seconds` of the set's last change (`scaled_at`,
  by anyone); scale-down only once the load has wanted fewer replicas for a whole cooldown, and then
  to the most replicas it wanted during that time.
- **placement impossible**: the set grows by as many replicas as fit (none: it stays as it is), and the
  refusal is audited `deployment.replica_set.scale.rejected` once per cooldown, not every tick.
- **missing figures**: a server without metrics_url, or whose metrics cannot be read, leaves its
  replica unmeasured: the load of the measured replicas is extrapolated to every ACTIVE replica (a
  scale-up still happens), a scale-down waits until every replica reports; no figure at all: no change.
- **rollouts**: a set that an unfinished rollout moves traffic from or to is not autoscaled until the
  rollout ends (its replica count is part of what the rollout judges; the old set is about to go).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import Conflict, ServiceError, _, get_or_404
from inference_backend.client import TritonError
from inference_backend.metrics import parse_model_metrics, queue_ms_between

from .credentials import credential_for
from .models import (
    UNFINISHED_ROLLOUT_STATES,
    AutoscaleMetric,
    Deployment,
    Desired,
    InferenceServer,
    Observed,
    ReplicaSet,
    ReplicaSetState,
    Rollout,
)
from .scheduler import PlacementImpossible
from .transport import client_for

logger = logging.getLogger(__name__)

MAX_REPLICAS = 64
MAX_TARGET = 1e6
MAX_COOLDOWN = 86400
AUTOSCALE_FIELDS = ("enabled", "metric", "target", "min_replicas", "max_replicas", "cooldown_seconds")


# --- the decision (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A set's autoscaling settings."""

    target: float
    min_replicas: int
    max_replicas: int
    cooldown_seconds: float


@dataclass(frozen=True)
class Decision:
    """What one tick decided for one set: `desired` replicas (== current: no change), why, and the
    controller's memory for the next tick (`low_since`, `low_peak`)."""

    desired: int
    action: str  # "up", "down" or "hold"
    reason: str
    total: float | None = None  # the load, summed over the ACTIVE replicas (extrapolated if some are unmeasured)
    wanted: int | None = None  # ceil(total / target) clamped to [min, max]
    low_since: float | None = None
    low_peak: int = 0


def decide(
    policy: Policy,
    current: int,
    loads: Sequence[float | None],
    *,
    now: float,
    scaled_at: float | None,
    low_since: float | None = None,
    low_peak: int = 0,
) -> Decision:
    """The replicas a set should have. `loads`: one figure per ACTIVE replica (None: unmeasured);
    times in seconds on one clock. See the module docstring for the rules."""
    lo, hi = policy.min_replicas, policy.max_replicas
    if current < lo:
        return Decision(lo, "up", f"{current} replica(s), below the minimum {lo}")
    if current > hi:
        return Decision(hi, "down", f"{current} replica(s), above the maximum {hi}")
    measured = [x for x in loads if x is not None]
    if not measured:
        why = "no ACTIVE replica" if not loads else "no replica's load could be read"
        return Decision(current, "hold", why)
    total = sum(measured) * len(loads) / len(measured)
    wanted = min(hi, max(lo, math.ceil(total / policy.target - 1e-9)))
    cooling = scaled_at is not None and now - scaled_at < policy.cooldown_seconds
    figures = f"load {total:g} over {len(loads)} ACTIVE replica(s), target {policy.target:g} per replica"
    if wanted > current:
        if cooling:
            return Decision(current, "hold", f"{figures}: wants {wanted}, in cooldown", total, wanted)
        return Decision(wanted, "up", f"{figures}: wants {wanted}", total, wanted)
    if wanted == current:
        return Decision(current, "hold", f"{figures}: {current} is right", total, wanted)
    if len(measured) < len(loads):
        return Decision(
            current, "hold", f"{figures}: wants {wanted}, but not every replica reports its load", total, wanted
        )
    if low_since is None:  # the load has just dropped: the cooldown of low load starts now
        low_since, low_peak = now, wanted
    else:
        low_peak = max(low_peak, wanted)
    if now - low_since < policy.cooldown_seconds or cooling:
        reason = f"{figures}: wants {wanted}, below target for {now - low_since:.0f} s"
        return Decision(current, "hold", reason, total, wanted, low_since, low_peak)
    held = f"{now - low_since:.0f} s (cooldown {policy.cooldown_seconds:g} s)"
    reason = f"{figures}: wanted at most {low_peak} for {held}"
    return Decision(low_peak, "down", reason, total, wanted)


# --- configuration (a service) --------------------------------------------------------------------


def _invalid(detail: str, field: str) -> ServiceError:
    return ServiceError("invalid_autoscale", detail, field=field)


def _validated(merged: dict) -> dict:
    enabled, metric, target = merged["enabled"], merged["metric"], merged["target"]
    lo, hi, cooldown = merged["min_replicas"], merged["max_replicas"], merged["cooldown_seconds"]
    if not isinstance(enabled, bool):
        raise _invalid(_("enabled is true or false"), "enabled")
    if metric not in AutoscaleMetric.values:
        raise _invalid(
            _("unknown metric %(value)s; one of %(values)s")
            % {"value": repr(str(metric)[:30]), "values": ", ".join(AutoscaleMetric.values)},
            "metric",
        )
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= MAX_TARGET:
        raise _invalid(
            _("target is a number above 0 and at most %(max_target)s") % {"max_target": format(MAX_TARGET, "g")},
            "target",
        )
    if not math.isfinite(target):
        raise _invalid(_("target is a finite number"), "target")
    for name, value in (("min_replicas", lo), ("max_replicas", hi)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
            raise _invalid(
                _("%(name)s is a whole number from 1 to %(max_replicas)s")
                % {"name": name, "max_replicas": MAX_REPLICAS},
                name,
            )
    if lo > hi:
        raise _invalid(_("min_replicas (%(lo)s) is above max_replicas (%(hi)s)") % {"lo": lo, "hi": hi}, "min_replicas")
    if isinstance(cooldown, bool) or not isinstance(cooldown, int) or not 0 <= cooldown <= MAX_COOLDOWN:
        raise _invalid(
            _("cooldown_seconds is a whole number from 0 to %(max_cooldown)s") % {"max_cooldown": MAX_COOLDOWN},
            "cooldown_seconds",
        )
    return {**merged, "target": float(target)}


def _settings_of(rs: ReplicaSet) -> dict:
    return {
        "enabled": rs.autoscale,
        "metric": rs.autoscale_metric,
        "target": rs.autoscale_target,
        "min_replicas": rs.min_replicas,
        "max_replicas": rs.max_replicas,
        "cooldown_seconds": rs.autoscale_cooldown_seconds,
    }


def configure_autoscale(*, replica_set_id: int, actor, source: Source = SYSTEM, **changes) -> ReplicaSet:
    """Change a set's autoscaling settings (any of AUTOSCALE_FIELDS; the others keep their values).
    All or nothing: a bad value raises 400 `invalid_autoscale` naming the field, a retired set 409
    `replica_set_retired`; the refusal is audited `deployment.replica_set.autoscale.rejected` and saves
    nothing. A change is audited `deployment.replica_set.autoscale` (before/after). The replicas
    themselves change at the controller's next tick (clamped to the new bounds at once)."""
    rs = get_or_404(
        ReplicaSet,
        "replica_set_not_found",
        _("no replica set with id %(replica_set_id)s") % {"replica_set_id": replica_set_id},
        pk=replica_set_id,
    )
    try:
        unknown = sorted(set(changes) - set(AUTOSCALE_FIELDS))
        if unknown:
            raise _invalid(
                _("unknown autoscale setting(s) %(value)s") % {"value": ", ".join(unknown)[:200]}, unknown[0][:50]
            )
        with transaction.atomic():
            rs = ReplicaSet.objects.select_for_update().select_related("model", "model_version").get(pk=rs.pk)
            if rs.state != ReplicaSetState.ACTIVE:
                raise Conflict(
                    "replica_set_retired", _("replica set %(rs)s is retired; request a new one") % {"rs": rs.pk}
                )
            before = _settings_of(rs)
            after = _validated({**before, **changes})
            rs.autoscale, rs.autoscale_metric, rs.autoscale_target = after["enabled"], after["metric"], after["target"]
            rs.min_replicas, rs.max_replicas = after["min_replicas"], after["max_replicas"]
            rs.autoscale_cooldown_seconds = after["cooldown_seconds"]
            rs.save(
                update_fields=[
                    "autoscale",
                    "autoscale_metric",
                    "autoscale_target",
                    "min_replicas",
                    "max_replicas",
                    "autoscale_cooldown_seconds",
                    "updated_at",
                ]
            )
            if after != before:
                ReplicaSet.objects.filter(pk=rs.pk).update(autoscale_state={})  # figures of old settings: forgotten
                record_event(
                    "deployment.replica_set.autoscale",
                    actor=actor,
                    source=source,
                    target=rs,
                    details={
                        "before": {k: v for k, v in before.items() if after[k] != v},
                        "after": {k: v for k, v in after.items() if before[k] != v},
                    },
                )
    except ServiceError as err:
        with transaction.atomic():
            record_event(
                "deployment.replica_set.autoscale.rejected",
                actor=actor,
                source=source,
                target=rs,
                outcome=Outcome.FAILURE,
                error_code=err.code,
                details={"changes": {k: str(v)[:100] for k, v in changes.items()}, "reason": err.detail_en},
            )
        raise
    return rs


# --- the controller -------------------------------------------------------------------------------


def read_loads(
    rs: ReplicaSet, state: dict, scrapes: dict[int, dict | str]
) -> tuple[dict[int, float | None], dict, dict[str, str]]:
    """Each ACTIVE replica's load (None: unmeasured), the counters to keep for the next tick, and why a
    server's replica is unmeasured. `scrapes` caches each server's parsed metrics (or why not) for one tick."""
    replicas = (
        Deployment.objects.filter(replica_set=rs, desired_state=Desired.ACTIVE, observed_state=Observed.ACTIVE)
        .select_related("server", "model", "model_version")
        .order_by("pk")
    )
    previous = state.get("counters", {})
    loads: dict[int, float | None] = {}
    counters: dict[str, dict] = {}
    missing: dict[str, str] = {}
    for dep in replicas:
        figures = _server_metrics(dep.server, scrapes)
        mine = figures.get(dep.triton_name) if isinstance(figures, dict) else None
        if mine is None:
            loads[dep.pk] = None
            missing[dep.server.name] = figures if isinstance(figures, str) else f"no figures for {dep.triton_name}"
            continue
        if rs.autoscale_metric == AutoscaleMetric.IN_FLIGHT:
            loads[dep.pk] = mine.get("pending")
        else:
            now = counters[str(dep.pk)] = {"queue_us": mine.get("queue_us", 0.0), "success": mine.get("success", 0.0)}
            before = previous.get(str(dep.pk))
            loads[dep.pk] = queue_ms_between(before, now)
            if loads[dep.pk] is None and before and now["success"] == before["success"] and not mine.get("pending"):
                loads[dep.pk] = 0.0  # nothing answered and nothing waiting: idle (not stuck)
    return loads, counters, missing


def _server_metrics(server: InferenceServer, scrapes: dict[int, dict | str]) -> dict | str:
    if server.pk in scrapes:
        return scrapes[server.pk]
    if not server.metrics_url:
        scrapes[server.pk] = "no metrics_url"
        return scrapes[server.pk]
    try:
        timeout = settings.AUTOSCALE_METRICS_TIMEOUT
        with client_for(server.http_url, timeout, credential_for(server)) as client:
            scrapes[server.pk] = parse_model_metrics(client.metrics(server.metrics_url, timeout=timeout))
    except TritonError as err:
        scrapes[server.pk] = f"metrics unreadable: {err.message[:200]}"
    return scrapes[server.pk]


def _in_rollout(rs_id: int) -> Rollout | None:
    return (
        Rollout.objects.filter(state__in=UNFINISHED_ROLLOUT_STATES)
        .filter(Q(from_set_id=rs_id) | Q(to_set_id=rs_id))
        .first()
    )


def autoscale_tick(now=None) -> dict[int, str]:
    """One tick of the autoscaler (beat, every AUTOSCALE_SECONDS): every active set with autoscale on,
    each in its own transaction, locked (a second worker skips it). Returns what was done per set."""
    scrapes: dict[int, dict | str] = {}
    done = {}
    ids = ReplicaSet.objects.filter(autoscale=True, state=ReplicaSetState.ACTIVE).values_list("pk", flat=True)
    for pk in list(ids):
        try:
            done[pk] = autoscale_set(pk, now=now, scrapes=scrapes)
        except Exception:  # noqa: BLE001 - one broken set must not stop the others
            logger.exception("autoscaling replica set %s failed", pk)
            done[pk] = "error"
    return done


def autoscale_set(replica_set_id: int, *, now=None, scrapes: dict | None = None) -> str:
    """Look at one set and scale it if its load calls for it; returns "up", "down", "hold",
    "refused", "rollout" or "skipped"."""
    now = now or timezone.now()
    rs = ReplicaSet.objects.filter(pk=replica_set_id, autoscale=True, state=ReplicaSetState.ACTIVE).first()
    if rs is None:
        return "skipped"
    state = dict(rs.autoscale_state or {})
    rollout = _in_rollout(rs.pk)
    if rollout is not None:
        last = _last(now, "rollout", f"rollout {rollout.pk} moves this set's traffic: not autoscaled until it ends")
        _remember(rs.pk, {**state, "low_since": None, "last": last})
        return "rollout"
    loads, counters, missing = read_loads(rs, state, {} if scrapes is None else scrapes)  # network: outside the lock
    with transaction.atomic():
        rs = (
            ReplicaSet.objects.select_for_update(skip_locked=True)
            .filter(pk=rs.pk, autoscale=True, state=ReplicaSetState.ACTIVE)
            .first()
        )
        if rs is None:
            return "skipped"
        state = dict(rs.autoscale_state or {})
        decision = decide(
            Policy(rs.autoscale_target, rs.min_replicas, rs.max_replicas, rs.autoscale_cooldown_seconds),
            rs.replicas,
            list(loads.values()),
            now=now.timestamp(),
            scaled_at=rs.scaled_at.timestamp() if rs.scaled_at else None,
            low_since=state.get("low_since"),
            low_peak=state.get("low_peak", 0),
        )
        why = {
            "metric": rs.autoscale_metric,
            "target": rs.autoscale_target,
            "loads": {str(k): v for k, v in loads.items()},
            "total": decision.total,
            "wanted": decision.wanted,
            "min_replicas": rs.min_replicas,
            "max_replicas": rs.max_replicas,
            "reason": decision.reason,
            **({"unmeasured": missing} if missing else {}),
        }
        outcome = decision.action
        if decision.action != "hold":
            outcome = _scale(rs, decision, why, state, now)
        state.update(counters=counters, low_since=decision.low_since, low_peak=decision.low_peak)
        state["last"] = {**_last(now, outcome, decision.reason), "loads": why["loads"], "total": decision.total}
        if missing:
            state["last"]["unmeasured"] = missing
        _remember(rs.pk, state)
    return outcome


def _scale(rs: ReplicaSet, decision: Decision, why: dict, state: dict, now) -> str:
    """Apply the decision through services.apply_scale; an impossible placement grows the set by what
    fits and is audited once per cooldown."""
    from .services import apply_scale

    drain = settings.ROLLOUT_DRAIN_SECONDS if decision.desired < rs.replicas else 0.0
    try:
        apply_scale(replica_set_id=rs.pk, replicas=decision.desired, actor=None, why=why, drain_seconds=drain)
        return decision.action
    except ServiceError as err:  # placement impossible, or e.g. the artifact shredded
        refused_at = state.get("refused_at")
        if refused_at is None or now.timestamp() - refused_at >= rs.autoscale_cooldown_seconds:
            _audit_refusal(rs, decision, why, err)
            state["refused_at"] = now.timestamp()
        fit = err.fit if isinstance(err, PlacementImpossible) else 0
        if fit > 0:  # not all fit: as many as do
            apply_scale(
                replica_set_id=rs.pk,
                replicas=rs.replicas + fit,
                actor=None,
                why={**why, "reason": f"{decision.reason}; only {fit} more fit"},
            )
            return "up"
        return "refused"


def _audit_refusal(rs: ReplicaSet, decision: Decision, why: dict, err: ServiceError) -> None:
    extra = {"reasons": err.reasons} if isinstance(err, PlacementImpossible) else {}
    record_event(
        "deployment.replica_set.scale.rejected",
        actor=None,
        target=rs,
        outcome=Outcome.FAILURE,
        error_code=err.code,
        details={
            "replica_set": rs.pk,
            "replicas": decision.desired,
            "autoscale": why,
            "reason": err.detail_en,
            **extra,
        },
    )


def _last(now, outcome: str, reason: str) -> dict:
    return {"at": now.isoformat(), "outcome": outcome, "reason": reason}


def _remember(rs_id: int, state: dict) -> None:
    # the controller's memory, not a governed change: no save(), no field log (its decisions are audited)
    ReplicaSet.objects.filter(pk=rs_id).update(autoscale_state=state)
