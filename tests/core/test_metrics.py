"""`/metrics` (docs/metrics.md): who may scrape it, and the control plane's figures it exposes, read
back with prometheus_client's own parser. The data plane's figures after real calls through a real
Triton are in tests/gateway/dataplane/test_metrics_dataplane.py; the alert rules in test_metrics_rules.py."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from apps.compliance.models import ControlResult, EvaluationRun
from apps.core.throttling import redis_client
from apps.deployments.models import InferenceServer
from apps.gateway import telemetry
from apps.gateway.models import Quota
from apps.gateway.quota import PREFIX as QUOTA_PREFIX
from tests.factories import InferenceServerFactory
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def scraper(settings):
    settings.METRICS_TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
    settings.METRICS_ALLOWED_NETWORKS = []
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


def scrape(client: Client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.content.decode())


class TestWhoMayScrape:
    def test_anonymous_is_401_and_audited_collapsed(self, scraper):
        before = AuditEvent.objects.filter(event_type="access.refused", error_code="metrics_unauthenticated").count()
        for _ in range(3):
            response = Client().get("/metrics")
            assert response.status_code == 401 and response.json()["code"] == "metrics_unauthenticated"
            assert response["WWW-Authenticate"].startswith("Bearer")
        refused = AuditEvent.objects.filter(event_type="access.refused", error_code="metrics_unauthenticated")
        assert refused.count() == before + 1  # one event per (address, code, minute), the rest counted
        assert refused.last().details["path"] == "/metrics"

    def test_a_wrong_token_or_a_user_token_is_refused(self, scraper, staff_user):
        from tests.factories import token_for

        assert Client(HTTP_AUTHORIZATION="Bearer not-the-token").get("/metrics").status_code == 401
        user_token = token_for(staff_user, scopes=["read", "manage"])
        assert Client(HTTP_AUTHORIZATION=f"Bearer {user_token}").get("/metrics").status_code == 401

    def test_the_token_is_accepted_and_the_scrape_not_audited(self, scraper):
        before = AuditEvent.objects.count()
        parsed = scrape(scraper)
        assert value(parsed, "sovereign_metrics_source_up", source="dataplane") == 1.0
        assert AuditEvent.objects.count() == before  # a scrape every 15 s must not fill the log

    def test_an_allowed_network_needs_no_token(self, settings):
        settings.METRICS_TOKEN_SHA256 = ""
        settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
        assert Client().get("/metrics").status_code == 401  # the test client is 127.0.0.1
        settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]
        assert Client().get("/metrics").status_code == 200

    def test_nothing_configured_refuses_everyone(self, settings):
        settings.METRICS_TOKEN_SHA256, settings.METRICS_ALLOWED_NETWORKS = "", []
        assert Client(HTTP_AUTHORIZATION="Bearer ").get("/metrics").status_code == 401
        assert Client().get("/metrics").status_code == 401

    def test_only_get(self, scraper):
        assert scraper.post("/metrics").status_code == 405


def test_control_plane_figures(scraper, settings, plain_user):
    up = InferenceServerFactory(name="triton-up", state="up")
    InferenceServerFactory(name="triton-down", state="down")
    InferenceServer.objects.filter(pk=up.pk).update(last_seen_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    first, second = EvaluationRun.objects.create(), EvaluationRun.objects.create()
    for run, status in ((first, "pass"), (second, "fail")):
        ControlResult.objects.create(run=run, profile="hipaa", control_id="164.312(b)", family="x", status=status)
    ControlResult.objects.create(run=second, profile="hipaa", control_id="164.316", family="x", status="manual")
    record_event("alert.test", actor=None, details={"note": "unsealed"})
    quota = Quota.objects.create(scope="user", user=plain_user, tokens_per_day=1000, tokens_per_month=20000)
    client = redis_client()
    day_key = f"{QUOTA_PREFIX}{quota.pk}:d:{datetime.now(UTC):%Y%m%d}"
    settings.CELERY_TASK_DEFAULT_QUEUE = "sv-metrics-test-queue"
    client.delete("sv-metrics-test-queue")
    client.rpush("sv-metrics-test-queue", "a", "b", "c")
    client.set(day_key, 640, ex=600)
    try:
        parsed = scrape(scraper)
    finally:
        client.delete("sv-metrics-test-queue", day_key)

    assert value(parsed, "sovereign_server_up", server="triton-up") == 1.0
    assert value(parsed, "sovereign_server_up", server="triton-down") == 0.0
    assert value(parsed, "sovereign_server_state", server="triton-down", state="down") == 1.0
    assert value(parsed, "sovereign_server_state", server="triton-down", state="up") == 0.0
    assert (
        value(parsed, "sovereign_server_last_seen_timestamp_seconds", server="triton-up")
        == datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()
    )
    assert value(parsed, "sovereign_server_last_seen_timestamp_seconds", server="triton-down") is None
    assert value(parsed, "sovereign_celery_queue_length", queue="sv-metrics-test-queue") == 3.0
    assert value(parsed, "sovereign_audit_unsealed_events") >= 1
    assert 0 <= value(parsed, "sovereign_audit_unsealed_oldest_age_seconds") < 60
    assert value(parsed, "sovereign_compliance_control_passing", profile="hipaa", control="164.312(b)") == 0.0
    assert value(parsed, "sovereign_compliance_control_regressed", profile="hipaa", control="164.312(b)") == 1.0
    assert value(parsed, "sovereign_compliance_control_state", profile="hipaa", control="164.316", state="manual") == 1
    assert value(parsed, "sovereign_compliance_control_passing", profile="hipaa", control="164.316") is None
    labels = {"quota": str(quota.pk), "scope": "user", "model": ""}
    assert value(parsed, "sovereign_quota_used_tokens", window="day", **labels) == 640.0
    assert value(parsed, "sovereign_quota_limit_tokens", window="day", **labels) == 1000.0
    assert value(parsed, "sovereign_quota_used_tokens", window="month", **labels) == 0.0
    for source in ("dataplane", "servers", "queues", "sealer", "compliance", "quotas"):
        assert value(parsed, "sovereign_metrics_source_up", source=source) == 1.0, source


def test_tokens_and_deidentified_entities(scraper):
    """What the OpenAI adapter and the de-identifier hand the audit step, as counters (the hook the
    data plane calls; the real calls are in the data-plane test)."""
    route = type("Route", (), {"model": "scribe", "version": 3})()
    client = redis_client()
    client.delete(telemetry.CALLS, telemetry.LATENCY, telemetry.TOKENS, telemetry.DEID)
    llm = {"llm": {"prompt_tokens": 12, "completion_tokens": 30}}
    telemetry.record_call("inference.chat.started", status=200, error_code="", latency_ms=3, route=route, extra=llm)
    telemetry.record_call("inference.chat", status=200, error_code="", latency_ms=120, route=route, extra=llm)
    deid = {"mode": "redact", "found": {"PERSON": 2, "PHONE": 1}}
    telemetry.record_call("inference.infer", status=200, error_code="", latency_ms=7, route=route, deid=deid)
    telemetry.recorder.flush()  # (or its flusher thread did, a moment ago)

    def flushed():
        got = scrape(scraper)
        count = value(got, "sovereign_gateway_request_duration_seconds_count", model="scribe", version="3")
        return got if count == 2 else None

    parsed = wait_for(flushed, 10, what="the flushed figures")
    assert value(parsed, "sovereign_gateway_tokens_total", model="scribe", version="3", direction="in") == 12
    assert value(parsed, "sovereign_gateway_tokens_total", model="scribe", version="3", direction="out") == 30
    entity = "sovereign_gateway_deidentified_entities_total"
    assert value(parsed, entity, model="scribe", version="3", entity="PERSON") == 2
    assert value(parsed, entity, model="scribe", version="3", entity="PHONE") == 1
    calls = "sovereign_gateway_calls_total"
    assert value(parsed, calls, model="scribe", version="3", kind="chat", status="200", code="") == 1  # not .started
    assert value(parsed, "sovereign_gateway_request_duration_seconds_count", model="scribe", version="3") == 2
    assert (
        value(parsed, "sovereign_gateway_request_duration_seconds_bucket", model="scribe", version="3", le="0.01") == 1
    )
    assert value(
        parsed, "sovereign_gateway_request_duration_seconds_sum", model="scribe", version="3"
    ) == pytest.approx(0.127)


def test_redis_down_still_answers(scraper, settings, monkeypatch):
    def down():
        raise ConnectionError("redis away")

    monkeypatch.setattr(telemetry, "read", down)
    parsed = scrape(scraper)
    assert value(parsed, "sovereign_metrics_source_up", source="dataplane") == 0.0
    assert value(parsed, "sovereign_metrics_source_up", source="sealer") == 1.0


def test_triton_route_needs_the_same_credentials_and_a_known_server(scraper):
    InferenceServerFactory(name="no-metrics")
    assert Client().get("/metrics/triton/no-metrics").status_code == 401
    assert scraper.get("/metrics/triton/no-metrics").json()["code"] == "not_found"
    assert scraper.get("/metrics/triton/nowhere").status_code == 404


def test_triton_metrics_url_obeys_the_server_policy(scraper):
    InferenceServerFactory(name="metadata", metrics_url="http://169.254.169.254/metrics")
    response = scraper.get("/metrics/triton/metadata")
    assert response.status_code == 502 and response.json()["code"] == "server_address_forbidden"


def test_relabel_keeps_a_valid_exposition():
    from portal.metrics import relabel

    text = (
        "# HELP nv_inference_request_success Number of successful inference requests\n"
        "# TYPE nv_inference_request_success counter\n"
        'nv_inference_request_success{model="a--v1",version="1"} 3\n'
        "# TYPE nv_cpu_utilization gauge\n"
        "nv_cpu_utilization 0.25\n"
    )
    parsed = samples(relabel(text, 'east "1"'))
    # (the parser names a counter's samples *_total)
    assert value(parsed, "nv_inference_request_success_total", model="a--v1", version="1", server='east "1"') == 3
    assert value(parsed, "nv_cpu_utilization", server='east "1"') == 0.25
