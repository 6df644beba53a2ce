"""A rollout's traffic split holds across several data-plane processes (issue 16: "within ±2 percentage
points over 10,000 calls across all data-plane processes"): three `manage.py run_dataplane --reuse-port`
processes share one port (the kernel spreads the callers' connections among them), v1 on one
tritonserver and v2 on another at 80/20, 16 keep-alive callers.

Each process splits its own calls by a smooth weighted round-robin, exact to within one call per version,
so their sum is exact to within one call per version and process. The test checks that bound per process
(from what each process publishes of its calls to each server, docs/gateway.md: a version per server here),
which a random choice breaks at once (±18 calls, 1σ, per 2,000), and the issue's ±2 points on the total
(1,500 calls; bench/fleet.py measures 10,000)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.db import connection

from apps.deployments import services as deployments
from apps.deployments.models import Deployment, InferenceServer, Observed
from apps.deployments.selectors import GATEWAY_VIEW_KEY
from inference_backend.demo_model import build_test_onnx
from inference_backend.server import LocalTritonServer, free_port
from tests.conftest import _database_url, grant
from tests.factories import ModelVersionFactory, token_for
from tests.gateway.test_fleet_integration import Callers
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
CALLS = 1500  # the split is exact per process to a call at any count; bench/fleet.py --split-only runs 10,000


def _deploy(mv, triton: LocalTritonServer, name: str, actor) -> Deployment:
    server = InferenceServer.objects.create(name=name, http_url=triton.http_url, metrics_url=triton.metrics_url)
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=actor)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    return dep


class Processes:
    """`n` run_dataplane processes on one port (SO_REUSEPORT), on this test's database and Redis."""

    def __init__(self, n: int, data_dir: Path, logs: Path):
        self.port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(connection.settings_dict),
            "REDIS_URL": os.environ["REDIS_URL"],
            "SOVEREIGN_DATA_DIR": str(data_dir),
            "SOVEREIGN_ARTIFACT_DIR": str(data_dir / "artifacts"),
            "SOVEREIGN_LOCAL_KEK_FILE": str(data_dir / "keystore" / "kek.bin"),
            "SOVEREIGN_RATELIMIT_GATEWAY": "1000000/s",  # routing is measured here, not the rate limit
            "SOVEREIGN_GATEWAY_METRICS_INTERVAL": "0.5",  # each process publishes its calls this often
        }
        command = [sys.executable, "manage.py", "run_dataplane", "--port", str(self.port), "--reuse-port"]
        self.logs = [logs / f"dataplane-{i}.log" for i in range(n)]
        self.procs = []
        for log in self.logs:
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            for proc, log in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    pytest.fail(f"a data-plane process exited:\n{log.read_text()[-3000:]}")
            return all(b"data plane listening" in log.read_bytes() for log in self.logs)

        wait_for(ready, 400, "the data-plane processes to listen")  # each loads Django and its lists: ~2 min at load 12

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _published_calls(server_id: int, pids: set[int]) -> dict[int, int]:
    """Calls each of the processes `pids` says it sent to the server (its last publication; a process is
    named host:pid:balancer)."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    views = client.hgetall(GATEWAY_VIEW_KEY.format(server_id=server_id))
    found = {int(process.decode().split(":")[1]): json.loads(view)["calls"] for process, view in views.items()}
    return {pid: calls for pid, calls in found.items() if pid in pids}


def test_an_80_20_split_holds_across_three_data_plane_processes(
    triton, triton_b, data_dir, tmp_path, staff_user, plain_user
):
    v1 = ModelVersionFactory(model_name="split-procs", data=build_test_onnx(4, 3, seed=11), actor=staff_user)
    v2 = ModelVersionFactory(model_name="split-procs", data=build_test_onnx(4, 3, seed=12), actor=staff_user)
    grant(plain_user, v1.model)
    d1, d2 = _deploy(v1, triton, "procs-a", staff_user), _deploy(v2, triton_b, "procs-b", staff_user)
    deployments.set_traffic(model_id=v1.model_id, weights={1: 80, 2: 20}, actor=staff_user)
    token = token_for(plain_user)

    plane = Processes(PROCESSES, data_dir, tmp_path)
    try:
        plane.wait_ready()
        with Callers(plane.url, "/v2/models/split-procs/infer", token, limit=CALLS) as callers:
            wait_for(lambda: callers.count() >= CALLS, 400, lambda: f"{CALLS} calls ({callers.count()})")

        def published():
            pids = {proc.pid for proc in plane.procs}
            a, b = _published_calls(d1.server_id, pids), _published_calls(d2.server_id, pids)
            return (a, b) if sum(a.values()) + sum(b.values()) == CALLS else None

        per_v1, per_v2 = wait_for(published, 30, "every process to publish its calls")
    finally:
        plane.stop()

    assert callers.failures() == []
    versions = Counter(json.loads(body)["model_version"] for _, _, body in callers.results)
    share = 100 * versions["2"] / CALLS
    per_process = {p: (per_v1.get(p, 0), per_v2.get(p, 0)) for p in per_v1.keys() | per_v2.keys()}
    print(f"\n{PROCESSES} processes, {CALLS} calls: v1 {versions['1']}, v2 {versions['2']} ({share:.2f} %); "
          f"per process (v1, v2): {sorted(per_process.values())}")  # fmt: skip
    assert (sum(per_v1.values()), sum(per_v2.values())) == (versions["1"], versions["2"])  # what the answers say
    assert len(per_process) >= 2  # the kernel spread the 16 connections over several processes
    for v1_calls, v2_calls in per_process.values():  # each process splits its own calls exactly
        assert abs(v2_calls - 0.2 * (v1_calls + v2_calls)) <= 1
    assert abs(versions["2"] - 0.2 * CALLS) <= len(per_process)  # so their sum is exact to a call per process
    assert abs(share - 20) <= 2  # the target
