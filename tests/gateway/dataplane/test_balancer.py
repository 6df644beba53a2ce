"""The data plane's replica choice in isolation (apps/gateway/dataplane/balancer.py): the version split
by weight, least load, the circuit breaker, Triton's metrics. Real tritonservers: test_fleet_integration.py."""

from __future__ import annotations

from collections import Counter

import pytest

from apps.core.errors import ServiceError
from apps.gateway.dataplane.balancer import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    PROBE_TIMEOUT,
    Balancer,
    Metrics,
    apply_metrics,
    parse_metrics,
)
from apps.gateway.dataplane.snapshot import Route

SIG = {"inputs": [], "outputs": []}


def route(server_id: int, version: int = 1, weight: int = 100, signature=SIG) -> Route:
    return Route(
        deployment_id=server_id * 10 + version,
        model_id=1,
        model="m",
        version_id=version,
        version=version,
        server_id=server_id,
        server=f"s{server_id}",
        http_url=f"http://127.0.0.1:{9000 + server_id}",
        max_batch_size=8,
        signature=signature,
        deid_mode="off",
        weight=weight,
    )


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def split(balancers, routes, calls: int) -> Counter:
    """`calls` unversioned calls spread over independent balancers (one per data-plane process),
    each call ending before the next (no load): the version each went to."""
    seen: Counter = Counter()
    for i in range(calls):
        b = balancers[i % len(balancers)]
        chosen = b.choose(routes, versioned=False)
        b.succeeded(b.begin(chosen))
        seen[chosen.version] += 1
    return seen


@pytest.mark.parametrize("weights", [(90, 10), (75, 25), (33, 67), (5, 95), (50, 30, 20)])
@pytest.mark.parametrize("processes", [1, 2, 3])
def test_the_version_split_is_exact_over_10000_calls_across_processes(weights, processes):
    routes = [route(s, version=v, weight=w) for v, w in enumerate(weights, start=1) for s in (v * 2, v * 2 + 1)]
    seen = split([Balancer() for _ in range(processes)], routes, 10_000)
    total = sum(weights)
    for version, weight in enumerate(weights, start=1):
        share = 100 * seen[version] / 10_000
        assert abs(share - 100 * weight / total) <= 0.1, (seen, weights)  # ±2 pp asked; exact in fact


def test_a_version_without_an_available_replica_gives_its_share_to_the_others():
    b = Balancer()
    routes = [route(1, 1, 60), route(2, 2, 30), route(3, 3, 10)]
    b.failed(b.begin(routes[0]), "refused", transport=True)  # version 1's only replica: circuit open
    seen = split([b], routes, 4_000)
    assert seen[1] == 0
    assert seen[2] == 3_000 and seen[3] == 1_000  # 30:10 of the rest


def test_weights_all_zero_split_equally_and_versioned_calls_ignore_weights():
    routes = [route(1, 1, 0), route(2, 2, 0)]
    assert split([Balancer()], routes, 1_000) == Counter({1: 500, 2: 500})
    b = Balancer()
    weighted = [route(1, 1, 100), route(2, 2, 0)]
    assert {b.choose([weighted[1]], versioned=True).version for _ in range(10)} == {2}
    assert {b.choose(weighted, versioned=False).version for _ in range(10)} == {1}


def picks(b: Balancer, routes, n: int) -> Counter:
    return Counter(b.choose(routes, versioned=False).server_id for _ in range(n))


def test_replicas_share_the_calls_by_speed_and_load():
    b = Balancer()
    a, c = route(1), route(2)
    assert picks(b, [a, c], 10) == Counter({1: 5, 2: 5})  # alike: they alternate
    b.server(a).latency, b.server(c).latency = 0.002, 0.004  # server 2 answers in twice the time
    assert picks(b, [a, c], 300) == Counter({1: 200, 2: 100})  # in proportion to speed
    b.server(c).latency = 0.002
    held = b.begin(a)  # one call in flight on server 1: half its weight
    assert picks(b, [a, c], 300) == Counter({1: 100, 2: 200})
    b.finished(held)
    b.server(c).metrics.pending = 2  # Triton says two requests queue on server 2: a third
    assert picks(b, [a, c], 400) == Counter({1: 300, 2: 100})
    b.server(c).metrics = Metrics(queue_us=2500)  # 2.5 ms mean queue time: two more calls' worth
    assert picks(b, [a, c], 400) == Counter({1: 300, 2: 100})
    b.server(c).metrics = Metrics(gpu_utilisation=0.8)  # a GPU at 80 %: a fifth of its capacity
    assert picks(b, [a, c], 600) == Counter({1: 500, 2: 100})


def test_an_answered_call_updates_the_servers_moving_latency():
    clock = Clock()
    b = Balancer(clock=clock)
    attempt = b.begin(route(1))
    clock.now += 0.010
    b.succeeded(attempt)
    state = b.server(route(1))
    assert state.latency == pytest.approx(0.010) and state.outstanding == 0
    attempt = b.begin(route(1))
    clock.now += 0.020
    b.succeeded(attempt)
    assert state.latency == pytest.approx(0.011)  # 10 % of each new call


