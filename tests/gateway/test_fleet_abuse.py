"""What a caller allowed to invoke a model must not be able to do to the fleet (issue 16 review): make a
canary's figures lie, or close a shared server to every other model with its own bad input. The real
Pipeline, with a scripted upstream pool and the SLO recorder's in-memory store."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import override_settings

from apps.deployments import slo
from apps.gateway.dataplane.balancer import CLOSED
from apps.gateway.dataplane.pipeline import Pipeline
from apps.gateway.dataplane.snapshot import Route
from apps.gateway.dataplane.types import INFER, Inbound

SIG = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
}
GOOD = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}).encode()


def _route(model: str, model_id: int, version: int, server_id: int, weight: int = 100) -> Route:
    return Route(
        deployment_id=model_id * 10 + version,
        model_id=model_id,
        model=model,
        version_id=model_id * 10 + version,
        version=version,
        server_id=server_id,
        server=f"s{server_id}",
        http_url=f"http://127.0.0.1:{9000 + server_id}",
        max_batch_size=8,
        signature=SIG,
        deid_mode="off",
        weight=weight,
    )


class _Caller:
    token_id = 1

    def source(self, s):
        return s


class _Policy:
    def __init__(self, routes):
        self.routes = routes

    async def authenticate(self, authorization, ip):
        return _Caller()

    async def route(self, caller, model, version, invoke):
        routes = [r for r in self.routes if r.model == model]
        return [r for r in routes if str(r.version) == version] if version else routes


class _Audit:
    async def record_call(self, *args, **kwargs):
        return None


class _Answer:
    def __init__(self, status: int, body: bytes):
        self.status, self.body, self.headers = status, body, {}


class _Pool:
    def __init__(self, answer):
        self.answer = answer
        self.sent: list[str] = []

    async def request(self, method, url, headers, body, timeout):
        self.sent.append(url)
        return self.answer(url, body)


def _inbound(model: str, body: bytes, version: str | None = None, delay: float = 0.0) -> Inbound:
    async def read_body(limit=None):
        if delay:
            await asyncio.sleep(delay)
        return body, None

    return Inbound(
        kind=INFER, model=model, version=version, authorization="Bearer x", peer="10.0.0.1", read_body=read_body
    )


@pytest.fixture
def figures(monkeypatch):
    monkeypatch.setattr(slo, "_redis", lambda: None)
    slo._memory._rows.clear()
    yield lambda model_id, version: (slo.recorder.flush(), slo.window(model_id, version, 60).as_dict())[1]
    slo._memory._rows.clear()


@override_settings(RATELIMIT_ENABLED=False)
def test_junk_and_versioned_calls_do_not_dilute_a_failing_canary(figures):
    """v2 (the canary, weight 10) answers every call with a 500; failover answers from v1. A caller then
    sends 500 malformed calls pinned to v2 and 500 unversioned ones: none of them reaches Triton, and
    none counts."""
    routes = [_route("m", 42, 1, 1, weight=90), _route("m", 42, 2, 2, weight=10)]
    pool = _Pool(lambda url, body: _Answer(500, b'{"error":"boom"}') if "--v2" in url else _Answer(200, b"{}"))
    pipeline = Pipeline(policy=_Policy(routes), audit=_Audit(), limiter=None, pool=pool)

    async def run():
        real = [(await pipeline.handle(_inbound("m", GOOD))).status for _ in range(200)]
        junk = [(await pipeline.handle(_inbound("m", b'{"inputs": 1}', version="2"))).status for _ in range(500)]
        junk += [(await pipeline.handle(_inbound("m", b'{"inputs": 1}'))).status for _ in range(500)]
        pinned = [(await pipeline.handle(_inbound("m", GOOD, version="2"))).status for _ in range(50)]
        return real, junk, pinned

    real, junk, pinned = asyncio.run(run())

    assert set(real) == {200} and set(junk) == {400} and set(pinned) == {502}
    canary, live = figures(42, 2), figures(42, 1)
    assert canary["calls"] >= 10 and canary["errors"] == canary["calls"], canary  # only the real attempts
    assert live["errors"] == 0 and live["calls"] == 200, live
    assert canary["calls"] + live["calls"] == len([u for u in pool.sent if "/versions/" not in u])


@override_settings(RATELIMIT_ENABLED=False)
def test_a_slow_upload_is_not_the_models_latency(figures):
    routes = [_route("m", 43, 1, 1)]
    pipeline = Pipeline(
        policy=_Policy(routes), audit=_Audit(), limiter=None, pool=_Pool(lambda u, b: _Answer(200, b"{}"))
    )

    async def run():
        return await asyncio.gather(*[pipeline.handle(_inbound("m", GOOD, delay=0.5)) for _ in range(20)])

    assert {out.status for out in asyncio.run(run())} == {200}
    window = figures(43, 1)
    assert window["calls"] == 20 and window["p95_ms"] < 500, window


@override_settings(RATELIMIT_ENABLED=False)
def test_a_callers_bad_input_answered_500_by_triton_does_not_close_the_server_to_other_models(figures):
    """Some backends answer a request's own fault with a 500 and Triton's JSON error: that is about the
    request, not the server that model `b` shares with `a`."""
    routes = [_route("a", 44, 1, 7), _route("b", 45, 1, 7)]

    def answer(url, body):
        if b"[7,7,7]" in body.replace(b" ", b""):
            return _Answer(500, b'{"error":"a--v1: inference failed: invalid dims"}')
        return _Answer(200, b'{"model_name":"b--v1","outputs":[]}')

    pipeline = Pipeline(policy=_Policy(routes), audit=_Audit(), limiter=None, pool=_Pool(answer))
    bad = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [7, 7, 7]}]}).encode()

    async def run():
        statuses = [(await pipeline.handle(_inbound("a", bad))).status for _ in range(5)]
        return statuses, (await pipeline.handle(_inbound("b", GOOD))).status

    statuses, other = asyncio.run(run())

    assert set(statuses) == {502} and other == 200
    assert pipeline.balancer.servers[7].state == CLOSED


@override_settings(RATELIMIT_ENABLED=False)
def test_a_proxy_502_without_tritons_error_body_still_opens_the_circuit(figures):
    routes = [_route("c", 46, 1, 8)]
    pool = _Pool(lambda u, b: _Answer(502, b"<html>502 Bad Gateway</html>"))
    pipeline = Pipeline(policy=_Policy(routes), audit=_Audit(), limiter=None, pool=pool)

    async def run():
        return [(await pipeline.handle(_inbound("c", GOOD))).status for _ in range(5)]

    statuses = asyncio.run(run())

    assert 503 in statuses  # the circuit opened: triton_unavailable without another call to the server
    assert pipeline.balancer.servers[8].state != CLOSED


@override_settings(RATELIMIT_ENABLED=False, TRITON_TIMEOUT=20)
def test_calls_waiting_on_a_server_whose_circuit_opens_go_to_another_replica(figures):
    """A tritonserver killed without its children (python-backend stubs) can leave its accepted
    connections open and silent: the calls on them would wait for the read timeout (measured: 12 of
    1,776 calls failed after 30 s, bench/fleet.py). When the circuit to that server opens (the next
    call's refused connection), they are failed over at once. Real UpstreamPool and sockets, the real
    Pipeline; v1 on the silent server takes the traffic, v2 (same signature) is where failover goes."""
    import socket
    import threading
    import time as _time
    from dataclasses import replace

    from apps.gateway.dataplane.upstream import UpstreamPool
    from inference_backend.netpolicy import ServerPolicy

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted: list[socket.socket] = []

    def accept():
        while True:
            try:
                conn, _ = silent.accept()
            except OSError:
                return
            accepted.append(conn)  # read nothing, answer nothing, close nothing

    threading.Thread(target=accept, daemon=True).start()
    port = silent.getsockname()[1]
    v1 = replace(_route("m", 47, 1, 1, weight=100), http_url=f"http://127.0.0.1:{port}")
    v2 = _route("m", 47, 2, 2, weight=0)
    real = UpstreamPool(ServerPolicy(), max_connections=8)

    class _Split:
        """The silent server through the real UpstreamPool; the other replica answers here."""

        def __init__(self):
            self.abandon = real.abandon

        async def request(self, method, url, headers, body, timeout):
            if f":{port}" in url:
                return await real.request(method, url, headers, body, timeout=timeout)
            return _Answer(200, b"{}")

    pipeline = Pipeline(policy=_Policy([v1, v2]), audit=_Audit(), limiter=None, pool=_Split())

    async def run():
        waiting = [asyncio.create_task(pipeline.handle(_inbound("m", GOOD))) for _ in range(2)]
        deadline = _time.monotonic() + 10
        while len(accepted) < 2:
            assert _time.monotonic() < deadline, "the calls did not reach the silent server"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # their requests written
        started = _time.monotonic()
        balancer = pipeline.balancer  # the next call to it finds its port closed:
        balancer.failed(balancer.begin(v1), "refused: connection refused", transport=True)
        outs = await asyncio.gather(*waiting)
        return [o.status for o in outs], _time.monotonic() - started

    statuses, took = asyncio.run(run())
    silent.close()
    for conn in accepted:
        conn.close()

    assert statuses == [200, 200]
    assert took < 5, f"the calls waited {took:.1f} s on the silent server"
