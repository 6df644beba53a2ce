"""Fleet (issue 16): failover, rollouts, deploy time and load-aware routing, measured on two real local
tritonservers through the real data plane, with 16 concurrent KServe HTTP callers.

What it measures, in this order (the kill last, so it needs no restart; --split-only: 6 and 6b only):
  6. a canary rollout held at 20 %: v1/v2 counts over 10,000 unversioned calls; 6b. the same through three
     `manage.py run_dataplane --reuse-port` processes on one port (v1 and v2 on two servers, so each process's
     calls to each server, which it publishes to Redis, are its calls to each version);
  4. deploy request -> ACTIVE for the demo model: request_replica_set (the scheduler places one replica) and
     the reconcile run in this process, as the Celery worker runs it (load, smoke inference); p50 over N runs;
  2. a blue-green and a canary (5 -> 25 -> 100 %) switch v1 -> v2 of the demo model under 16 callers: failed
     calls, and the time from the rollout's start to the first traffic moved and to promotion;
  3. a canary whose v2 fails every call with a batch of more than one (the callers send batches of two):
     time from the canary step's start to the controller's rollback, and the audited rollback event;
  5. one replica slowed (its tritonserver SIGSTOPped 40 ms out of every 60 ms): each replica's share of the
     calls against its mean time to answer;
  1. kill -9 of one of two replicas under 16 callers: failed calls, the time from the kill to its circuit
     opening (after which only half-open probes try it: all traffic is the survivor's) and the slowest call
     ending after the kill; twice, on two pairs of servers (three tritonservers, so no restart):
     a. `kill -9 <tritonserver pid>` (as tests/gateway/test_fleet_integration.py): the python backend stubs of
        its models live on, and those forked after the data plane had connected still hold the data plane's
        keep-alive connections (Triton's accepted sockets are inherited): what processes and connections of the
        dead server are left is reported;
     b. `kill -9` of its whole process group (tritonserver and stubs: every process of the server dies).

The data plane is apps.gateway.dataplane.server.ServerThread in this process (what `manage.py run_dataplane`
runs, one worker), so the balancer's per-server state can be read; the 16 callers are threads of this process
too (http.client, one keep-alive connection each). The rollout controller is ticked here every
SOVEREIGN_ROLLOUT_ADVANCE_SECONDS (2 s, beat's period); no Celery worker runs, so the drained replicas of a
finished rollout leave routing but are not unloaded from Triton (their delayed unload task is never run).

Sets up its own PostgreSQL database, Redis db 13, temp data dir and tritonservers (bench/harness.py); removes
them on exit. BENCH_DB_NAME, BENCH_REDIS_URL, BENCH_PORT_BASE choose another database, Redis db, port range.
Run from the repository root: .venv/bin/python bench/fleet.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402 - bench/ is not a package
    CLEANUP,
    db_name,
    flushed_redis,
    fresh_db,
    gateway_env,
    log,
    machine,
    port,
    redis_url,
    run_main,
    setup_django,
    table,
)

DB_NAME = db_name("sovereign_fleet_bench")
REDIS_URL = redis_url("redis://127.0.0.1:6379/13")
CALLERS = 16
ROW = [0.5, 1.0, -0.5, 2.0]


def body(batch: int = 1) -> bytes:
    rows = [ROW] * batch
    inp = {"name": "INPUT", "datatype": "FP32", "shape": [batch, 4], "data": [x for r in rows for x in r]}
    return json.dumps({"inputs": [inp]}).encode()


# --- models ---------------------------------------------------------------------------------------


def demo_v2() -> bytes:
    """The demo model's v2: same signature (INPUT [batch, 4] -> PROBABILITIES [batch, 3]), other weights."""
    from inference_backend.demo_model import build_demo_v2_onnx

    return build_demo_v2_onnx()