def test_a_transport_failure_opens_the_circuit_at_once_and_a_probe_closes_it():
    clock = Clock()
    b = Balancer(clock=clock)
    a, c = route(1), route(2)
    b.failed(b.begin(a), "refused: connection refused", transport=True)
    state = b.server(a)
    assert state.state == OPEN and state.last_error.startswith("refused")
    assert {b.choose([a, c], versioned=False).server_id for _ in range(20)} == {2}  # out of the rotation
    with pytest.raises(ServiceError) as refused:
        b.choose([a], versioned=False)
    assert refused.value.code == "triton_unavailable" and refused.value.retry_after == "1"
    clock.now += 1.0  # the backoff is over: one call goes through as the probe
    probe = b.choose([a], versioned=False)
    assert probe is a and state.state == HALF_OPEN
    with pytest.raises(ServiceError):  # only one probe at a time
        b.choose([a], versioned=False)
    b.failed(b.begin(probe), "refused", transport=True)  # the probe fails: open, twice the backoff
    assert state.state == OPEN and state.backoff == 2.0
    clock.now += 2.0
    b.choose([a], versioned=False)  # a probe that never reports back (its call was cancelled) …
    clock.now += PROBE_TIMEOUT
    b.succeeded(b.begin(b.choose([a], versioned=False)))  # … does not keep the server out for ever
    assert state.state == CLOSED and state.backoff == 0.0


def test_consecutive_5xx_answers_open_the_circuit():
    b = Balancer(failures_to_open=3)
    a = route(1)
    for _ in range(2):
        b.failed(b.begin(a), "HTTP 500", transport=False)
    b.succeeded(b.begin(a))  # a success in between starts the count again
    for _ in range(2):
        b.failed(b.begin(a), "HTTP 500", transport=False)
    assert b.server(a).state == CLOSED
    b.failed(b.begin(a), "HTTP 500", transport=False)
    assert b.server(a).state == OPEN and b.server(a).outstanding == 0


def test_a_failover_stays_on_its_version_or_one_with_the_same_signature():
    b = Balancer()
    v1a, v1b, v2, v3 = route(1, 1), route(2, 1), route(3, 2), route(4, 3, signature={"inputs": [1], "outputs": []})
    routes = [v1a, v1b, v2, v3]
    assert b.choose(routes, versioned=False, exclude=frozenset({1}), like=v1a) is v1b
    assert b.choose(routes, versioned=False, exclude=frozenset({1, 2}), like=v1a) is v2  # same signature
    with pytest.raises(ServiceError):  # versioned: never another version
        b.choose([v1a, v1b, v2], versioned=True, exclude=frozenset({1, 2}), like=v1a)
    with pytest.raises(ServiceError):  # another signature: never
        b.choose([v1a, v3], versioned=False, exclude=frozenset({1}), like=v1a)
    # the version's own error (Triton answered 500): another version with the same signature first
    assert b.choose(routes, versioned=False, exclude=frozenset({1}), like=v1a, other_version=True) is v2
    assert b.choose([v1a, v1b, v3], versioned=False, exclude=frozenset({1}), like=v1a, other_version=True) is v1b
    assert b.choose([v1a, v1b, v2], versioned=True, exclude=frozenset({1}), like=v1a, other_version=True) is v1b


TRITON_METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="a",version="1"} 100
nv_inference_request_success{model="b",version="1"} 50
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="a",version="1"} 30000
nv_inference_queue_duration_us{model="b",version="1"} 15000
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="a",version="1"} 3
nv_inference_pending_request_count{model="b",version="1"} 1
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-2"} 0.7
"""


def test_triton_metrics_give_pending_mean_queue_time_and_gpu_utilisation():
    figures = parse_metrics(TRITON_METRICS)
    assert figures == {"success": 150, "queue_us": 45000, "pending": 4, "gpu": pytest.approx(0.6)}
    m = Metrics()
    apply_metrics(m, figures, 1.0)
    assert m.pending == 4 and m.gpu_utilisation == pytest.approx(0.6) and m.queue_us == 0  # no interval yet
    apply_metrics(m, {"success": 250, "queue_us": 245000, "pending": 0}, 2.0)
    assert m.queue_us == 2000  # 200 ms of queueing over 100 requests in the interval
    assert m.gpu_utilisation is None  # a CPU server says nothing of a GPU


@pytest.mark.django_db
def test_each_process_publishes_its_breakers_and_the_servers_api_says_what_the_gateway_saw(staff_client):
    import asyncio

    from apps.core.throttling import redis_client
    from apps.deployments.selectors import GATEWAY_VIEW_KEY, gateway_says
    from apps.gateway.dataplane.runtime import async_redis
    from tests.factories import InferenceServerFactory

    server = InferenceServerFactory()
    redis_client().delete(GATEWAY_VIEW_KEY.format(server_id=server.pk))
    assert gateway_says(server.pk) == ""  # no process has called it
    b = Balancer()
    r = route(server.pk)
    b.failed(b.begin(r), "refused: connecting to 127.0.0.1:1: [Errno 111] Connection refused", transport=True)

    async def publish():
        client = async_redis()
        try:
            await b.publish(client)
        finally:
            await client.aclose()

    asyncio.run(publish())
    error = "refused: connecting to 127.0.0.1:1: [Errno 111] Connection refused"
    said = f"circuit open in 1 of 1 data-plane processes: {error}"
    assert gateway_says(server.pk) == said
    answer = staff_client.get(f"/api/v1/deployments/servers/{server.pk}/")
    assert answer.status_code == 200 and answer.json()["gateway_says"] == said
