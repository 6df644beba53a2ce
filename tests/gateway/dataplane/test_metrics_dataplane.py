"""/metrics after real calls through the data plane (uvicorn in a thread, real sockets) onto a real
tritonserver: per model and version the calls by status and code, the errors, the latency histogram;
the refusals before routing under model=""; the gateway's circuit view and audit backlog; and the
server's own Triton metrics relayed by /metrics/triton/<server> with its name as a label."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from apps.core.throttling import redis_client
from apps.deployments import services as deployments
from apps.deployments.models import InferenceServer, Observed
from apps.gateway import deid, telemetry
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from tests.conftest import grant
from tests.factories import ModelVersionFactory, token_for
from tests.waiting import wait_for

from ..helpers import valid_request

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

NAME = "metrics-e2e"
TOKEN = "metrics-e2e-scrape-token"


@pytest.fixture
def deployed(staff_user, plain_user, triton):
    # the de-identifier's dictionaries, which the data plane loads at start (a second of CPU, far more on a
    # loaded machine): loaded before the `dataplane` fixture's 20 s start-up limit begins
    deid.warm()
    mv = ModelVersionFactory(model_name=NAME, data=build_test_onnx(4, 3, seed=41), actor=staff_user)
    grant(plain_user, mv.model)
    server = InferenceServer.objects.create(name="triton-metrics", http_url=triton.http_url,
                                            metrics_url=triton.metrics_url)  # fmt: skip
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=staff_user)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    yield mv
    with TritonClient(triton.http_url) as client:
        client.unload_model(f"{NAME}--v1")


def post(url: str, body: dict, token: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - a local test server
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def parse(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict, name: str, **labels) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


def triton_successes(text: str) -> float | None:
    """nv_inference_request_success of this test's model (Triton names it <model>--v1)."""
    found = [
        v
        for (name, labels), v in parse(text).items()
        if name == "nv_inference_request_success_total" and dict(labels).get("model") == f"{NAME}--v1"
    ]
    return sum(found) if found else None


def test_real_calls_in_metrics_and_triton_federated(deployed, plain_user, dataplane, triton, settings):
    settings.METRICS_TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as response:  # noqa: S310 - the local Triton
        before = triton_successes(response.read().decode()) or 0  # (loading the model may have run one)
    redis_client().delete(telemetry.CALLS, telemetry.LATENCY, telemetry.TOKENS, telemetry.DEID)
    dataplane.sync_policy()
    token = token_for(plain_user, scopes=["invoke"])
    url = f"{dataplane.url}/v2/models/{NAME}/infer"
    assert [post(url, valid_request(), token) for _ in range(3)] == [200, 200, 200]
    bad = {"inputs": [{"name": "NOPE", "datatype": "FP32", "shape": [1, 4], "data": [0.5] * 4}]}
    assert post(url, bad, token) == 400  # the signature check: routed, refused before Triton
    assert post(url, valid_request(), None) == 401  # refused before any route
    assert post(f"{dataplane.url}/v2/models/made-up-{NAME}/infer", valid_request(), token) == 404

    scraper = Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    duration = "sovereign_gateway_request_duration_seconds"

    def scraped():
        got = parse(scraper.get("/metrics").content.decode())
        return got if value(got, f"{duration}_count", model=NAME, version="1") == 4 else None

    parsed = wait_for(scraped, 15, what="the data plane's flushed figures in /metrics")
    calls = "sovereign_gateway_calls_total"
    assert value(parsed, calls, model=NAME, version="1", kind="infer", status="200", code="") == 3
    [(code, n)] = [
        (dict(labels)["code"], v)
        for (name, labels), v in parsed.items()
        if name == calls and dict(labels)["model"] == NAME and dict(labels)["status"] == "400"
    ]
    assert n == 1 and code  # the stable code of the refusal
    assert value(parsed, "sovereign_gateway_errors_total", model=NAME, version="1", code=code) == 1
    assert value(parsed, f"{duration}_bucket", model=NAME, version="1", le="+Inf") == 4
    assert 0 < value(parsed, f"{duration}_sum", model=NAME, version="1") < 30
    # refusals before a deployment was chosen: no model label a caller could invent
    unrouted = {
        dict(labels)["status"]: v
        for (name, labels), v in parsed.items()
        if name == calls and dict(labels)["model"] == ""
    }
    assert unrouted == {"401": 1, "404": 1}
    assert not [labels for (name, labels), _ in parsed.items() if f"made-up-{NAME}" in str(labels)]
    # the data plane's own gauges: its audit backlog, its circuit to the server (published every 1.5 s)
    assert [v for (name, _), v in parsed.items() if name == "sovereign_audit_commit_backlog"]
    parsed = wait_for(
        lambda: (
            (got := parse(scraper.get("/metrics").content.decode()))
            and value(got, "sovereign_gateway_circuit_reporting_processes", server="triton-metrics")
            and got
        ),
        15,
        what="the data plane's circuit view",
    )
    assert value(parsed, "sovereign_gateway_circuit_open", server="triton-metrics") == 0

    # Triton's own metrics, each sample labelled with the server's name
    response = scraper.get("/metrics/triton/triton-metrics")
    assert response.status_code == 200, response.content
    relayed = parse(response.content.decode())
    assert relayed and all(dict(labels).get("server") == "triton-metrics" for _, labels in relayed)
    assert triton_successes(response.content.decode()) == before + 3  # the three calls that reached Triton
    assert Client().get("/metrics/triton/triton-metrics").status_code == 401