def demo_failing_v2() -> bytes:
    """A v2 with the demo's signature that reshapes its input to one row: it passes the deploy's smoke
    inference (one row) and fails every call with a larger batch (as tests/integration/test_rollouts_live.py)."""
    from onnx import TensorProto, helper, numpy_helper

    from inference_backend.demo_model import IR_VERSION, OPSET

    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Reshape", ["INPUT", "SHAPE"], ["one"]),
            helper.make_node("MatMul", ["one", "W"], ["raw"]),
            helper.make_node("Softmax", ["raw"], ["PROBABILITIES"], axis=-1),
        ],
        name="batch_one_only",
        inputs=[helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("PROBABILITIES", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "SHAPE"),
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sovereign")
    model.ir_version = IR_VERSION
    return model.SerializeToString()


class Fleet:
    """The portal's side: an admin, two registered servers, an analyst whose token calls every model."""

    def __init__(self, tritons, plane):
        from django.contrib.auth import get_user_model

        from apps.accounts.services import create_user, issue_token
        from apps.deployments import services

        self.plane, self.tritons = plane, tritons
        self.admin = get_user_model().objects.create_superuser("bench", "bench@localhost", secrets.token_urlsafe(16))
        # labels place a set on a chosen pair: "ab" on triton-a + triton-b, "ac" on triton-a + triton-c
        labels = [{"ab": "y", "ac": "y"}, {"ab": "y"}, {"ac": "y"}]
        self.servers = [
            services.register_server(name=f"triton-{c}", http_url=t.http_url, metrics_url=t.metrics_url,
                                     hardware="cpu", labels=lab, actor=self.admin)
            for c, t, lab in zip("abc", tritons, labels, strict=True)
        ]  # fmt: skip
        self.analyst = create_user(
            username="bench-analyst", email="", password=secrets.token_urlsafe(16), role="analyst", actor=self.admin
        )
        self.token = issue_token(user=self.analyst, name="bench", days=1, actor=None)[1]

    def version(self, name: str, data: bytes):
        from apps.accounts.services import grant_model_access
        from apps.registry.services import register_model_version

        mv = register_model_version(model_name=name, data=data, actor=self.admin)
        if mv.version == 1:
            grant_model_access(model_id=mv.model_id, permission="invoke_model", user_id=self.analyst.pk,
                               actor=self.admin)  # fmt: skip
        return mv

    def replica_set(self, mv, pair: str = "ab"):
        """A set of two placed by the scheduler on `pair`, reconciled here until ACTIVE."""
        from apps.deployments import services
        from apps.deployments.models import Observed

        rs = services.request_replica_set(model_version_id=mv.pk, replicas=2, labels={pair: "y"}, actor=self.admin)
        deps = converge(rs)
        if {d.observed_state for d in deps} != {Observed.ACTIVE}:
            raise RuntimeError(f"{mv} not active: {[d.last_error for d in deps]}")
        return rs


def converge(rs) -> list:
    from apps.deployments import services

    for dep in rs.deployments.all():
        services.reconcile_deployment(dep.pk)
    return list(rs.deployments.select_related("server"))


# --- callers --------------------------------------------------------------------------------------


class Callers:
    """`n` threads POSTing `payload` to `path` through the data plane, each on its own keep-alive connection,
    until stopped (or `limit` calls): every answer as (monotonic end, status, body, seconds it took)."""

    def __init__(self, url: str, path: str, token: str, payload: bytes, n: int = CALLERS, limit: int | None = None):
        host_port = url.removeprefix("http://")
        self.host, self.port = host_port.split(":")[0], int(host_port.split(":")[1])
        self.path, self.payload, self.limit = path, payload, limit
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "X-Forwarded-Proto": "https"}  # fmt: skip
        self.results: list[tuple[float, int, bytes, float]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=90)
        while not self.stopping.is_set():
            with self._lock:
                if self.limit is not None:
                    if self.limit <= 0:
                        return
                    self.limit -= 1
            t0 = time.monotonic()
            try:
                conn.request("POST", self.path, self.payload, self.headers)
                answer = conn.getresponse()
                status, data = answer.status, answer.read()
            except (OSError, http.client.HTTPException) as err:
                status, data = 0, repr(err).encode()
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=90)
            with self._lock:
                t1 = time.monotonic()
                self.results.append((t1, status, data, t1 - t0))
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
        return [(s, b[:200]) for _, s, b, _ in self.results if s != 200]

    def versions(self) -> Counter:
        return Counter(json.loads(b)["model_version"] for _, s, b, _ in self.results if s == 200)


