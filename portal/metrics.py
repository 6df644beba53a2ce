"""`/metrics` (Prometheus text format) and `/metrics/triton/<server>` (a Triton server's own metrics,
relayed with a `server` label), docs/metrics.md.

Who may scrape: a bearer token whose SHA-256 is settings.METRICS_TOKEN_SHA256, or a client address
inside settings.METRICS_ALLOWED_NETWORKS; anyone else gets 401 `metrics_unauthenticated`. Successful
scrapes are not audited (a read of aggregate figures, no personal data, every 15 s: 5,760 events a
day per Prometheus would bury the log); refused ones are, as `access.refused`, collapsed per
(address, code, minute) like every unauthenticated refusal (apps/audit/refusals.py).

The figures: the data plane's cumulative counters from Redis (apps/gateway/telemetry.py) and the
control plane's state (apps/gateway/monitoring.py). A source that cannot be read is left out and
`sovereign_metrics_source_up{source}` says 0, so a scrape still answers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from apps.audit import refusals
from apps.audit.models import Outcome
from apps.audit.services import Source
from apps.core.netaddr import request_client_address
from apps.gateway import monitoring, telemetry

logger = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TRITON_MAX_BYTES = 16 * 1024 * 1024


# -- who may scrape ------------------------------------------------------------------------------


def _bearer_ok(request) -> bool:
    expected = settings.METRICS_TOKEN_SHA256
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not expected or not header.startswith("Bearer "):
        return False
    digest = hashlib.sha256(header[7:].strip().encode()).hexdigest()
    return hmac.compare_digest(digest, expected)


def _network_ok(request) -> bool:
    nets = settings.METRICS_ALLOWED_NETWORKS
    address = request_client_address(request)
    if not nets or not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n.strip()) for n in nets)


def _refused(request) -> JsonResponse:
    code, status = "metrics_unauthenticated", 401
    refusals.record_refusal(
        "access.refused",
        source=Source.from_request(request),
        outcome=Outcome.DENIED,
        error_code=code,
        target_display=request.path[:200],
        details={"method": request.method, "path": request.path[:500], "status": status},
    )
    response = JsonResponse(
        {
            "code": code,
            "detail": "metrics need the metrics bearer token (SOVEREIGN_METRICS_TOKEN) or an address in "
            "SOVEREIGN_METRICS_ALLOWED_NETWORKS",
        },
        status=status,
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _may_scrape(request) -> bool:
    return _bearer_ok(request) or _network_ok(request)


# -- the exposition ------------------------------------------------------------------------------


def _counter(name: str, doc: str, labels: list[str], rows: dict[tuple, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(rows.items()):
        family.add_metric(list(key), value)
    return family


def _sum_by(fields: dict[str, float], pick) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for field, value in fields.items():
        key = pick(telemetry.split(field))
        if key is not None:
            out[key] = out.get(key, 0.0) + value
    return out


def _latency(fields: dict[str, float]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "sovereign_gateway_request_duration_seconds",
        "Time from a call's arrival to its answer at the gateway (every call, refusals included)",
        labels=["model", "version"],
    )
    per: dict[tuple, dict] = {}
    for field, value in fields.items():
        model, version, part = telemetry.split(field)
        row = per.setdefault((model, version), {"sum": 0.0, "buckets": [0.0] * (len(telemetry.LATENCY_BOUNDS_S) + 1)})
        if part == "sum":
            row["sum"] += value
        else:
            row["buckets"][int(part)] += value
    for key, row in sorted(per.items()):
        running, buckets = 0.0, []
        for bound, count in zip([*telemetry.LATENCY_BOUNDS_S, float("inf")], row["buckets"], strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric(list(key), buckets, row["sum"])
    return family


def _dataplane() -> list:
    hashes, processes = telemetry.read()
    calls = hashes[telemetry.CALLS]
    backlog = GaugeMetricFamily(
        "sovereign_audit_commit_backlog", "Audit events waiting for the next group commit", labels=["process"]
    )
    for process, gauges in sorted(processes.items()):
        if "audit_backlog" in gauges:
            backlog.add_metric([process], gauges["audit_backlog"])
    return [
        _counter(
            "sovereign_gateway_calls",
            "Calls answered by the gateway's data plane, by model, version, kind, HTTP status and error code "
            '(model="" version="": refused before a deployment was chosen)',
            ["model", "version", "kind", "status", "code"],
            _sum_by(calls, tuple),
        ),
        _counter(
            "sovereign_gateway_errors",
            "Calls answered with an error, by its stable code",
            ["model", "version", "code"],
            _sum_by(calls, lambda p: (p[0], p[1], p[4]) if p[4] else None),
        ),
        _latency(hashes[telemetry.LATENCY]),
        _counter(
            "sovereign_gateway_tokens",
            "Language-model tokens, prompt (in) and completion (out)",
            ["model", "version", "direction"],
            _sum_by(hashes[telemetry.TOKENS], tuple),
        ),
        _counter(
            "sovereign_gateway_deidentified_entities",
            "Identifiers replaced in requests before they reached the model, by entity type",
            ["model", "version", "entity"],
            _sum_by(hashes[telemetry.DEID], tuple),
        ),
        backlog,
    ]


def _gauge(name: str, doc: str, labels: list[str], rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in rows:
        if value is not None:
            family.add_metric(list(key), value)
    return family


def _servers() -> list:
    servers = monitoring.servers()
    states = ("up", "down", "unknown")
    return [
        _gauge("sovereign_server_up", "1 when the portal's last health check found the server up",
               ["server"], [((s.name,), float(s.state == "up")) for s in servers]),
        _gauge("sovereign_server_state", "The server's health state (1 for the current one)", ["server", "state"],
               [((s.name, st), float(s.state == st)) for s in servers for st in states]),
        _gauge("sovereign_server_last_seen_timestamp_seconds", "When the server last passed a health check",
               ["server"], [((s.name,), s.last_seen) for s in servers]),
        _gauge("sovereign_gateway_circuit_reporting_processes",
               "Data-plane processes that reported their circuit breaker for the server in the last 30 s",
               ["server"], [((s.name,), float(s.circuit_processes)) for s in servers]),
        _gauge("sovereign_gateway_circuit_open", "Data-plane processes whose circuit to the server is not closed",
               ["server"], [((s.name,), float(s.circuit_open)) for s in servers if s.circuit_processes]),
    ]  # fmt: skip


def _queues() -> list:
    return [
        _gauge("sovereign_celery_queue_length", "Messages waiting in a Celery queue (Redis broker)", ["queue"],
               [((q,), float(n)) for q, n in monitoring.queue_depths().items()])
    ]  # fmt: skip


def _sealer() -> list:
    state, now = monitoring.sealer(), time.time()
    lag = None if state.last_checkpoint is None else max(0.0, now - state.last_checkpoint)
    return [
        _gauge("sovereign_audit_unsealed_events", "Audit events committed but not yet chained by the sealer", [],
               [((), float(state.unsealed))]),
        _gauge("sovereign_audit_unsealed_oldest_age_seconds", "Age of the oldest unsealed audit event (0: none)", [],
               [((), state.oldest_unsealed_age)]),
        _gauge("sovereign_audit_checkpoint_age_seconds", "Seconds since the newest signed audit checkpoint", [],
               [((), lag)]),
        _gauge("sovereign_audit_sealed_sequence", "The highest sequence number sealed into the audit chain", [],
               [((), float(state.sealed_head))]),
    ]  # fmt: skip


def _compliance() -> list:
    controls = monitoring.control_states()
    judged = [c for c in controls if c.status in ("pass", "fail")]
    states = ("pass", "fail", "manual", "not_applicable")
    return [
        _gauge("sovereign_compliance_control_passing", "1: the control passed its latest evaluation, 0: it failed",
               ["profile", "control"], [((c.profile, c.control), float(c.status == "pass")) for c in judged]),
        _gauge("sovereign_compliance_control_state", "The control's latest status (1 for the current one)",
               ["profile", "control", "state"],
               [((c.profile, c.control, s), float(c.status == s)) for c in controls for s in states]),
        _gauge("sovereign_compliance_control_regressed",
               "1 when the control fails after having passed in an earlier evaluation", ["profile", "control"],
               [((c.profile, c.control), float(c.regressed)) for c in controls]),
    ]  # fmt: skip


def _quotas() -> list:
    use = monitoring.quota_use()
    labels = ["quota", "scope", "model", "window"]
    key = lambda q: (str(q.quota_id), q.scope, q.model, q.window)  # noqa: E731
    return [
        _gauge("sovereign_quota_used_tokens", "Tokens used in the quota's current UTC day or month", labels,
               [(key(q), float(q.used)) for q in use]),
        _gauge("sovereign_quota_limit_tokens", "The quota's token limit for that window", labels,
               [(key(q), float(q.limit)) for q in use]),
    ]  # fmt: skip


SOURCES = {
    "dataplane": _dataplane,
    "servers": _servers,
    "queues": _queues,
    "sealer": _sealer,
    "compliance": _compliance,
    "quotas": _quotas,
}


class PortalCollector:
    """Reads every source at each scrape; a source that fails is left out and reported as down."""

    def collect(self):
        up = GaugeMetricFamily("sovereign_metrics_source_up", "1 when the source could be read for this scrape",
                               labels=["source"])  # fmt: skip
        for name, read in SOURCES.items():
            try:
                families = read()
            except Exception:  # noqa: BLE001 - one unreadable source must not fail the scrape
                logger.exception("metrics source %s unreadable", name)
                up.add_metric([name], 0.0)
                continue
            up.add_metric([name], 1.0)
            yield from families
        yield up


def exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return generate_latest(registry)


@require_GET
def metrics(request):
    if not _may_scrape(request):
        return _refused(request)
    return HttpResponse(exposition(), content_type=CONTENT_TYPE)


# -- Triton's own metrics, federated -------------------------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?(\s+.*)$")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def relabel(text: str, server: str) -> str:
    """Each sample of a Prometheus text exposition with `server="<name>"` added as its first label."""
    label = f'server="{_escape(server)}"'
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line) if line and not line.startswith("#") else None
        if match is None:
            out.append(line)
            continue
        name, labels, rest = match.groups()
        inner = labels[1:-1].strip().rstrip(",") if labels else ""
        out.append(f"{name}{{{label}{',' + inner if inner else ''}}}{rest}")
    return "\n".join(out) + "\n"


def fetch_triton_metrics(url: str) -> str:
    """GET a server's metrics_url under the Triton server policy (inference_backend/netpolicy.py) and TLS
    settings; raises AddressRefused, urllib3's errors, or ValueError for a non-200 or oversized answer."""
    from urllib3 import Timeout

    from apps.deployments.transport import server_policy, tls_config
    from inference_backend.transport import GuardedPoolManager

    timeout = settings.METRICS_TRITON_TIMEOUT
    with GuardedPoolManager(server_policy(), tls_config(), retries=False) as pool:
        response = pool.request(
            "GET", url, timeout=Timeout(connect=timeout, read=timeout), redirect=False, preload_content=False
        )
        try:
            body = response.read(TRITON_MAX_BYTES + 1)
        finally:
            response.release_conn()
    if response.status != 200:
        raise ValueError(f"HTTP {response.status}")
    if len(body) > TRITON_MAX_BYTES:
        raise ValueError("answer larger than 16 MiB")
    return body.decode("utf-8", "replace")


@require_GET
def triton_metrics(request, server: str):
    if not _may_scrape(request):
        return _refused(request)
    from apps.deployments.models import InferenceServer
    from inference_backend.netpolicy import AddressRefused

    found = InferenceServer.objects.filter(name=server).values_list("metrics_url", flat=True).first()
    if not found:
        return JsonResponse({"code": "not_found", "detail": "no such server, or it has no metrics_url"}, status=404)
    try:
        text = fetch_triton_metrics(found)
    except AddressRefused as err:
        return JsonResponse({"code": err.code, "detail": f"metrics_url refused: {err.message}"}, status=502)
    except Exception as err:  # noqa: BLE001 - unreachable, timed out, not 200: Prometheus marks the target down
        return JsonResponse(
            {"code": "triton_metrics_unavailable", "detail": f"{server}: {type(err).__name__}: {err}"[:500]},
            status=502,
        )
    return HttpResponse(relabel(text, server), content_type=CONTENT_TYPE)
