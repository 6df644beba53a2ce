"""The data plane over a fleet of real tritonservers (issue 16): one model deployed on two servers,
16 concurrent KServe callers through the running data plane (ServerThread: the process
`manage.py run_dataplane` runs, one per host, one worker).

- kill -9 one of the two tritonservers mid-run: no call fails (the calls in flight on it are
  retried on the survivor), its circuit opens within 3 s and the traffic is the survivor's;
- two versions with traffic weights 80/20: the unversioned calls split within ±2 percentage points
  over 10,000 calls; a versioned call goes to its version whatever the weights;
- one server slowed (stopped and continued in a duty cycle, as an overloaded host would be): it gets
  a smaller share of the calls, in proportion to its speed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from apps.audit.models import AuditEvent
from apps.deployments import services as deployments
from apps.deployments.models import Deployment, InferenceServer, Observed
from apps.gateway.dataplane.balancer import CLOSED, OPEN
from apps.gateway.dataplane.server import ServerThread
from inference_backend.demo_model import build_test_onnx
from inference_backend.server import LocalTritonServer
from tests.conftest import grant, start_local_triton
from tests.factories import ModelVersionFactory, token_for
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CALLERS = 16
BODY = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 1, -0.5, 2]}]})


def _triton(tmp_path_factory, data_dir) -> LocalTritonServer:
    return start_local_triton(data_dir, tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, data_dir):
    """Two tritonservers for this module (one of them may be killed by a test)."""
    servers = [_triton(tmp_path_factory, data_dir), _triton(tmp_path_factory, data_dir)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def plane(fleet, transactional_db):
    server = ServerThread().start()
    yield server
    server.stop()


def _server(triton: LocalTritonServer, name: str) -> InferenceServer:
    return InferenceServer.objects.create(name=name, http_url=triton.http_url, metrics_url=triton.metrics_url)


def _deploy(mv, server, actor) -> Deployment:
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=actor)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    return dep


class Callers:
    """`n` threads calling `path` through the data plane in a loop, each on its own keep-alive
    connection, until stopped: every answer's (monotonic time, status, body)."""

    def __init__(self, url: str, path: str, token: str, n: int = CALLERS, limit: int | None = None):
        self.host, self.port = urlsplit(url).hostname, urlsplit(url).port
        self.path, self.token, self.limit = path, token, limit
        self.results: list[tuple[float, int, bytes]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        while not self.stopping.is_set():
            with self._lock:
                if self.limit is not None and self.limit <= 0:
                    return
                if self.limit is not None:
                    self.limit -= 1
            try:
                conn.request("POST", self.path, BODY, headers)
                answer = conn.getresponse()
                status, body = answer.status, answer.read()
            except (OSError, http.client.HTTPException) as err:
                status, body = 0, repr(err).encode()
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            with self._lock:
                self.results.append((time.monotonic(), status, body))
        conn.close()

    def __enter__(self) -> Callers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def count(self) -> int:
        return len(self.results)

    def failures(self) -> list[tuple[int, bytes]]:
        return [(s, b[:300]) for _, s, b in self.results if s != 200]


@contextlib.contextmanager
def restarted_after(triton: LocalTritonServer):
    """The module's other tests get the server back (same ports, empty of models)."""
    try:
        yield
    finally:
        triton.stop()
        triton.start(timeout=180)


def _balancer(plane):
    return plane.plane.pipeline.balancer


@pytest.fixture
def caller_token(plain_user):
    return token_for(plain_user)


@pytest.fixture(autouse=True)
def _no_token_rate_limit(settings):
    """16 keep-alive callers pass the default 1,000 calls/s per token on an idle machine: this file
    measures routing, not the rate limit."""
    settings.RATELIMIT_GATEWAY = "1000000/s"


def test_kill_9_of_one_replica_under_16_callers_fails_no_call(fleet, plane, staff_user, plain_user, caller_token):
    a, b = fleet
    mv = ModelVersionFactory(model_name="fleet-failover", data=build_test_onnx(4, 3, seed=7), actor=staff_user)
    grant(plain_user, mv.model)
    servers = [_server(a, "fleet-a"), _server(b, "fleet-b")]
    for server in servers:
        _deploy(mv, server, staff_user)
    plane.sync_policy()
    balancer = _balancer(plane)
    survivor, victim = servers[0].pk, servers[1].pk

    with restarted_after(b), Callers(plane.url, "/v2/models/fleet-failover/infer", caller_token) as callers:
        wait_for(
            lambda: all(s in balancer.servers and balancer.servers[s].calls >= 100 for s in (survivor, victim)),
            60,
            "both replicas serving",
        )
        os.kill(b.pid, signal.SIGKILL)  # the tritonserver dies, its calls in flight with it
        killed_at = time.monotonic()
        opened = wait_for(lambda: balancer.servers[victim].opened_at, 10, "the victim's circuit to open")
        calls_at_kill = sum(1 for t, _, _ in callers.results if t <= killed_at)
        wait_for(lambda: callers.count() >= calls_at_kill + 1000, 120, "1000 calls after the kill")
        victim_calls_then = balancer.servers[victim].calls
        wait_for(lambda: callers.count() >= calls_at_kill + 1500, 120, "500 more calls")

    switch = opened - killed_at
    after = [t for t, _, _ in callers.results if t > killed_at]
    print(
        f"\nfailover: {callers.count()} calls, {len(after)} after the kill; circuit open {switch * 1000:.0f} ms "
        f"after kill -9; victim attempts after the switch: {balancer.servers[victim].calls - victim_calls_then} "
        f"(probes); last error: {balancer.servers[victim].last_error}"
    )
    assert callers.failures() == []  # 0 failed calls, the in-flight ones included
    assert switch < 3.0
    state = balancer.servers[victim]
    assert state.state in (OPEN, "half_open") and state.last_error
    assert balancer.servers[survivor].state == CLOSED
    # after the switch only half-open probes (one per backoff: 1, 2, 4 … s) try the dead server
    assert state.calls - victim_calls_then <= 3


def test_version_weights_split_10000_calls_within_2_points(fleet, plane, staff_user, plain_user, caller_token):
    a, b = fleet
    v1 = ModelVersionFactory(model_name="fleet-split", data=build_test_onnx(4, 3, seed=1), actor=staff_user)
    v2 = ModelVersionFactory(model_name="fleet-split", data=build_test_onnx(4, 3, seed=2), actor=staff_user)
    grant(plain_user, v1.model)
    _deploy(v1, _server(a, "split-a"), staff_user), _deploy(v2, _server(b, "split-b"), staff_user)
    # each deployment joined its version's replica set (docs/fleet.md); the weights move as an operator would
    from apps.deployments.services import set_traffic

    set_traffic(model_id=v1.model_id, weights={1: 80, 2: 20}, actor=staff_user)
    plane.sync_policy()

    with Callers(plane.url, "/v2/models/fleet-split/infer", caller_token, limit=10_000) as callers:
        wait_for(lambda: callers.count() >= 10_000, 600, lambda: f"10,000 calls ({callers.count()})")
    assert callers.failures() == []
    versions = Counter(json.loads(body)["model_version"] for _, _, body in callers.results)
    share = 100 * versions["2"] / 10_000
    print(f"\nsplit 80/20 over 10,000 calls: v1 {versions['1']}, v2 {versions['2']} ({share:.2f} %)")
    assert abs(share - 20) <= 2

    with Callers(plane.url, "/v2/models/fleet-split/versions/2/infer", caller_token, limit=200) as versioned:
        wait_for(lambda: versioned.count() >= 200, 120, "200 versioned calls")
    assert {json.loads(body)["model_version"] for _, _, body in versioned.results} == {"2"}


@contextlib.contextmanager
def slowed(triton: LocalTritonServer, stopped: float = 0.04, running: float = 0.02):
    """The tritonserver (and its backend stubs) stopped for `stopped` s out of every
    `stopped + running`: a server with a fraction of its speed, as an overloaded host is."""
    done = threading.Event()
    group = os.getpgid(triton.pid)

    def cycle():
        while not done.is_set():
            os.killpg(group, signal.SIGSTOP)
            done.wait(stopped)
            os.killpg(group, signal.SIGCONT)
            done.wait(running)

    thread = threading.Thread(target=cycle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        os.killpg(group, signal.SIGCONT)


def test_a_slowed_replica_gets_a_share_in_proportion_to_its_speed(fleet, plane, staff_user, plain_user, caller_token):
    a, b = fleet
    mv = ModelVersionFactory(model_name="fleet-slow", data=build_test_onnx(4, 3, seed=9), actor=staff_user)
    grant(plain_user, mv.model)
    fast, slow = _server(a, "slow-a"), _server(b, "slow-b")
    for server in (fast, slow):
        _deploy(mv, server, staff_user)
    plane.sync_policy()
    first = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    with slowed(b), Callers(plane.url, "/v2/models/fleet-slow/infer", caller_token, limit=3000) as callers:
        wait_for(lambda: callers.count() >= 3000, 300, lambda: f"3,000 calls ({callers.count()})")
    assert callers.failures() == []

    balancer = _balancer(plane)
    fast_state, slow_state = balancer.servers[fast.pk], balancer.servers[slow.pk]
    calls = {"fast": fast_state.answered, "slowed": slow_state.answered}
    audited = Counter(
        AuditEvent.objects.filter(id__gt=first, event_type="inference.infer").values_list("details__server", flat=True)
    )
    assert audited == {"slow-a": calls["fast"], "slow-b": calls["slowed"]}  # the audit log says the same
    # the time each replica took to answer, as the gateway saw it (Triton and the network only)
    latency = {"fast": fast_state.busy / fast_state.answered, "slowed": slow_state.busy / slow_state.answered}
    share = calls["slowed"] / sum(calls.values())
    expected = (1 / latency["slowed"]) / (1 / latency["fast"] + 1 / latency["slowed"])
    print(
        f"\nslowed replica: {calls} calls; mean time to answer {latency['fast'] * 1000:.2f} / "
        f"{latency['slowed'] * 1000:.2f} ms; slowed share {share:.3f}, in proportion to speed {expected:.3f}"
    )
    assert share < 0.4
    assert abs(share - expected) <= 0.1
