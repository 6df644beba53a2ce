"""Reads for the operator dashboard (docs/dashboard.md). Every figure comes from a small table or
an indexed query with a LIMIT, never from a scan of the audit log: the series from CallSeries
(pre-aggregated by services.roll_up_calls), the rest from the deployment, compliance and audit
tables. Each section is returned only to a user whose permissions cover it."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.utils import timezone
from django.utils.translation import pgettext_lazy

from apps.audit.selectors import events_visible_to
from apps.compliance.models import ControlResult, EvaluationRun
from apps.core.errors import ServiceError
from apps.deployments.models import Deployment, DeploymentTransition, InferenceServer, Observed, ReplicaSet

from . import histogram
from .models import BUCKET_FIELDS, CallSeries, Period

# window name → (period of its points, number of points)
WINDOWS = {"1h": (Period.MINUTE, 60), "24h": (Period.HOUR, 24), "7d": (Period.SIX_HOURS, 28)}
CHART_MODELS = 8  # the busiest models get a line each; the table lists them all
# What people do with privilege (not the gateway's calls, logins or the system's own transitions).
PRIVILEGED_TYPES = (
    "auth.role.assign", "auth.role.remove", "auth.breakglass.grant", "auth.breakglass.use", "auth.breakglass.revoke",
    "auth.token.create", "auth.token.revoke", "auth.account.create", "auth.account.update",
    "auth.service_account.create", "auth.password.reset", "auth.2fa.remove", "auth.lockout.clear",
    "auth.officer.bootstrap", "auth.superuser.use", "access.grant.create", "access.grant.revoke",
    "registry.model.create", "registry.version.create", "registry.import.create",
    "keys.kek.rotate", "keys.kek.retire", "keys.dek.destroy",
    "deployment.request", "deployment.undeploy", "deployment.server.create", "deployment.server.update",
    "deployment.server.delete", "deployment.replica_set.create", "deployment.replica_set.scale",
    "deployment.replica_set.retire", "deployment.rollout.start", "deployment.rollout.forced",
    "deployment.rollout.abort", "deployment.traffic.set",
    "compliance.profile.attach", "compliance.profile.detach", "compliance.policy.update",
    "llm.policy.update", "llm.quota.set", "llm.quota.delete", "llm.exchange.read", "llm.exchange.delete",
    "audit.export", "audit.purge_floor.raise", "config.insecure_override",
)  # fmt: skip


def _aligned(now: datetime, period: int) -> datetime:
    return datetime.fromtimestamp(int(now.timestamp()) // period * period, tz=UTC)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def call_series(window: str = "1h", now: datetime | None = None) -> dict:
    """Per model (the CHART_MODELS busiest), one value per point of the window: calls/s, error rate,
    p50/p95 latency (ms), tokens in/out; and per model version, the window's totals. Two grouped
    queries over CallSeries: the sums are the database's, Python only reads percentiles."""
    period, count = WINDOWS[window]
    last = _aligned(now or timezone.now(), period)
    first = last - timedelta(seconds=period * (count - 1))
    slots = [first + timedelta(seconds=period * i) for i in range(count)]
    rows = CallSeries.objects.filter(period=period, start__gte=first, start__lte=last)
    sums = {name: Sum(name) for name in (*TOTALS, *BUCKET_FIELDS)}
    versions = [
        _version_total(row)
        for row in rows.values("model_name", "version").annotate(**sums).order_by("model_name", "version")
    ]
    calls_per_model = defaultdict(int)
    for total in versions:
        calls_per_model[total["model"]] += total["calls"]
    busiest = sorted(calls_per_model, key=lambda m: (-calls_per_model[m], m))[:CHART_MODELS]
    per_slot = rows.filter(model_name__in=busiest).values("model_name", "start").annotate(**sums)
    series = {name: _empty_series(name, count) for name in busiest}
    index = {slot: i for i, slot in enumerate(slots)}
    for row in per_slot:
        _fill(series[row["model_name"]], index[row["start"]], row, period)
    return {
        "window": window,
        "period_seconds": int(period),
        "labels": [slot.isoformat() for slot in slots],
        "models": [series[name] for name in busiest],
        "versions": versions,
    }


TOTALS = ("calls", "errors", "denied", "tokens_in", "tokens_out")


def _empty_series(name: str, count: int) -> dict:
    series = {"model": name, "calls_per_second": [0.0] * count, "error_rate": [None] * count}
    series.update({key: [None] * count for key in ("p50_ms", "p95_ms")})
    series.update({key: [0] * count for key in ("tokens_in", "tokens_out")})
    return series


def _fill(series: dict, i: int, row: dict, period: int) -> None:
    buckets = [row[name] for name in BUCKET_FIELDS]
    series["calls_per_second"][i] = round(row["calls"] / period, 4)
    series["error_rate"][i] = _rate(row["errors"], row["calls"])
    series["p50_ms"][i] = _ms(histogram.percentile(buckets, 0.50))
    series["p95_ms"][i] = _ms(histogram.percentile(buckets, 0.95))
    series["tokens_in"][i] = row["tokens_in"]
    series["tokens_out"][i] = row["tokens_out"]


