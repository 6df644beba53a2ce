"""Checks of alert delivery: a configured channel that has been proven to acknowledge alerts."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from . import FAIL, PASS, CheckResult, register

REMEDY = (
    "Set SOVEREIGN_ALERT_WEBHOOK_URL to the security team's webhook (an address the outbound policy allows), "
    "run `python manage.py send_test_alert` and make sure it answers 2xx; keep a Celery worker running."
)


def _delivery_evidence(delivery) -> dict | None:
    if delivery is None:
        return None
    return {
        "id": delivery.pk,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "sent_at": delivery.sent_at.isoformat() if delivery.sent_at else None,
        "http_status": delivery.http_status,
        "acknowledged_at": delivery.acknowledged_at.isoformat() if delivery.acknowledged_at else None,
        "error": delivery.error,
    }


def delivery_proof(ctx) -> tuple[str | None, dict]:
    """(problem or None, evidence): is the configured channel proven by a delivered alert within
    ALERT_PROOF_DAYS, with no failure since? Shared by the checks that need alerts to arrive."""
    if "alert_proof" in ctx.cache:
        return ctx.cache["alert_proof"]
    from apps.audit.selectors import alert_channel, alert_deliveries

    channel = alert_channel()
    days = settings.ALERT_PROOF_DAYS
    evidence = {"channel": channel["channel"], "policy_refusal": channel["refused"], "window_days": days}
    attempted = alert_deliveries().filter(channel=channel["channel"], sent_at__isnull=False).exclude(channel="")
    last = attempted.order_by("-sent_at", "-id").first()
    delivered = attempted.filter(acknowledged_at__isnull=False).order_by("-acknowledged_at").first()
    evidence["last_attempt"] = _delivery_evidence(last)
    evidence["last_delivered"] = _delivery_evidence(delivered)
    evidence["checked_at"] = ctx.now.isoformat()
    if not channel["configured"]:
        problem = "no alert channel is configured: alerts reach nobody"
    elif channel["refused"]:
        problem = f"the alert channel's address is refused: {channel['refused']['detail']}"
    elif last is None:
        problem = "no alert has ever been sent to the configured channel"
    elif last.acknowledged_at is None:
        problem = f"the last alert to the channel was not acknowledged ({last.status}: {last.error})"
    elif delivered.acknowledged_at < ctx.now - timedelta(days=days):
        problem = f"no alert acknowledged by the channel in the last {days} days"
    else:
        problem = None
    ctx.cache["alert_proof"] = (problem, evidence)
    return problem, evidence


@register("alerts.delivery_proven", proof="query")
def delivery_proven(ctx) -> CheckResult:
    problem, evidence = delivery_proof(ctx)
    if problem:
        return CheckResult(FAIL, problem, evidence, REMEDY)
    when = evidence["last_delivered"]["acknowledged_at"][:19]
    return CheckResult(
        PASS,
        f"the alert channel acknowledged an alert at {when} (HTTP {evidence['last_delivered']['http_status']})",
        evidence,
    )
