"""Checks of monitoring: log-in monitoring (lockout and the failed-login rate rule whose alerts
arrive), activity review (auditors read the audit log) and central collection (audit events
shipped to an external collector)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from . import FAIL, PASS, REGISTRY, CheckResult, register
from .alerts import delivery_proof

LIST_LIMIT = 50
RULE_MAX_FAILURES = 50
RULE_MAX_MINUTES = 24 * 60
TRIGGER_WINDOW = timedelta(days=30)


@register("accounts.login_monitoring")
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