def error_kinds(failures: list[tuple[int, bytes]]) -> Counter:
    """'<status> <code>' of each failed call (status 0: no HTTP answer)."""

    def code(data: bytes) -> str:
        try:
            return json.loads(data).get("code", "")
        except ValueError:
            return data[:60].decode(errors="replace")

    return Counter(f"{status} {code(data)}" for status, data in failures)


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def tick_until(rollout_id: int, states: set[str], timeout: float, period: float):
    """Beat's part: advance_rollouts every `period` s until the rollout is in one of `states`; returns
    (the rollout, monotonic time of the tick that got it there)."""
    from apps.deployments.models import Rollout
    from apps.deployments.rollouts import advance_rollouts

    deadline = time.monotonic() + timeout
    while True:
        advance_rollouts()
        r = Rollout.objects.get(pk=rollout_id)
        if r.state in states:
            return r, time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"rollout {rollout_id} not in {states} after {timeout:g} s: {r.state} {r.reason}")
        time.sleep(period)


def path(model: str) -> str:
    return f"/v2/models/{model}/infer"


# --- the scenarios --------------------------------------------------------------------------------


def deploy_time(fleet: Fleet, runs: int) -> dict:
    from apps.deployments import services
    from apps.deployments.models import Observed
    from inference_backend.demo_model import build_demo_onnx

    mv = fleet.version("fleet-deploy", build_demo_onnx())
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        rs = services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=fleet.admin)
        deps = converge(rs)
        times.append(time.perf_counter() - t0)
        if {d.observed_state for d in deps} != {Observed.ACTIVE}:
            raise RuntimeError(f"deploy failed: {[d.last_error for d in deps]}")
        services.retire_replica_set(replica_set_id=rs.pk, actor=fleet.admin)
        converge(rs)
    return {"runs": times, "p50": statistics.median(times), "min": min(times), "max": max(times)}


def start_rollout(fleet: Fleet, mv2, **kw):
    from apps.deployments.rollouts import start_rollout as start

    return start(model_id=mv2.model_id, to_version_id=mv2.pk, actor=fleet.admin, **kw)


def canary_split(fleet: Fleet, calls: int, period: float) -> dict:
    from apps.deployments.models import RolloutState
    from apps.deployments.rollouts import rollback_now
    from inference_backend.demo_model import build_demo_onnx

    name = "fleet-split"
    fleet.replica_set(fleet.version(name, build_demo_onnx()))
    v2 = fleet.version(name, demo_v2())
    fleet.replica_set(v2)
    r = start_rollout(fleet, v2, strategy="canary", steps=[20, 100], hold_seconds=3600, min_calls=0)
    tick_until(r.pk, {RolloutState.RUNNING}, 60, period)
    fleet.plane.sync_policy()
    t0 = time.monotonic()
    with Callers(fleet.plane.url, path(name), fleet.token, body(), limit=calls) as callers:
        wait_for(lambda: callers.count() >= calls, 600, f"{calls} calls", interval=0.2)
    took = time.monotonic() - t0
    rollback_now(rollout_id=r.pk, actor=fleet.admin)
    v = callers.versions()
    return {"calls": callers.count(), "failed": len(callers.failures()), "v1": v["1"], "v2": v["2"],
            "v2_share": 100 * v["2"] / max(sum(v.values()), 1), "rps": callers.count() / took}  # fmt: skip


