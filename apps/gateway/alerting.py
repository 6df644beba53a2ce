"""The monitoring alerts the portal raises itself: the conditions of deploy/prometheus/alerts.yml,
evaluated by beat (apps.gateway.tasks.evaluate_monitor_alerts, every SOVEREIGN_MONITOR_ALERT_SECONDS)
for an installation without Prometheus and Alertmanager (docs/metrics.md, "Alerts").

Each condition has a stable key (e.g. `server_down:triton-1`). At its onset the portal records
`alert.monitor.firing` (details.alert: delivered to the alert channel, docs/alerts.md) once, and
`alert.monitor.resolved` (also delivered) once it no longer holds; a condition that still holds is
not raised again at each tick. Which conditions are active is kept in Redis (one hash), so several
portal nodes and restarts agree; without Redis, in this process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from apps.audit.models import Outcome
from apps.audit.services import record_event
from apps.deployments import slo

from . import monitoring

logger = logging.getLogger(__name__)

ACTIVE_KEY = "sv:monitor:active"
LOCK_KEY = "sv:monitor:lock"
_memory: dict[str, str] = {}
_memory_lock = threading.Lock()


@dataclass(frozen=True)
class Condition:
    """One alerting condition that holds now."""

    key: str  # stable identity: the same condition at the next tick has the same key
    rule: str  # server_down | error_rate | sealer_lag | control_regressed | quota_near_exhaustion
    summary: str
    labels: dict = field(default_factory=dict)
    value: float | None = None
    threshold: float | None = None


def _server_down(now: float) -> list[Condition]:
    return [
        Condition(f"server_down:{s.name}", "server_down", f"Triton server {s.name} is down", {"server": s.name})
        for s in monitoring.servers()
        if s.state == "down"
    ]


def _error_rate(now: float) -> list[Condition]:
    out = []
    window, rate, least = (
        settings.MONITOR_ERROR_WINDOW_SECONDS,
        settings.MONITOR_ERROR_RATE,
        settings.MONITOR_ERROR_MIN_CALLS,
    )
    for model_id, name, version in monitoring.live_versions():
        figures = slo.window(model_id, version, window, now=now)
        if figures.calls >= least and figures.error_rate >= rate:
            out.append(
                Condition(
                    f"error_rate:{name}:{version}",
                    "error_rate",
                    f"{name} v{version}: {figures.errors} of {figures.calls} calls failed in {window} s",
                    {"model": name, "version": str(version)},
                    round(figures.error_rate, 4),
                    rate,
                )
            )
    return out


def _sealer_lag(now: float) -> list[Condition]:
    state, limit = monitoring.sealer(now), settings.MONITOR_SEALER_LAG_SECONDS
    if state.oldest_unsealed_age < limit:
        return []
    return [
        Condition(
            "sealer_lag",
            "sealer_lag",
            f"{state.unsealed} audit events unsealed, the oldest for {state.oldest_unsealed_age:.0f} s",
            {},
            round(state.oldest_unsealed_age, 1),
            limit,
        )
    ]


def _controls(now: float) -> list[Condition]:
    return [
        Condition(
            f"control_regressed:{c.profile}:{c.control}",
            "control_regressed",
            f"compliance control {c.control} of {c.profile} fails after having passed",
            {"profile": c.profile, "control": c.control},
        )
        for c in monitoring.control_states()
        if c.regressed
    ]


def _quotas(now: float) -> list[Condition]:
    ratio = settings.MONITOR_QUOTA_RATIO
    return [
        Condition(
            f"quota_near_exhaustion:{q.quota_id}:{q.window}",
            "quota_near_exhaustion",
            f"{q.scope} {q.subject}{' on ' + q.model if q.model else ''}: {q.used} of {q.limit} tokens this {q.window}",
            {"quota": str(q.quota_id), "scope": q.scope, "subject": q.subject, "model": q.model, "window": q.window},
            round(q.used / q.limit, 4),
            ratio,
        )
        for q in monitoring.quota_use(now)
        if q.limit and q.used / q.limit >= ratio
    ]


RULES = {
    "server_down": _server_down,
    "error_rate": _error_rate,
    "sealer_lag": _sealer_lag,
    "control_regressed": _controls,
    "quota_near_exhaustion": _quotas,
}


def conditions(now: float) -> tuple[dict[str, Condition], set[str]]:
    """Every condition that holds now, by key, and the rules that could not be evaluated (Redis or the
    database unreachable: logged; their active alerts are neither raised nor resolved this tick)."""
    out: dict[str, Condition] = {}
    skipped: set[str] = set()
    for name, rule in RULES.items():
        try:
            out.update((c.key, c) for c in rule(now))
        except Exception:  # noqa: BLE001 - one unreadable source must not silence the other rules
            logger.exception("monitor rule %s not evaluated", name)
            skipped.add(name)
    return out, skipped


class _ActiveStore:
    """The active conditions: Redis hash ACTIVE_KEY (key -> JSON), or this process without Redis."""

    def __init__(self) -> None:
        from apps.core.throttling import redis_client

        self.client = redis_client()

    def read(self) -> dict[str, dict]:
        if self.client is None:
            with _memory_lock:
                raw = dict(_memory)
        else:
            raw = {k.decode(): v.decode() for k, v in self.client.hgetall(ACTIVE_KEY).items()}
        return {k: json.loads(v) for k, v in raw.items()}

    def set(self, key: str, value: dict) -> None:
        if self.client is None:
            with _memory_lock:
                _memory[key] = json.dumps(value)
        else:
            self.client.hset(ACTIVE_KEY, key, json.dumps(value))

    def drop(self, key: str) -> None:
        if self.client is None:
            with _memory_lock:
                _memory.pop(key, None)
        else:
            self.client.hdel(ACTIVE_KEY, key)

    def lock(self, seconds: int) -> bool:
        return self.client is None or bool(self.client.set(LOCK_KEY, "1", nx=True, ex=max(1, seconds)))

    def unlock(self) -> None:
        if self.client is not None:
            self.client.delete(LOCK_KEY)


def _fire(condition: Condition, now: float) -> None:
    with transaction.atomic():
        record_event(
            "alert.monitor.firing",
            actor=None,
            target_type="monitor.condition",
            target_id=condition.key[:100],
            target_display=condition.summary[:200],
            outcome=Outcome.FAILURE,
            error_code=condition.rule,
            details={
                "alert": True,
                "rule": condition.rule,
                "condition": condition.key,
                "labels": condition.labels,
                "value": condition.value,
                "threshold": condition.threshold,
                "summary": condition.summary,
            },
        )


def _resolve(key: str, active: dict, now: float) -> None:
    with transaction.atomic():
        record_event(
            "alert.monitor.resolved",
            actor=None,
            target_type="monitor.condition",
            target_id=key[:100],
            target_display=(active.get("summary") or key)[:200],
            details={
                "alert": True,
                "resolved": True,
                "rule": active.get("rule", ""),
                "condition": key,
                "labels": active.get("labels", {}),
                "since": active.get("since"),
                "duration_s": round(now - float(active.get("since") or now), 1),
            },
        )


def evaluate_alerts(*, now: float | None = None) -> dict:
    """One tick: raise each condition that began, resolve each that ended. Returns what it did
    ({"firing": [keys], "resolved": [keys], "active": n, "skipped": [rules]}, or {"busy": reason}). The audit event is
    written before the active set changes: a failure between them raises it again (never loses it)."""
    now = time.time() if now is None else now
    store = _ActiveStore()
    if not store.lock(int(settings.MONITOR_ALERT_SECONDS)):
        return {"busy": "another evaluation is running"}
    try:
        holding, skipped = conditions(now)
        active = store.read()
        fired, resolved = [], []
        for key, condition in holding.items():
            if key not in active:
                _fire(condition, now)
                store.set(key, {"since": now, "rule": condition.rule, "labels": condition.labels,
                                "summary": condition.summary})  # fmt: skip
                fired.append(key)
        for key, was in active.items():
            if key not in holding and was.get("rule") not in skipped:
                _resolve(key, was, now)
                store.drop(key)
                resolved.append(key)
        return {"firing": fired, "resolved": resolved, "active": len(holding), "skipped": sorted(skipped)}
    finally:
        store.unlock()