def _version_total(row: dict) -> dict:
    buckets = [row[name] for name in BUCKET_FIELDS]
    return {
        "model": row["model_name"],
        "version": row["version"],
        **{key: row[key] for key in TOTALS},
        "error_rate": _rate(row["errors"], row["calls"]),
        "p50_ms": _ms(histogram.percentile(buckets, 0.50)),
        "p95_ms": _ms(histogram.percentile(buckets, 0.95)),
    }


# A server's health as the reader's language says it (the JSON keeps the stored `state` beside it).
HEALTH = {
    "up": pgettext_lazy("server health", "up"),
    "down": pgettext_lazy("server health", "down"),
    "unknown": pgettext_lazy("server health", "unknown"),
}


def fleet() -> dict:
    """The live versions (active replica sets: weight, replicas wanted and active) and the servers
    with their health and how many replicas each runs."""
    live = (
        ReplicaSet.objects.filter(state="active")
        .annotate(active=Count("deployments", filter=Q(deployments__observed_state=Observed.ACTIVE)))
        .order_by("model__name", "model_version__version")
        .values_list("model__name", "model_version__version", "traffic_weight", "replicas", "active")
    )
    servers = (
        InferenceServer.objects.annotate(
            active=Count("deployments", filter=Q(deployments__observed_state=Observed.ACTIVE))
        )
        .order_by("name")
        .values_list("name", "state", "last_seen_at", "active")
    )
    return {
        "live": [{"model": m, "version": v, "weight": w, "replicas": r, "active": a} for m, v, w, r, a in live[:200]],
        "servers": [
            {
                "name": n,
                "state": s,
                "state_label": str(HEALTH.get(s, s)),
                "last_seen_at": seen.isoformat() if seen else None,
                "replicas": a,
            }
            for n, s, seen, a in servers[:200]
        ],
    }


def failed_deploys(limit: int = 10) -> list[dict]:
    """The most recent deployments in the `failed` state, with the message of their failure."""
    reason = DeploymentTransition.objects.filter(deployment=OuterRef("pk"), to_state=Observed.FAILED).order_by("-at")
    rows = (
        Deployment.objects.filter(observed_state=Observed.FAILED)
        .annotate(reason=Subquery(reason.values("message")[:1]))
        .order_by("-updated_at")
        .values_list("pk", "model__name", "model_version__version", "server__name", "updated_at", "reason")[:limit]
    )
    return [
        {"id": pk, "model": m, "version": v, "server": s, "at": at.isoformat(), "reason": (r or "")[:300]}
        for pk, m, v, s, at, r in rows
    ]


def compliance_trend(runs: int = 30) -> dict:
    """Score per profile (controls passed ÷ controls judged: pass, fail and manual — a missing
    attestation is not met — in %) over the last `runs` evaluations, oldest first."""
    finished = EvaluationRun.objects.filter(finished_at__isnull=False).order_by("-started_at")
    recent = list(finished.values_list("pk", "started_at")[:runs])[::-1]
    counts = (
        ControlResult.objects.filter(run_id__in=[pk for pk, _ in recent])
        .exclude(status="not_applicable")
        .values_list("run_id", "profile", "status")
        .annotate(n=Count("id"))
    )
    tally: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for run_id, profile, status, n in counts:
        cell = tally[profile][run_id]
        cell[0] += n if status == "pass" else 0
        cell[1] += n
    profiles = []
    for profile in sorted(tally):
        scores = [
            round(100 * tally[profile][pk][0] / tally[profile][pk][1], 1) if pk in tally[profile] else None
            for pk, _ in recent
        ]
        latest = next((s for s in reversed(scores) if s is not None), None)
        earlier = [s for s in scores[:-1] if s is not None]
        previous = earlier[-1] if earlier else None
        profiles.append({"profile": profile, "scores": scores, "latest": latest, "previous": previous})
    return {"labels": [at.isoformat() for _, at in recent], "profiles": profiles}


def privileged_actions(user, limit: int = 10) -> list[dict] | None:
    """The latest privileged actions this user may read in the audit log (auditor: all; security
    officer: the key events); None for whom the log is closed."""
    try:
        events = events_visible_to(user)
    except ServiceError:
        return None
    rows = (
        events.filter(event_type__in=PRIVILEGED_TYPES)
        .order_by("-timestamp")
        .values_list("pk", "timestamp", "actor_name", "event_type", "target_display", "outcome")[:limit]
    )
    outcomes = dict(events.model._meta.get_field("outcome").flatchoices)  # in the reader's language
    return [
        {
            "id": pk,
            "at": at.isoformat(),
            "when": at,  # shown in the reader's zone, with seconds and the zone's name
            "actor": a,
            "event_type": t,
            "target": d,
            "outcome": o,
            "outcome_label": str(outcomes.get(o, o)),
        }
        for pk, at, a, t, d, o in rows
    ]


def dashboard(user, window: str = "1h", now: datetime | None = None) -> dict:
    """What the dashboard's JSON endpoint answers: each section this user may see."""
    data: dict = {"generated_at": (now or timezone.now()).isoformat(), "calls": call_series(window, now)}
    if user.has_perm("deployments.view_deployment"):
        data["fleet"] = fleet()
        data["failed_deploys"] = failed_deploys()
    if user.has_perm("compliance.view_controlresult"):
        data["compliance"] = compliance_trend()
    return data