class Processes:
    """`n` `manage.py run_dataplane --reuse-port` processes on one port (SO_REUSEPORT: the kernel spreads the
    callers' connections among them), on this bench's database and Redis (the environment of this process)."""

    def __init__(self, n: int, data: Path):
        import subprocess

        self.port = port()
        env = {**os.environ, "SOVEREIGN_RATELIMIT_GATEWAY": "1000000/s", "SOVEREIGN_GATEWAY_METRICS_INTERVAL": "0.5"}
        command = [sys.executable, "manage.py", "run_dataplane", "--port", str(self.port), "--reuse-port"]
        root = Path(__file__).resolve().parents[1]
        self.logs = [data / f"dataplane-{self.port}-{i}.log" for i in range(n)]
        self.procs = []
        for log_path in self.logs:
            with open(log_path, "wb") as out:
                self.procs.append(subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT))
        CLEANUP.append(self.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            for proc, log_path in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"a data-plane process exited: {log_path.read_text()[-2000:]}")
            return all(b"data plane listening" in p.read_bytes() for p in self.logs)

        wait_for(ready, 400, "the data-plane processes to listen", interval=0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(15)


def published_calls(server_id: int, pids: set[int]) -> dict[int, int]:
    """Calls each of the data-plane processes `pids` says it sent to the server (what
    apps.deployments.selectors.gateway_view reads; a process is named host:pid:balancer)."""
    import redis

    from apps.deployments.selectors import GATEWAY_VIEW_KEY

    views = redis.Redis.from_url(REDIS_URL).hgetall(GATEWAY_VIEW_KEY.format(server_id=server_id))
    found = {int(proc.decode().split(":")[1]): json.loads(view)["calls"] for proc, view in views.items()}
    return {pid: n for pid, n in found.items() if pid in pids}


def split_processes(fleet: Fleet, calls: int, period: float, n: int, data: Path) -> dict:
    """A canary held at 20 % with v1 on triton-b and v2 on triton-c, through `n` data-plane processes on one port:
    the versions the answers name, and each process's calls to each server (so to each version)."""
    from apps.deployments import services
    from apps.deployments.models import Observed, RolloutState
    from apps.deployments.rollouts import rollback_now
    from inference_backend.demo_model import build_demo_onnx

    name = "fleet-split-procs"
    deps = []
    for mv, server in ((fleet.version(name, build_demo_onnx()), fleet.servers[1]),
                       (fleet.version(name, demo_v2()), fleet.servers[2])):  # fmt: skip
        dep = services.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=fleet.admin)
        services.reconcile_deployment(dep.pk)
        dep.refresh_from_db()
        if dep.observed_state != Observed.ACTIVE:
            raise RuntimeError(f"{mv} not active: {dep.last_error}")
        deps.append(dep)
    r = start_rollout(fleet, mv, strategy="canary", steps=[20, 100], hold_seconds=3600, min_calls=0)
    tick_until(r.pk, {RolloutState.RUNNING}, 60, period)
    plane = Processes(n, data)
    plane.wait_ready()
    t0 = time.monotonic()
    with Callers(plane.url, path(name), fleet.token, body(), limit=calls) as callers:
        wait_for(lambda: callers.count() >= calls, 900, f"{calls} calls", interval=0.2)
    took = time.monotonic() - t0

    def published():
        got = [published_calls(d.server_id, {p.pid for p in plane.procs}) for d in deps]
        return got if sum(sum(g.values()) for g in got) >= calls else None

    per_v1, per_v2 = wait_for(published, 30, "every process to publish its calls", interval=0.2)
    plane.stop()
    rollback_now(rollout_id=r.pk, actor=fleet.admin)
    v = callers.versions()
    procs = sorted(per_v1.keys() | per_v2.keys())
    per_process = [[per_v1.get(p, 0), per_v2.get(p, 0)] for p in procs]
    worst = max(abs(b - 0.2 * (a + b)) for a, b in per_process)
    return {"processes": n, "calls": callers.count(), "failed": len(callers.failures()), "v1": v["1"], "v2": v["2"],
            "v2_share": 100 * v["2"] / max(sum(v.values()), 1), "rps": callers.count() / took,
            "per_process_v1_v2": per_process, "worst_process_deviation_calls": worst}  # fmt: skip


def switch(fleet: Fleet, strategy: str, steps: list[int], period: float, tail: float) -> dict:
    """v1 -> v2 of the demo model with `strategy` while 16 callers call it; the rollout's own timestamps."""
    from apps.audit.models import AuditEvent
    from apps.deployments.models import RolloutState
    from inference_backend.demo_model import build_demo_onnx

    name = f"fleet-{strategy.replace('_', '-')}"
    fleet.replica_set(fleet.version(name, build_demo_onnx()))
    v2 = fleet.version(name, demo_v2())
    fleet.replica_set(v2)
    fleet.plane.sync_policy()
    with Callers(fleet.plane.url, path(name), fleet.token, body()) as callers:
        wait_for(lambda: callers.count() >= 200, 60, "the first calls to v1")
        t0 = time.monotonic()
        r = start_rollout(fleet, v2, strategy=strategy, steps=steps, hold_seconds=2, min_calls=5,
                          slo_max_error_rate=0.0, slo_max_p95_ms=5000)  # fmt: skip
        _, t_moved = tick_until(r.pk, {RolloutState.RUNNING}, 60, period)
        r, t_done = tick_until(r.pk, {RolloutState.PROMOTED, RolloutState.ROLLED_BACK}, 120, period)
        # the first answer of v2, seen by a caller
        first_v2 = next(
            (t for t, s, b, _ in callers.results if s == 200 and json.loads(b)["model_version"] == "2"), None
        )
        seen = callers.count()
        wait_for(lambda: callers.count() >= seen + 500, 60, "calls after the promotion")
        time.sleep(tail)
        last_v1 = max((t for t, s, b, _ in callers.results if s == 200 and json.loads(b)["model_version"] == "1"),
                      default=None)  # fmt: skip
    steps_audited = AuditEvent.objects.filter(target_type="deployments.rollout", target_id=str(r.pk),
                                              event_type="deployment.rollout.step").count()  # fmt: skip
    return {"state": r.state, "reason": r.reason, "calls": callers.count(), "failed": len(callers.failures()),
            "errors": error_kinds(callers.failures()), "first_traffic_s": t_moved - t0,
            "first_v2_answer_s": (first_v2 - t0) if first_v2 else None, "promoted_s": t_done - t0,
            "last_v1_answer_after_promotion_s": (last_v1 - t_done) if last_v1 else None,
            "versions": dict(callers.versions()), "steps_audited": steps_audited}  # fmt: skip


