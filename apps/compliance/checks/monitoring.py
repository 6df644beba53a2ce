"""Checks of monitoring: log-in monitoring (lockout and the failed-login rate rule whose alerts
arrive), activity review (auditors read the audit log) and central collection (audit events
shipped to an external collector)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from . import FAIL, PASS, REGISTRY, CheckResult, register
from .alerts import delivery_proof

LIST_LIMIT = 50
RULE_MAX_FAILURES = 50
RULE_MAX_MINUTES = 24 * 60
TRIGGER_WINDOW = timedelta(days=30)


@register("accounts.login_monitoring", proof="query")
def login_monitoring(ctx) -> CheckResult:
    """Lockout is configured (django-axes: limit and cool-off), the failed-login rate rule is on
    with sane bounds, the alert channel is proven, and every rule alert of the last 30 days was
    acknowledged by the channel."""
    from apps.audit.selectors import alert_deliveries

    lockout = REGISTRY["settings.lockout"](ctx)
    cooloff = getattr(settings, "AXES_COOLOFF_TIME", None)
    cooloff_minutes = cooloff.total_seconds() / 60 if hasattr(cooloff, "total_seconds") else None
    rule = {
        "enabled": settings.LOGIN_ALERT_ENABLED,
        "failures": settings.LOGIN_ALERT_FAILURES,
        "window_minutes": settings.LOGIN_ALERT_MINUTES,
        "subjects": ["user name (any address)", "address (any user name)"],
    }
    triggers = alert_deliveries().filter(event_type="auth.login.failure_rate", created_at__gte=ctx.now - TRIGGER_WINDOW)
    undelivered = list(triggers.filter(acknowledged_at__isnull=True).values_list("event_id", flat=True)[:LIST_LIMIT])
    alert_problem, alert_evidence = delivery_proof(ctx)
    evidence = {
        "lockout": {**lockout.evidence, "cooloff_minutes": cooloff_minutes},
        "failure_rate_rule": rule,
        "rule_alerts_30_days": triggers.count(),
        "rule_alerts_not_delivered": undelivered,
        "alert_channel": alert_evidence,
    }
    problems = []
    if lockout.status != PASS:
        problems.append(f"lockout: {lockout.summary}")
    if not cooloff_minutes or cooloff_minutes <= 0:
        problems.append("no lockout cool-off (AXES_COOLOFF_TIME) is configured")
    if not rule["enabled"]:
        problems.append("the failed-login rate rule is off (SOVEREIGN_LOGIN_ALERT)")
    elif not (1 <= rule["failures"] <= RULE_MAX_FAILURES and 1 <= rule["window_minutes"] <= RULE_MAX_MINUTES):
        problems.append(
            f"the failed-login rate rule ({rule['failures']} in {rule['window_minutes']} min) is outside "
            f"1-{RULE_MAX_FAILURES} failures within 1-{RULE_MAX_MINUTES} minutes"
        )
    if alert_problem:
        problems.append(f"its alerts cannot be shown to arrive: {alert_problem}")
    if undelivered:
        problems.append(f"{len(undelivered)} failed-login alert(s) of the last 30 days were not delivered")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Keep django-axes on (SOVEREIGN_LOCKOUT_FAILURES 1-10, SOVEREIGN_LOCKOUT_MINUTES > 0), set "
            "SOVEREIGN_LOGIN_ALERT=true with SOVEREIGN_LOGIN_ALERT_FAILURES / _MINUTES, and prove the alert channel "
            "(`manage.py send_test_alert`).",
        )
    return CheckResult(
        PASS,
        f"logins lock after {lockout.evidence.get('AXES_FAILURE_LIMIT')} failures for {cooloff_minutes:g} min; "
        f"{rule['failures']} failures in {rule['window_minutes']} min per user or address alert, through a proven "
        "channel",
        evidence,
    )


REVIEW_EVENTS = ("audit.search", "audit.export", "audit.verify")


@dataclass(frozen=True)
class _Read:
    pk: int
    event_type: str
    actor_name: str
    timestamp: datetime


@register("audit.activity_review", proof="query")
def activity_review(ctx) -> CheckResult:
    """Information system activity review: within SOVEREIGN_AUDIT_REVIEW_DAYS somebody holding the
    auditor role (frozen into each event at the time) searched, opened, exported or verified the
    audit log, as the log itself records (every read through the API and the admin is an event)."""
    from apps.accounts.roles import AUDITOR
    from apps.audit.models import AuditEvent

    days = settings.AUDIT_REVIEW_DAYS
    reads = AuditEvent.objects.filter(
        event_type__in=REVIEW_EVENTS, outcome="success", timestamp__gte=ctx.now - timedelta(days=days)
    ).exclude(actor_name="")
    # actor_roles is JSON: filtered here, not in SQL (SQLite has no JSON containment); reads are few.
    rows = reads.order_by("-timestamp").values_list("pk", "event_type", "actor_name", "timestamp", "actor_roles")
    by_auditors, others = [], set()
    for row in rows.iterator():
        if AUDITOR in (row[4] or []):
            by_auditors.append(_Read(*row[:4]))
        else:
            others.add(row[2])
    others = sorted(others)[:LIST_LIMIT]
    evidence = {
        "window_days": days,
        "review_event_types": list(REVIEW_EVENTS),
        "reads_by_auditors": len(by_auditors),
        "auditors": sorted({e.actor_name for e in by_auditors})[:LIST_LIMIT],
        "last_review": (
            {
                "event": by_auditors[0].pk,
                "type": by_auditors[0].event_type,
                "by": by_auditors[0].actor_name,
                "at": by_auditors[0].timestamp.isoformat(),
            }
            if by_auditors
            else None
        ),
        "reads_by_non_auditors": others,
        "queried_at": ctx.now.isoformat(),
    }
    if not by_auditors:
        return CheckResult(
            FAIL,
            f"no auditor read the audit log in the last {days} days",
            evidence,
            "Have a person in the auditor role review the log (search, export or verify it in the admin or through "
            "/api/v1/audit/) at least every "
            f"{days} days; the reads are recorded and this check finds them.",
        )
    last = evidence["last_review"]
    return CheckResult(
        PASS,
        f"{len(by_auditors)} audit-log read(s) by {len(evidence['auditors'])} auditor(s) in {days} days; "
        f"last by {last['by']} at {last['at'][:19]}",
        evidence,
    )


@register("audit.central_collection", proof="query")
def central_collection(ctx) -> CheckResult:
    """等保 8.1.5.4: the external collector acknowledged (2xx) the sealed audit events up to a recent
    one: the oldest sealed event it has not acknowledged is younger than
    SOVEREIGN_AUDIT_COLLECTOR_MAX_LAG_SECONDS, and the last shipment did not fail."""
    from apps.audit.selectors import central_collection as state_of

    state = state_of(ctx.now)
    limit = settings.AUDIT_COLLECTOR_MAX_LAG_SECONDS
    evidence = {**state, "max_lag_seconds": limit, "queried_at": ctx.now.isoformat()}
    last = state["last_attempt"]
    problems = []
    if not state["configured"]:
        problems.append("no external audit collector is configured (SOVEREIGN_AUDIT_COLLECTOR_URL)")
    elif state["refused"]:
        problems.append(f"the collector's address is refused: {state['refused']['detail']}")
    else:
        if state["lag_seconds"] > limit:
            problems.append(
                f"{state['unshipped_events']} sealed event(s) not acknowledged by the collector, the oldest "
                f"{state['lag_seconds']} s old (limit {limit} s)"
            )
        if state["sealed_through"] and not state["acknowledged_through"]:
            problems.append("the collector has acknowledged no audit event yet")
        if last and last["acknowledged_at"] is None:
            problems.append(f"the last shipment failed: {last['error']}")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Set SOVEREIGN_AUDIT_COLLECTOR_URL to the central log collector, make sure it answers 2xx, and keep "
            "Celery beat and a worker running (task apps.audit.tasks.ship_audit_events).",
        )
    return CheckResult(
        PASS,
        f"the collector acknowledged the sealed audit log through sequence {state['acknowledged_through']} "
        f"({state['unshipped_events']} newer event(s), lag {state['lag_seconds']} s ≤ {limit} s)",
        evidence,
    )
