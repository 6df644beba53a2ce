"""accounts.login_monitoring: lockout configured, the failed-login rate rule on, and its alerts
delivered to a real local webhook after failed logins through the real login endpoint."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.audit.models import AlertDelivery, AuditEvent
from apps.compliance.checks import FAIL, PASS, Context, run_check
from portal.celery import app as celery_app
from tests.conftest import make_user

from .receivers import Receiver

pytestmark = pytest.mark.django_db
LOGIN = "/api/v1/accounts/login/"


@pytest.fixture
def receiver(settings):
    rec = Receiver()
    settings.ALERT_WEBHOOK_URL = rec.url
    settings.ALERT_MAX_ATTEMPTS = 2
    settings.ALERT_RETRY_BASE_SECONDS = 0.01
    settings.LOGIN_ALERT_FAILURES = 3
    settings.LOGIN_ALERT_MINUTES = 10
    yield rec
    rec.stop()


@pytest.fixture
def eager():
    """Tasks run in the test's process (the delivery is the real Celery task, run at once)."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def check():
    return run_check("accounts.login_monitoring", Context(profile="hipaa"))


def fail_logins(n: int, username: str, addr: str = "198.51.100.7", capture=None) -> None:
    client = APIClient(REMOTE_ADDR=addr)
    with capture(execute=True):  # run the after-commit enqueue of each alert
        for _ in range(n):
            resp = client.post(LOGIN, {"username": username, "password": "wrong-password-1"}, format="json")
            assert resp.status_code in (401, 403, 429), resp.status_code


def prove_channel(capture) -> None:
    from apps.audit.services import send_test_alert

    with capture(execute=True):
        send_test_alert(actor=None)


def test_failed_logins_alert_through_the_channel(receiver, eager, django_capture_on_commit_callbacks):
    make_user("nurse")
    prove_channel(django_capture_on_commit_callbacks)
    assert check().status == PASS, check().summary
    fail_logins(2, "nurse", capture=django_capture_on_commit_callbacks)
    assert not AuditEvent.objects.filter(event_type="auth.login.failure_rate").exists()  # below the threshold
    fail_logins(1, "nurse", capture=django_capture_on_commit_callbacks)
    rule_alerts = [r for r in receiver.received if r["event_type"] == "auth.login.failure_rate"]
    assert len(rule_alerts) == 2  # the user name and the address both reached 3
    assert {a["details"]["rule"] for a in rule_alerts} == {"user", "address"}
    user_alert = next(a for a in rule_alerts if a["details"]["rule"] == "user")
    assert user_alert["details"]["key"] == "nurse" and user_alert["details"]["failures"] == 3
    assert AlertDelivery.objects.filter(event_type="auth.login.failure_rate", status="delivered").count() == 2
    fail_logins(1, "nurse", capture=django_capture_on_commit_callbacks)  # once per subject and window
    assert len([r for r in receiver.received if r["event_type"] == "auth.login.failure_rate"]) == 2
    result = check()
    assert result.status == PASS, result.summary
    assert result.evidence["rule_alerts_30_days"] == 2


def test_spray_from_many_addresses_alerts_on_the_user(receiver, eager, django_capture_on_commit_callbacks):
    for i in range(3):
        fail_logins(1, "officer", addr=f"192.0.2.{i + 1}", capture=django_capture_on_commit_callbacks)
    rule_alerts = [r for r in receiver.received if r["event_type"] == "auth.login.failure_rate"]
    assert [a["details"]["rule"] for a in rule_alerts] == ["user"]


def test_rule_off_fails(receiver, settings, eager, django_capture_on_commit_callbacks):
    prove_channel(django_capture_on_commit_callbacks)
    settings.LOGIN_ALERT_ENABLED = False
    result = check()
    assert result.status == FAIL and "rate rule is off" in result.summary
    fail_logins(3, "nurse", capture=django_capture_on_commit_callbacks)
    assert not AuditEvent.objects.filter(event_type="auth.login.failure_rate").exists()


def test_lockout_off_or_no_cooloff_fails(receiver, settings, eager, django_capture_on_commit_callbacks):
    prove_channel(django_capture_on_commit_callbacks)
    settings.AXES_FAILURE_LIMIT = 50
    assert "lockout" in check().summary and check().status == FAIL
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = None
    assert "cool-off" in check().summary


def test_undeliverable_rule_alert_fails(receiver, eager, django_capture_on_commit_callbacks):
    prove_channel(django_capture_on_commit_callbacks)
    receiver.stop()
    fail_logins(3, "nurse", capture=django_capture_on_commit_callbacks)
    assert AlertDelivery.objects.filter(event_type="auth.login.failure_rate", status="failed").exists()
    result = check()
    assert result.status == FAIL
    assert "not delivered" in result.summary and "not acknowledged" in result.summary


def test_no_channel_fails(settings):
    settings.ALERT_WEBHOOK_URL = ""
    result = check()
    assert result.status == FAIL and "no alert channel" in result.summary