def failing_canary(fleet: Fleet, period: float) -> dict:
    from apps.audit.models import AuditEvent
    from apps.deployments.models import RolloutState
    from inference_backend.demo_model import build_demo_onnx

    name = "fleet-regress"
    fleet.replica_set(fleet.version(name, build_demo_onnx()))
    v2 = fleet.version(name, demo_failing_v2())
    fleet.replica_set(v2)
    fleet.plane.sync_policy()
    with Callers(fleet.plane.url, path(name), fleet.token, body(batch=2)) as callers:
        wait_for(lambda: callers.count() >= 200, 60, "the first calls to v1")
        r = start_rollout(fleet, v2, strategy="canary", steps=[10, 50, 100], hold_seconds=60, min_calls=3,
                          slo_max_error_rate=0.05)  # fmt: skip
        running, t_running = tick_until(r.pk, {RolloutState.RUNNING}, 60, period)
        r, t_done = tick_until(r.pk, {RolloutState.ROLLED_BACK, RolloutState.PROMOTED}, 60, period)
        from_db = (r.finished_at - running.step_started_at).total_seconds() if r.finished_at else None
    event = AuditEvent.objects.filter(event_type="deployment.rollout.rollback", target_id=str(r.pk)).first()
    return {"state": r.state, "reason": r.reason, "rollback_s": t_done - t_running, "rollback_s_db": from_db,
            "calls": callers.count(), "failed": len(callers.failures()),
            "errors": error_kinds(callers.failures()),
            "audited": bool(event), "audit_error_code": event.error_code if event else None,
            "audit_figures": (event.details or {}).get("figures") if event else None}  # fmt: skip


@contextlib.contextmanager
def slowed(triton, stopped: float = 0.04, running: float = 0.02):
    """The tritonserver's process group stopped `stopped` s out of every `stopped + running` s."""
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


def slowed_split(fleet: Fleet, calls: int) -> dict:
    from inference_backend.demo_model import build_demo_onnx

    name = "fleet-slow"
    fleet.replica_set(fleet.version(name, build_demo_onnx()))
    fleet.plane.sync_policy()
    balancer = fleet.plane.plane.pipeline.balancer
    ids = [s.pk for s in fleet.servers[:2]]  # the set is on triton-a and triton-b

    def snap():
        return {i: (balancer.servers[i].answered, balancer.servers[i].busy) if i in balancer.servers else (0, 0.0)
                for i in ids}  # fmt: skip

    before = snap()
    with slowed(fleet.tritons[1]), Callers(fleet.plane.url, path(name), fleet.token, body(), limit=calls) as callers:
        wait_for(lambda: callers.count() >= calls, 300, f"{calls} calls", interval=0.2)
    after = snap()
    answered = {i: after[i][0] - before[i][0] for i in ids}
    latency = {i: (after[i][1] - before[i][1]) / max(answered[i], 1) for i in ids}
    fast, slow = ids
    share = answered[slow] / max(sum(answered.values()), 1)
    speed = {i: 1 / latency[i] if latency[i] else 0.0 for i in ids}
    expected = speed[slow] / (speed[fast] + speed[slow]) if speed[slow] else None
    return {"calls": callers.count(), "failed": len(callers.failures()), "answered_fast": answered[fast],
            "answered_slowed": answered[slow], "latency_ms_fast": latency[fast] * 1e3,
            "latency_ms_slowed": latency[slow] * 1e3, "slowed_share": share, "share_by_speed": expected}  # fmt: skip


