"""The monitoring alerts the portal raises itself (apps/gateway/alerting.py, docs/metrics.md): each
condition of deploy/prometheus/alerts.yml is raised once at its onset as `alert.monitor.firing`,
delivered to a real webhook on 127.0.0.1 through the alert channel (docs/alerts.md), not raised
again while it holds, and resolved (`alert.monitor.resolved`, delivered too) when it ends."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.audit.selectors import delivery_of
from apps.audit.services import record_event
from apps.audit.tasks import deliver_alert_task
from apps.compliance.models import ControlResult, EvaluationRun
from apps.core.throttling import redis_client
from apps.deployments import slo
from apps.deployments.models import InferenceServer
from apps.gateway import alerting
from apps.gateway.models import Quota
from apps.gateway.quota import PREFIX as QUOTA_PREFIX
from apps.gateway.tasks import evaluate_monitor_alerts
from tests.compliance.receivers import Receiver
from tests.factories import DeploymentFactory, InferenceServerFactory
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_active_alerts():
    """Each test starts with no active condition (the set lives in Redis, shared by runs)."""
    client = redis_client()
    if client is None:
        pytest.fail("the monitoring alert tests need REDIS_URL (the active set lives in Redis)")
    client.delete(alerting.ACTIVE_KEY, alerting.LOCK_KEY)
    yield
    client.delete(alerting.ACTIVE_KEY, alerting.LOCK_KEY)


@pytest.fixture
def receiver(settings):
    rec = Receiver()
    settings.ALERT_WEBHOOK_URL = rec.url
    settings.ALERT_MAX_ATTEMPTS = 1
    yield rec
    rec.stop()


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def delivered(event: AuditEvent, receiver: Receiver) -> dict:
    """Deliver the event's outbox row with the real task; what the webhook received."""
    deliver_alert_task.apply(args=[delivery_of(event).pk])
    return next(r for r in receiver.received if r["event_id"] == event.pk)


def test_server_down_fires_once_then_resolves_at_the_webhook(receiver):
    server = InferenceServerFactory(name="triton-east", state="down")
    InferenceServerFactory(name="triton-west", state="up")

    result = evaluate_monitor_alerts.apply().get()
    assert result["firing"] == ["server_down:triton-east"] and result["skipped"] == []
    [fired] = events("alert.monitor.firing")
    assert fired.details["alert"] is True and fired.details["rule"] == "server_down"
    assert fired.details["labels"] == {"server": "triton-east"} and fired.error_code == "server_down"
    body = delivered(fired, receiver)
    assert body["event_type"] == "alert.monitor.firing" and body["details"]["condition"] == "server_down:triton-east"

    # still down: nothing new at the next ticks
    assert alerting.evaluate_alerts()["firing"] == []
    assert alerting.evaluate_alerts()["firing"] == []
    assert len(events("alert.monitor.firing")) == 1 and events("alert.monitor.resolved") == []

    InferenceServer.objects.filter(pk=server.pk).update(state="up")
    assert alerting.evaluate_alerts()["resolved"] == ["server_down:triton-east"]
    [resolved] = events("alert.monitor.resolved")
    assert resolved.details["alert"] is True and resolved.details["rule"] == "server_down"
    assert resolved.details["duration_s"] >= 0
    body = delivered(resolved, receiver)
    assert body["event_type"] == "alert.monitor.resolved" and body["details"]["resolved"] is True

    # down again: a new onset, raised again
    InferenceServer.objects.filter(pk=server.pk).update(state="down")
    assert alerting.evaluate_alerts()["firing"] == ["server_down:triton-east"]
    assert len(events("alert.monitor.firing")) == 2


def test_error_rate_of_a_live_version():
    dep = DeploymentFactory()
    model_id, version, name = dep.model_id, dep.model_version.version, dep.model.name
    now = time.time()
    for i in range(30):  # 30 calls, 3 failed: 10 % (threshold 5 %, at least 20 calls)
        slo.recorder.record(model_id, version, ok=i % 10 != 0, latency_ms=4.0, at=now)
    slo.recorder.flush()  # (or its flusher thread did, a moment ago)
    wait_for(lambda: slo.window(model_id, version, 60, now=now).calls == 30, 10, what="the flushed figures")

    result = alerting.evaluate_alerts(now=now)
    key = f"error_rate:{name}:{version}"
    assert key in result["firing"]
    [fired] = [e for e in events("alert.monitor.firing") if e.details["condition"] == key]
    assert fired.details["value"] == pytest.approx(0.1) and fired.details["threshold"] == 0.05
    assert fired.details["labels"] == {"model": name, "version": str(version)}
    # the window moves past the failures: resolved
    later = now + alerting.settings.MONITOR_ERROR_WINDOW_SECONDS + 5
    assert key in alerting.evaluate_alerts(now=later)["resolved"]


