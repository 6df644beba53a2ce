"""Alert delivery to a real local webhook, and the checks that need it proven:
alerts.delivery_proven and accounts.break_glass_audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from apps.accounts.roles import ADMIN
from apps.accounts.services import grant_emergency_access
from apps.audit.models import AlertDelivery, AuditEvent
from apps.audit.selectors import delivery_of
from apps.audit.services import send_test_alert
from apps.audit.tasks import deliver_alert_task
from apps.compliance.checks import FAIL, PASS, Context, run_check
from tests.conftest import make_user

from .receivers import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(settings):
    rec = Receiver()
    settings.ALERT_WEBHOOK_URL = rec.url
    settings.ALERT_MAX_ATTEMPTS = 2
    settings.ALERT_RETRY_BASE_SECONDS = 0.01
    yield rec
    rec.stop()


def check(name: str):
    return run_check(name, Context(profile="hipaa"))


def deliver(event) -> AlertDelivery:
    """Run the real Celery task (eagerly: retries run in turn) on the event's delivery."""
    delivery = delivery_of(event)
    deliver_alert_task.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    return delivery


def test_no_channel_fails_and_test_alert_is_refused(settings):
    settings.ALERT_WEBHOOK_URL = ""
    result = check("alerts.delivery_proven")
    assert result.status == FAIL and "no alert channel" in result.summary
    with pytest.raises(Exception) as err:
        send_test_alert(actor=None)
    assert err.value.code == "no_alert_channel"


def test_receiver_down_fails_then_up_passes(receiver, settings):
    receiver.stop()  # down: connection refused on every attempt
    delivery = deliver(send_test_alert(actor=None))
    assert delivery.status == "failed" and delivery.attempts == 2 and delivery.acknowledged_at is None
    assert "Connection" in delivery.error or "refused" in delivery.error
    result = check("alerts.delivery_proven")
    assert result.status == FAIL and "not acknowledged" in result.summary
    assert result.evidence["last_attempt"]["id"] == delivery.pk
    assert AuditEvent.objects.filter(event_type="alert.failed", target_id=str(delivery.pk)).exists()

    up = Receiver()
    settings.ALERT_WEBHOOK_URL = up.url.replace("127.0.0.1", "localhost")  # a new channel
    try:
        assert check("alerts.delivery_proven").summary.startswith("no alert has ever been sent")
        delivery = deliver(send_test_alert(actor=None, note="drill"))
        assert delivery.status == "delivered" and delivery.http_status == 200 and delivery.acknowledged_at
        assert up.received[0]["event_type"] == "alert.test" and up.received[0]["test"] is True
        assert up.received[0]["details"]["note"] == "drill"
        result = check("alerts.delivery_proven")
        assert result.status == PASS, result.summary
        assert result.evidence["last_delivered"]["http_status"] == 200
        assert "sovereign-token-abc" not in str(result.evidence)  # the URL (its token) is never shown
    finally:
        up.stop()


def test_last_delivery_failing_fails_even_after_a_success(receiver):
    assert deliver(send_test_alert(actor=None)).status == "delivered"
    assert check("alerts.delivery_proven").status == PASS
    receiver.status = 503
    delivery = deliver(send_test_alert(actor=None))
    assert delivery.status == "failed" and delivery.http_status == 503 and delivery.attempts == 2
    assert len(receiver.received) == 3  # one success, then the first try and one retry
    assert check("alerts.delivery_proven").status == FAIL
    receiver.status = 404  # permanent: no retry
    delivery = deliver(send_test_alert(actor=None))
    assert delivery.status == "failed" and delivery.attempts == 1


def test_old_delivery_no_longer_proves(receiver):
    delivery = deliver(send_test_alert(actor=None))
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        acknowledged_at=timezone.now() - timedelta(days=31), sent_at=timezone.now() - timedelta(days=31)
    )
    result = check("alerts.delivery_proven")
    assert result.status == FAIL and "last 30 days" in result.summary


def test_metadata_address_refused(settings):
    settings.ALERT_WEBHOOK_URL = "http://169.254.169.254/latest"
    result = check("alerts.delivery_proven")
    assert result.status == FAIL and "refused" in result.summary
    with pytest.raises(Exception) as err:
        send_test_alert(actor=None)
    assert err.value.code == "server_address_forbidden"
    assert not AuditEvent.objects.filter(event_type="alert.test").exists()  # nothing half-saved


def test_management_command(receiver, capsys):
    call_command("send_test_alert", "--note", "weekly")
    assert "delivered (HTTP 200" in capsys.readouterr().out
    assert receiver.received[0]["details"]["note"] == "weekly"
    receiver.stop()
    with pytest.raises(CommandError, match="retrying|failed"):
        call_command("send_test_alert")


def test_break_glass_needs_audit_event_and_delivered_alert(receiver, officer_user):
    target = make_user("bob")
    assert check("accounts.break_glass_audited").status == PASS  # channel set, nothing activated
    receiver.stop()  # the alert will fail
    access = grant_emergency_access(user_id=target.pk, role=ADMIN, minutes=30, reason="outage", actor=officer_user)
    event = AuditEvent.objects.get(event_type="auth.breakglass.grant", details__access_id=access.pk)
    assert deliver(event).status == "failed"
    result = check("accounts.break_glass_audited")
    assert result.status == FAIL and "alert was not delivered" in result.summary
    assert result.evidence["without_delivered_alert"] and result.evidence["break_glass_grants"] == 1

    up = Receiver()
    try:
        from django.conf import settings

        settings.ALERT_WEBHOOK_URL = up.url
        AlertDelivery.objects.filter(event_id=event.pk).update(status="retrying")  # the sweep's resend
        assert deliver(event).status == "delivered"
        assert up.received[0]["event_type"] == "auth.breakglass.grant"
        assert up.received[0]["details"]["reason"] == "outage"
        result = check("accounts.break_glass_audited")
        assert result.status == PASS, result.summary
    finally:
        up.stop()


def test_break_glass_without_channel_fails(settings, officer_user):
    settings.ALERT_WEBHOOK_URL = ""
    target = make_user("bob")
    grant_emergency_access(user_id=target.pk, role=ADMIN, minutes=30, reason="outage", actor=officer_user)
    delivery = AlertDelivery.objects.get(event_type="auth.breakglass.grant")
    assert delivery.status == "failed" and "no alert channel" in delivery.error
    result = check("accounts.break_glass_audited")
    assert result.status == FAIL and "no alert channel" in result.summary


def test_break_glass_grant_without_event_fails(receiver, officer_user):
    from apps.accounts.models import EmergencyAccess

    target = make_user("bob")
    now = timezone.now()
    EmergencyAccess.objects.create(  # bypassing the audited service
        user=target, role=ADMIN, reason="x", granted_by=officer_user, granted_at=now, expires_at=now + timedelta(1)
    )
    result = check("accounts.break_glass_audited")
    assert result.status == FAIL and "without their audit event" in result.summary