def group_left(pgid: int) -> list[dict]:
    """The processes of a process group still alive, with how many sockets each holds open."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            comm = (d / "comm").read_text().strip()
            sockets = sum(1 for fd in (d / "fd").iterdir() if os.readlink(fd).startswith("socket:"))
        except OSError:
            continue
        out.append({"pid": int(d.name), "comm": comm, "sockets": sockets})
    return out


def established(port_: int) -> int:
    """TCP connections still ESTABLISHED on local port `port_` (the server's end, in whichever process holds it)."""
    count = 0
    for table_ in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                count += int(local.rsplit(":", 1)[1], 16) == port_ and state == "01"
    return count


def kill_one(fleet: Fleet, after_calls: int, pair: str, whole_group: bool) -> dict:
    """kill -9 the second server of `pair` under 16 callers: its tritonserver process only (its python backend
    stubs live on), or its whole process group (tritonserver and stubs: every process of the server dies)."""
    from inference_backend.demo_model import build_demo_onnx

    name = f"fleet-failover-{pair}"
    fleet.replica_set(fleet.version(name, build_demo_onnx()), pair=pair)
    fleet.plane.sync_policy()
    balancer = fleet.plane.plane.pipeline.balancer
    index = "abc".index(pair[1])
    survivor, victim = fleet.servers[0].pk, fleet.servers[index].pk
    triton = fleet.tritons[index]
    calls0 = {i: balancer.servers[i].calls if i in balancer.servers else 0 for i in (survivor, victim)}
    with Callers(fleet.plane.url, path(name), fleet.token, body()) as callers:
        wait_for(lambda: all(i in balancer.servers and balancer.servers[i].calls - calls0[i] >= 100 for i in calls0),
                 60, "both serving")  # fmt: skip
        pgid = os.getpgid(triton.pid)
        if whole_group:
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(triton.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        opened = wait_for(lambda: balancer.servers[victim].opened_at, 10, "the victim's circuit to open")
        at_kill = sum(1 for t, *_ in callers.results if t <= killed_at)
        wait_for(lambda: callers.count() >= at_kill + after_calls, 120, f"{after_calls} calls after the kill")
        left = group_left(pgid)
        held = established(triton.http_port)
        victim_calls_at_open = balancer.servers[victim].calls
        wait_for(lambda: callers.count() >= at_kill + after_calls + 500, 120, "500 more calls")
        victim_after = balancer.servers[victim].calls - victim_calls_at_open
    # (leaving the block waits for every call still in flight: one caught on the victim may hang until the
    # data plane's upstream timeout, SOVEREIGN_TRITON_TIMEOUT)
    after = [(t, s, dt) for t, s, _, dt in callers.results if t > killed_at]
    slow = max(after, key=lambda x: x[2])
    return {"calls": callers.count(), "after_kill": len(after), "failed": len(callers.failures()),
            "errors": error_kinds(callers.failures()),
            "circuit_open_s": opened - killed_at, "victim_attempts_after_open": victim_after,
            "victim_state": balancer.servers[victim].state,
            "victim_last_error": balancer.servers[victim].last_error[:120],
            "slowest_call_after_kill_s": slow[2], "slowest_call_ended_after_kill_s": slow[0] - killed_at,
            "processes_left_of_victim": left, "victim_http_connections_still_established": held}  # fmt: skip


# --- the run --------------------------------------------------------------------------------------


def start_tritons(data: Path, env: dict, n: int) -> list:
    from inference_backend.server import LocalTritonServer

    kek = {"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": env["SOVEREIGN_LOCAL_KEK_FILE"]}
    servers = [LocalTritonServer(data / f"triton-{i}", port(), port(), port(), extra_env=kek) for i in range(n)]
    for server in servers:
        CLEANUP.append(server.stop)
    errors = []

    def start(server):
        try:
            server.start(timeout=240)
        except Exception as err:  # noqa: BLE001 - raised below
            errors.append(err)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return servers


def run(args) -> dict:
    q = args.quick
    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": q, "machine": machine()}
    res["machine"]["loadavg_at_start"] = os.getloadavg()
    t_start = time.monotonic()
    data = Path(tempfile.mkdtemp(prefix="sovereign-fleet-bench-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    env = gateway_env(data, DB_NAME, REDIS_URL)
    os.environ.update(env)
    log(f"database {DB_NAME}, redis {REDIS_URL}, data dir {data}")
    fresh_db(DB_NAME)
    flushed_redis(REDIS_URL)
    setup_django()
    from django.conf import settings

    from apps.gateway.dataplane.server import ServerThread

    period = settings.ROLLOUT_ADVANCE_SECONDS
    log("starting three tritonservers")
    tritons = start_tritons(data, env, 3)
    plane = ServerThread().start(timeout=120)
    CLEANUP.append(plane.stop)
    fleet = Fleet(tritons, plane)
    res["config"] = {"callers": CALLERS, "controller_tick_s": period, "dataplane": "ServerThread in this process",
                     "split_processes": f"{args.processes} x run_dataplane --reuse-port"}  # fmt: skip

    split_calls = 2000 if q else 10_000
    log(f"6. canary held at 20 %: {split_calls} calls")
    res["split"] = canary_split(fleet, split_calls, period)
    log(f"6b. canary held at 20 % through {args.processes} data-plane processes on one port: {split_calls} calls")
    res["split_processes"] = split_processes(fleet, split_calls, period, args.processes, data)
    if args.split_only:
        res["machine"]["loadavg_at_end"] = os.getloadavg()
        res["seconds"] = time.monotonic() - t_start
        return res
    log(f"4. deploy request -> ACTIVE, {args.deploy_runs} runs")
    res["deploy"] = deploy_time(fleet, args.deploy_runs)
    log("2. blue-green and canary switches under 16 callers")
    res["blue_green"] = switch(fleet, "blue_green", [100], period, tail=1.0)
    res["canary"] = switch(fleet, "canary", [5, 25, 100], period, tail=1.0)
    log("3. a failing canary")
    res["failing_canary"] = failing_canary(fleet, period)
    log("5. one replica slowed")
    res["slowed"] = slowed_split(fleet, 1000 if q else 3000)
    log("1. kill -9 of one of two replicas: the tritonserver process only")
    res["kill"] = kill_one(fleet, 500 if q else 1000, "ab", whole_group=False)
    log("1b. kill -9 of one of two replicas: the tritonserver's whole process group")
    res["kill_group"] = kill_one(fleet, 500 if q else 1000, "ac", whole_group=True)
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    res["seconds"] = time.monotonic() - t_start
    return res


def _f(x, fmt=".2f") -> str:
    return "-" if x is None else format(x, fmt)


def kill_rows(label: str, k: dict, ok: dict) -> list[list[str]]:
    return [
        [f"{label}, 16 callers: failed calls", f"{k['failed']} of {k['calls']}", "0", ok[k["failed"] == 0]],
        ["   kill -> victim's circuit open (no new call goes to it), s", f"{k['circuit_open_s']:.3f}", "< 3",
         ok[k["circuit_open_s"] < 3]],
        ["   slowest call ending after the kill, s", f"{k['slowest_call_after_kill_s']:.3f}", "", ""],
        ["   victim attempts after its circuit opened (probes)", str(k["victim_attempts_after_open"]), "", ""],
    ]  # fmt: skip


def split_rows(sp: dict, spp: dict, ok: dict) -> list[list[str]]:
    return [
        [f"6. canary at 20 %, {sp['calls']} calls: v1 / v2", f"{sp['v1']} / {sp['v2']} ({sp['v2_share']:.2f} %)",
         "20 +- 2", ok[abs(sp["v2_share"] - 20) <= 2]],
        [f"6b. same through {spp['processes']} data-plane processes (--reuse-port): v1 / v2",
         f"{spp['v1']} / {spp['v2']} ({spp['v2_share']:.2f} %)", "20 +- 2",
         ok[abs(spp["v2_share"] - 20) <= 2 and spp["failed"] == 0]],
        ["   failed calls; calls per second", f"{spp['failed']}; {spp['rps']:.0f}", "0", ok[spp["failed"] == 0]],
        ["   calls per process (v1 + v2); worst process off its 20 % by, calls",
         f"{' / '.join(str(a + b) for a, b in spp['per_process_v1_v2'])}; {spp['worst_process_deviation_calls']:.1f}",
         "", ""],
    ]  # fmt: skip


def report_split(res: dict) -> None:
    table("Figures", ["target", "measured", "target", "met"], split_rows(res["split"], res["split_processes"],
                                                                         {True: "yes", False: "NO"}))  # fmt: skip
    print("\n== details")
    for key in ("split", "split_processes"):
        print(f"{key}: {json.dumps(res[key], default=str)}")


def report(res: dict) -> None:
    m = res["machine"]
    la0 = " ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
    la1 = " ".join(f"{x:.2f}" for x in m["loadavg_at_end"])
    print(f"== Sovereign fleet bench, {res['date']}, {m['nproc']} x {m['cpu']}, Python {m['python']}"
          f"{' (--quick)' if res['quick'] else ''}")  # fmt: skip
    print(f"load average (1/5/15 min) at start {la0}, at end {la1}; run took {res['seconds']:.0f} s")
    print(f"config: {res['config']}")
    if "kill" not in res:  # --split-only
        return report_split(res)
    k, kg, bg, ca, fc, d, sl, sp = (res[x] for x in ("kill", "kill_group", "blue_green", "canary", "failing_canary",
                                                       "deploy", "slowed", "split"))  # fmt: skip
    spp = res["split_processes"]
    ok = {True: "yes", False: "NO"}
    in_proportion = sl["share_by_speed"] is not None and abs(sl["slowed_share"] - sl["share_by_speed"]) <= 0.1
    rows = [
        *kill_rows("1. kill -9 tritonserver pid (stubs live on)", k, ok),
        *kill_rows("1b. kill -9 tritonserver process group", kg, ok),
        ["2. blue-green v1->v2, 16 callers: failed calls", f"{bg['failed']} of {bg['calls']}", "0",
         ok[bg["failed"] == 0 and bg["state"] == "promoted"]],
        ["   start -> traffic moved / first v2 answer / promoted, s",
         f"{_f(bg['first_traffic_s'])} / {_f(bg['first_v2_answer_s'])} / {_f(bg['promoted_s'])}", "", ""],
        ["2. canary 5->25->100 v1->v2, 16 callers: failed calls", f"{ca['failed']} of {ca['calls']}", "0",
         ok[ca["failed"] == 0 and ca["state"] == "promoted"]],
        ["   start -> first step / first v2 answer / promoted, s",
         f"{_f(ca['first_traffic_s'])} / {_f(ca['first_v2_answer_s'])} / {_f(ca['promoted_s'])}", "", ""],
        ["3. failing canary: step start -> rollback, s (controller clock)", _f(fc["rollback_s"], ".1f"), "<= 30",
         ok[fc["state"] == "rolled_back" and fc["rollback_s"] <= 30]],
        ["   same, from the rollout's own step_started_at/finished_at, s", _f(fc["rollback_s_db"], ".1f"), "", ""],
        ["   rollback audited (deployment.rollout.rollback, error code)", f"{ok[fc['audited']]} "
         f"({fc['audit_error_code']})", "yes", ok[fc["audited"]]],
        ["   callers' failed calls meanwhile (failover retries v2's)", f"{fc['failed']} of {fc['calls']}", "", ""],
        [f"4. deploy request -> ACTIVE, demo model, p50 of {len(d['runs'])} (min/max)",
         f"{d['p50']:.2f} ({d['min']:.2f}/{d['max']:.2f})", "<= 5", ok[d["p50"] <= 5]],
        ["5. slowed replica: calls fast / slowed", f"{sl['answered_fast']} / {sl['answered_slowed']}", "", ""],
        ["   mean time to answer fast / slowed, ms", f"{sl['latency_ms_fast']:.2f} / {sl['latency_ms_slowed']:.2f}",
         "", ""],
        ["   slowed share vs share by speed", f"{sl['slowed_share']:.3f} vs {_f(sl['share_by_speed'], '.3f')}",
         "in proportion", ok[in_proportion]],
        *split_rows(sp, spp, ok),
    ]  # fmt: skip
    table("Figures", ["target", "measured", "target", "met"], rows)
    print("\n== details")
    for key in (
        "kill",
        "kill_group",
        "blue_green",
        "canary",
        "failing_canary",
        "slowed",
        "split",
        "split_processes",
        "deploy",
    ):
        print(f"{key}: {json.dumps(res[key], default=str)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter loads (a smoke run)")
    parser.add_argument("--deploy-runs", type=int, default=5)
    parser.add_argument("--processes", type=int, default=3, help="data-plane processes for the split across them")
    parser.add_argument("--split-only", action="store_true", help="measure only the splits (6 and 6b)")
    args = parser.parse_args()
    return run_main(lambda: report(run(args)))


if __name__ == "__main__":
    sys.exit(main())