def test_below_the_minimum_number_of_calls_nothing_fires():
    dep = DeploymentFactory()
    now = time.time()
    for _ in range(5):  # all failed, but 5 calls are not evidence
        slo.recorder.record(dep.model_id, dep.model_version.version, ok=False, latency_ms=4.0, at=now)
    slo.recorder.flush()
    wait_for(lambda: slo.window(dep.model_id, dep.model_version.version, 60, now=now).calls == 5, 10, what="figures")
    assert not [k for k in alerting.evaluate_alerts(now=now)["firing"] if k.startswith("error_rate:")]


def test_sealer_lag_fires_until_the_chain_is_sealed():
    record_event("alert.test", actor=None, details={"note": "an unsealed event"})
    later = time.time() + 600  # ten minutes on: the event is still unsealed
    assert "sealer_lag" in alerting.evaluate_alerts(now=later)["firing"]
    [fired] = [e for e in events("alert.monitor.firing") if e.details["rule"] == "sealer_lag"]
    assert fired.details["value"] >= 300
    seal_pending(checkpoint=False)  # the sealer catches up (the firing event included)
    assert "sealer_lag" in alerting.evaluate_alerts(now=later)["resolved"]


def test_a_control_that_passed_then_failed():
    first, second = EvaluationRun.objects.create(), EvaluationRun.objects.create()
    for run, status in ((first, "pass"), (second, "fail")):
        ControlResult.objects.create(run=run, profile="hipaa", control_id="164.312(b)", family="x", status=status)
    # failing from the start is not a regression
    for run in (first, second):
        ControlResult.objects.create(run=run, profile="hipaa", control_id="164.308(a)", family="x", status="fail")
    result = alerting.evaluate_alerts()
    assert [k for k in result["firing"] if k.startswith("control_regressed:")] == ["control_regressed:hipaa:164.312(b)"]
    third = EvaluationRun.objects.create()
    ControlResult.objects.create(run=third, profile="hipaa", control_id="164.312(b)", family="x", status="pass")
    ControlResult.objects.create(run=third, profile="hipaa", control_id="164.308(a)", family="x", status="fail")
    assert alerting.evaluate_alerts()["resolved"] == ["control_regressed:hipaa:164.312(b)"]


def test_quota_near_exhaustion(plain_user):
    quota = Quota.objects.create(scope="user", user=plain_user, tokens_per_day=1000)
    now = time.time()
    key = f"{QUOTA_PREFIX}{quota.pk}:d:{datetime.fromtimestamp(now, UTC):%Y%m%d}"
    client = redis_client()
    client.set(key, 950, ex=600)
    try:
        result = alerting.evaluate_alerts(now=now)
        assert f"quota_near_exhaustion:{quota.pk}:day" in result["firing"]
        [fired] = [e for e in events("alert.monitor.firing") if e.details["rule"] == "quota_near_exhaustion"]
        assert fired.details["value"] == 0.95 and fired.details["labels"]["subject"] == plain_user.username
        client.set(key, 100, ex=600)
        assert f"quota_near_exhaustion:{quota.pk}:day" in alerting.evaluate_alerts(now=now)["resolved"]
    finally:
        client.delete(key)


def test_an_unreadable_rule_neither_fires_nor_resolves(monkeypatch):
    InferenceServerFactory(name="triton-gone", state="down")
    assert alerting.evaluate_alerts()["firing"] == ["server_down:triton-gone"]

    def broken(now):
        raise ConnectionError("database away")

    monkeypatch.setitem(alerting.RULES, "server_down", broken)
    result = alerting.evaluate_alerts()
    assert result["skipped"] == ["server_down"] and result["resolved"] == []
    assert events("alert.monitor.resolved") == []
