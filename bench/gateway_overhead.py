"""Gateway overhead: Sovereign's KServe v2 gateway (auth, route, checks, audit) vs Triton directly.
Sets up its own PostgreSQL database, Redis db 14, temp data dir, tritonserver and gunicorn; removes them
on exit, Ctrl-C or error. Run from the repository root: .venv/bin/python bench/gateway_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import redis
import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "sovereign_bench"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"
BATCHED, UNBATCHED = "bench-batched", "bench-unbatched"
QUEUE_DELAY_US = 1000  # max_queue_delay_microseconds of the batched deployment
BODY = b'{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,4],"data":[0.5,1.0,-0.5,2.0]}]}'
CLEANUP: list = []  # callables, run in reverse order on exit
MARKS: dict[str, str] = {}  # process group -> a substring of its processes' command lines (CPU accounting)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p99": q[98], "n": len(values)}


def recreate_db(drop_only: bool = False) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {DB_NAME}")


def portal_env(data: Path) -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        "REDIS_URL": REDIS_URL,
        "SOVEREIGN_ENV": "production",
        "SOVEREIGN_DEBUG": "false",
        "SOVEREIGN_SECRET_KEY": secrets.token_urlsafe(50),
        "SOVEREIGN_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SOVEREIGN_BEHIND_TLS_PROXY": "true",  # clients send X-Forwarded-Proto: https, as the proxy would
        "SOVEREIGN_DATA_DIR": str(data),
        "SOVEREIGN_ARTIFACT_DIR": str(data / "artifacts"),
        "SOVEREIGN_LOCAL_KEK_FILE": str(data / "keystore" / "kek.bin"),
        # production refuses the local KEK file unless told (docs/production.md); the HSM's own cost
        # is measured apart (bench/hsm_unwrap.py)
        "SOVEREIGN_INSECURE_OVERRIDE": "local_kek",
    }


def start_triton(data: Path, env: dict):
    from inference_backend.server import LocalTritonServer, free_port

    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    kek = {"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": env["SOVEREIGN_LOCAL_KEK_FILE"]}
    server = LocalTritonServer(data / "triton", *sorted(ports), extra_env=kek)
    CLEANUP.append(server.stop)
    server.start(timeout=180)
    return server


def start_gunicorn(data: Path, env: dict) -> int:
    from inference_backend.server import free_port

    port, gunicorn = free_port(), str(Path(sys.executable).parent / "gunicorn")
    argv = [gunicorn, "portal.wsgi", "-k", "gthread", "--workers", "2", "--threads", "8", "-b", f"127.0.0.1:{port}"]
    with open(data / "gunicorn.log", "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop() -> None:  # SIGTERM to the master (it stops its workers), then SIGKILL to its group's leftovers
        proc.terminate()
        try:
            proc.wait(15)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    CLEANUP.append(stop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            url, headers = f"http://127.0.0.1:{port}/healthz", {"X-Forwarded-Proto": "https"}
            if urllib3.request("GET", url, headers=headers, timeout=2, retries=False).status == 200:
                return port
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not become ready; see {data / 'gunicorn.log'}")


def deploy(triton_url: str) -> str:
    """Register the demo model under two names, deploy both (reconciled here, synchronously); return a token."""
    from django.contrib.auth import get_user_model

    from apps.accounts.services import create_user, grant_model_access, issue_token
    from apps.deployments import services as deployments
    from apps.deployments.models import Deployment, Observed
    from apps.registry.services import register_model_version
    from inference_backend.demo_model import build_demo_onnx

    admin = get_user_model().objects.create_superuser("bench", "bench@localhost", secrets.token_urlsafe(16))
    server = deployments.register_server(name="bench-local", http_url=triton_url, hardware="cpu", actor=admin)
    for name, batching in (
        (BATCHED, {"max_batch_size": 32, "dynamic_batching": True, "max_queue_delay_us": QUEUE_DELAY_US}),
        (UNBATCHED, {"max_batch_size": 32, "dynamic_batching": False}),
    ):
        mv = register_model_version(model_name=name, data=build_demo_onnx(), actor=admin)
        dep = deployments.request_deployment(
            model_version_id=mv.pk, server_id=server.pk, batching=batching, actor=admin
        )
        deployments.reconcile_deployment(dep.pk)  # the task request_deployment enqueued is flushed at exit
        dep = Deployment.objects.get(pk=dep.pk)
        if dep.observed_state != Observed.ACTIVE:
            raise RuntimeError(f"deployment of {name} is {dep.observed_state}: {dep.last_error}")
    # The realistic caller: an analyst with invoke grants (the superuser would skip the grant checks).
    analyst = create_user(
        username="bench-analyst", email="", password=secrets.token_urlsafe(16), role="analyst", actor=admin
    )
    for mv in dep.model.__class__.objects.filter(name__in=(BATCHED, UNBATCHED)):
        grant_model_access(model_id=mv.pk, permission="invoke_model", user_id=analyst.pk, actor=admin)
    return issue_token(user=analyst, name="bench", days=1, actor=None)[1]  # issued on the host


def new_conn(port: int) -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1, retries=False, timeout=30.0)


def call(conn: urllib3.HTTPConnectionPool, side: dict, model: str) -> urllib3.BaseHTTPResponse:
    return conn.request("POST", f"/v2/models/{model}/infer", body=BODY, headers=side["headers"], redirect=False)


def sequential(sides: dict, model: str, rounds: int, per_round: int, warmup: int) -> dict:
    conns = {name: new_conn(side["port"]) for name, side in sides.items()}
    answers = {name: call(conns[name], side, model).data for name, side in sides.items()}
    if len({str(json.loads(a)["outputs"][0]["data"]) for a in answers.values()}) != 1:
        raise RuntimeError(f"the direct and the gateway answers differ: {answers}")
    lat: dict[str, list[float]] = {name: [] for name in sides}
    c0, t_start = {}, 0.0
    for r in range(-1, rounds):  # round -1 is the warm-up; blocks and their order alternate, to cancel drift
        if r == 0:
            c0, t_start = cpu_snapshot(), time.perf_counter()
        for name in ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct"):
            for _ in range(per_round if r >= 0 else warmup):
                t0 = time.perf_counter()
                resp = call(conns[name], sides[name], model)
                if r >= 0:
                    lat[name].append((time.perf_counter() - t0) * 1e3)
                if resp.status != 200:
                    raise RuntimeError(f"{name} answered {resp.status}: {resp.data[:300]!r}")
    res = {name: pct(values) for name, values in lat.items()}
    res["cores_busy"] = cpu_used(c0, cpu_snapshot(), time.perf_counter() - t_start, 1)["cores_busy"]
    res["overhead"] = {k: res["gateway"][k] - res["direct"][k] for k in ("p50", "p90", "p99")}
    return res


def throughput(side: dict, model: str, conc: int, warmup: float, duration: float) -> dict:
    """`conc` threads, one keep-alive connection each; counts completions inside the timed window."""
    m0 = time.perf_counter() + warmup
    m1 = m0 + duration
    stats = [{"ok": 0, "errors": 0, "lat": []} for _ in range(conc)]

    def worker(st: dict) -> None:
        conn = new_conn(side["port"])
        while (t0 := time.perf_counter()) < m1:
            try:
                resp = call(conn, side, model)
                ok, err = resp.status == 200, f"HTTP {resp.status}: {resp.data[:200]!r}"
            except Exception as exc:  # every failure is an error to count
                ok, err = False, repr(exc)
            t1 = time.perf_counter()
            if not ok:
                st["errors"] += 1  # during the warm-up too
                if st["errors"] == 1:
                    log(f"error via {side['name']}: {err}")
            elif m0 <= t1 < m1:
                st["ok"] += 1
                st["lat"].append((t1 - t0) * 1e3)
        conn.close()

    threads = [threading.Thread(target=worker, args=(st,), daemon=True) for st in stats]
    for t in threads:
        t.start()
    time.sleep(max(0.0, m0 - time.perf_counter()))
    c0 = cpu_snapshot()
    time.sleep(max(0.0, m1 - time.perf_counter()))
    c1 = cpu_snapshot()
    for t in threads:
        t.join()
    ok, lat = sum(st["ok"] for st in stats), pct([x for st in stats for x in st["lat"]])
    out = {"rps": ok / duration, "errors": sum(st["errors"] for st in stats), "lat_p50_ms": lat["p50"]}
    out.update(lat_p99_ms=lat["p99"], **cpu_used(c0, c1, duration, ok))
    return out


def cpu_snapshot() -> dict:
    """CPU seconds used so far by each process of a MARKS group and by this one (the load generator), and by
    the whole machine; keyed by (group, pid)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat, cmd = (d / "stat").read_text(), (d / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        me = d.name == str(os.getpid())
        group = "load generator" if me else next((g for g, mark in MARKS.items() if mark in cmd), None)
        if group:
            fields = stat.rsplit(")", 1)[1].split()
            out[(group, d.name)] = (int(fields[11]) + int(fields[12])) / tick
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    out[("machine busy", "")] = (sum(ticks) - ticks[3] - ticks[4]) / tick
    return out


def cpu_used(c0: dict, c1: dict, seconds: float, requests: int) -> dict:
    """CPU used between two snapshots (a process started in between counts from zero), per group."""
    used = dict.fromkeys([*MARKS, "load generator", "machine busy"], 0.0)
    for (group, pid), value in c1.items():
        used[group] += value - c0.get((group, pid), 0.0)
    used["other processes"] = used["machine busy"] - sum(v for g, v in used.items() if g != "machine busy")
    per_request = {g: v * 1e3 / max(requests, 1) for g, v in used.items()}
    return {"cores_busy": {g: v / seconds for g, v in used.items()}, "cpu_ms_per_request": per_request}


def triton_counts(metrics_url: str, model: str) -> list[float]:
    text = urllib3.request("GET", metrics_url, timeout=10).data.decode()
    pattern = r'^{}{{[^}}]*model="{}"[^}}]*}} (\S+)$'
    metrics = ("nv_inference_count", "nv_inference_exec_count")
    return [float(re.search(pattern.format(m, re.escape(model)), text, re.M).group(1)) for m in metrics]


def breakdown(token: str, model: str, triton_port: int, gw_port: int, iters: int) -> dict:
    """Medians (µs, wall and this thread's CPU) of the gateway's steps run here against the same database;
    each iteration runs every step once, in request order, so that none runs in an artificially hot loop."""
    from django.db import connection
    from django.test import Client

    from apps.accounts.services import authenticate_bearer
    from apps.audit.services import Source, record_event
    from apps.gateway.protocol import check_against_signature, parse_infer_header
    from apps.gateway.routing import route as route_lookup

    auth, gw_headers = f"Bearer {token}", {"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    user, tok = authenticate_bearer(auth, "127.0.0.1")

    def route() -> list:  # the statement and decision of apps/gateway/views.py _route
        return route_lookup(user, tok, model, invoke=True)

    dep = route()[0]
    source = Source(ip="127.0.0.1", user_agent="python-urllib3", token_id=tok.pk)
    details = {"model": model, "status": 200, "latency_ms": 1.2, "version": dep.model_version.version}
    details.update(server=dep.server.name, deployment=dep.pk)
    client, triton, json_ct = Client(HTTP_HOST="127.0.0.1"), new_conn(triton_port), {"Content-Type": "application/json"}

    def audit() -> None:
        record_event("inference.infer", actor=user, source=source, target_type="registry.model",
                     target_id=str(dep.model_id), target_display=model, details=details)  # fmt: skip

    gw, url, xfp = new_conn(gw_port), f"/v2/models/{model}/infer", {"X-Forwarded-Proto": "https"}

    def whole_view() -> None:
        resp = client.post(url, BODY, content_type="application/json", headers=gw_headers)
        assert resp.status_code == 200, resp.content

    steps = {
        "token lookup (authenticate_bearer)": lambda: authenticate_bearer(auth, "127.0.0.1", lean=True),
        "route lookup (Deployment query)": route,
        "JSON header parse + signature check": lambda: check_against_signature(
            parse_infer_header(BODY, None), dep.model_version.signature, dep.max_batch_size
        ),
        "audit insert (record_event)": audit,
        "DB health check (CONN_HEALTH_CHECKS: SELECT 1 per request)": connection.is_usable,
        "direct Triton call from this process": lambda: call(triton, {"headers": json_ct}, model),
        "whole gateway view in-process (test Client, incl. Triton)": whole_view,
        "floor over HTTP: GET on the infer URL, 405 from gunicorn+Django": lambda: gw.request("GET", url, headers=xfp),
    }
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(iters + 100):  # the first 100 are warm-up
        for name, fn in steps.items():
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            fn()
            wall[name].append((time.perf_counter_ns() - t0) / 1e3)
            cpu[name].append((time.thread_time_ns() - c0) / 1e3)
    return {
        name: {"wall": statistics.median(wall[name][100:]), "cpu": statistics.median(cpu[name][100:])} for name in steps
    }


def run(quick: bool) -> dict:
    rounds, per_round, warm_n, warm_s, dur_s, iters = (4, 50, 50, 1, 2, 300) if quick else (20, 100, 200, 2, 5, 2000)
    data = Path(tempfile.mkdtemp(prefix="sovereign-bench-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    env = portal_env(data)
    os.environ.update(env)
    log(f"database {DB_NAME}, data dir {data}")
    CLEANUP.append(lambda: recreate_db(drop_only=True))
    recreate_db()
    rds = redis.Redis.from_url(REDIS_URL)
    rds.flushdb()
    CLEANUP.append(rds.flushdb)
    import django
    from django.core.management import call_command

    django.setup()
    CLEANUP.append(lambda: __import__("django.db").db.connections.close_all())
    call_command("migrate", "--noinput", verbosity=0)
    log("starting tritonserver and gunicorn")
    triton = start_triton(data, env)
    gw_port = start_gunicorn(data, env)
    MARKS.update(gunicorn=f"127.0.0.1:{gw_port}", postgres=f" {DB_NAME} ", triton=str(data / "triton"))
    log("deploying the demo model twice")
    token = deploy(triton.http_url)
    json_ct = {"Content-Type": "application/json"}
    gw_headers = {**json_ct, "Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    sides = {
        "direct": {"name": "direct", "port": triton.http_port, "headers": json_ct},
        "gateway": {"name": "gateway", "port": gw_port, "headers": gw_headers},
    }
    cpu = [ln.split(":")[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick}
    res["machine"] = {"nproc": os.cpu_count(), "cpu": cpu[0], "python": sys.version.split()[0]}
    loop = [time.perf_counter(), sum(i * i for i in range(10**6)), time.perf_counter()]  # pure-Python speed probe
    res["machine"].update(loadavg_at_start=os.getloadavg(), python_loop_1e6_ms=(loop[2] - loop[0]) * 1e3)
    res["config"] = {"gunicorn": "gthread, 2 workers x 8 threads", "max_batch_size": 32, "rounds": rounds,
                     "per_round": per_round, "batched_max_queue_delay_us": QUEUE_DELAY_US, "warmup_s": warm_s,
                     "duration_s": dur_s, "breakdown_iterations": iters, "model_for_1_2_4": UNBATCHED}  # fmt: skip
    log(f"1. sequential latency on {UNBATCHED}: {rounds} rounds x {per_round} requests per side")
    res["sequential"] = sequential(sides, UNBATCHED, rounds, per_round, warm_n)
    res["throughput"] = []
    for conc in (1, 8, 32):
        log(f"2. throughput at concurrency {conc}")
        row = {name: throughput(side, UNBATCHED, conc, warm_s, dur_s) for name, side in sides.items()}
        res["throughput"].append({"concurrency": conc, **row, "ratio": row["gateway"]["rps"] / row["direct"]["rps"]})
    res["batching"] = {}
    for name, side in sides.items():
        b = res["batching"][name] = {}
        for model in (BATCHED, UNBATCHED):
            log(f"3. {model} via {name} at concurrency 32")
            c0 = triton_counts(triton.metrics_url, model)
            r = b[model] = throughput(side, model, 32, warm_s, dur_s)
            c1 = triton_counts(triton.metrics_url, model)
            r.update(inferences=c1[0] - c0[0], executions=c1[1] - c0[1])
            r["mean_batch"] = r["inferences"] / r["executions"] if r["executions"] else float("nan")
        b["ratio_on_off"] = b[BATCHED]["rps"] / b[UNBATCHED]["rps"]
    log(f"4. in-process breakdown, {iters} interleaved iterations")
    bd = res["breakdown_us"] = breakdown(token, UNBATCHED, triton.http_port, gw_port, iters)
    wall = [v["wall"] for v in bd.values()]
    own, floor, overhead = sum(wall[:5]), wall[7], res["sequential"]["overhead"]["p50"] * 1e3
    res["attribution_us"] = {
        "gateway overhead p50 over HTTP (section 1)": overhead,
        "gateway's own steps (sum of the five first lines)": own,
        "rest: HTTP/Django/gunicorn (overhead - own steps)": overhead - own,
        "  of which the floor: extra HTTP hop + gunicorn + middleware (405 line)": floor,
        "  of which the remainder: view glue, upstream call via PoolManager, threads": overhead - own - floor,
        "  (in-process, for comparison: whole view - direct call - own steps)": wall[6] - wall[5] - own,
    }
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    return res


def table(title: str, header: list, rows: list[list]) -> None:
    widths = [max(len(str(cell)) for cell in column) + 2 for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for row in [header, *rows] if any(header) else rows:
        print(f"{row[0]:<{widths[0]}}" + "".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:], strict=True)))


def report(res: dict) -> None:
    s, m = res["sequential"], res["machine"]
    print(f"== Sovereign gateway overhead, {res['date']}, {m['nproc']} x {m['cpu']}, load {m['loadavg_at_start']}")
    rows = [[name, *(f"{s[name][k]:.3f}" for k in ("p50", "p90", "p99"))] for name in ("direct", "gateway", "overhead")]
    table(f"1. Sequential latency, ms ({s['direct']['n']} requests per side)", ["", "p50", "p90", "p99"], rows)
    print("cores busy: " + ", ".join(f"{g} {v:.2f}" for g, v in s["cores_busy"].items()))
    rows, cpu_rows, groups = [], [], list(res["throughput"][0]["direct"]["cpu_ms_per_request"])
    for r in res["throughput"]:
        d, g = r["direct"], r["gateway"]
        rows.append([r["concurrency"], f"{d['rps']:.0f}", f"{g['rps']:.0f}", f"{r['ratio']:.3f}"])
        rows[-1] += [f"{d['errors']}/{g['errors']}", f"{d['lat_p50_ms']:.2f}/{g['lat_p50_ms']:.2f}"]
        for side in ("direct", "gateway"):
            cpu, busy = r[side]["cpu_ms_per_request"], r[side]["cores_busy"]
            cpu_rows.append([f"{side} c={r['concurrency']}", *(f"{cpu[k]:.3f} ({busy[k]:.2f})" for k in groups)])
    header = ["conc", "direct", "gateway", "gw/direct", "errors d/g", "p50 ms d/g"]
    table(f"2. Throughput, requests/s ({UNBATCHED})", header, rows)
    table("CPU ms per request (cores busy) in the timed window", ["", *groups], cpu_rows)
    rows = []
    for name, b in res["batching"].items():
        for model in (BATCHED, UNBATCHED):
            rows.append(
                [f"{name} {model}", f"{b[model]['rps']:.0f}", b[model]["errors"], f"{b[model]['mean_batch']:.2f}"]
            )
        rows.append([f"{name} on/off ratio", f"{b['ratio_on_off']:.2f}", "", ""])
    table(f"3. Dynamic batching on ({QUEUE_DELAY_US} us) vs off, c=32", ["", "req/s", "errors", "mean batch"], rows)
    rows = [[k, f"{v['wall']:.1f}", f"{v['cpu']:.1f}"] for k, v in res["breakdown_us"].items()]
    table("4. Where the time goes (µs, in-process medians)", ["", "wall", "CPU"], rows)
    table("Attribution of the p50 overhead (µs)", ["", ""], [[k, f"{v:.1f}"] for k, v in res["attribution_us"].items()])
    print("\n== JSON summary")
    print(json.dumps(res, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run, not for figures")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report(run(args.quick))
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("cleaning up")
        for fn in reversed(CLEANUP):
            try:
                fn()
            except Exception as exc:  # keep cleaning up
                log(f"cleanup step failed: {exc!r}")


if __name__ == "__main__":
    sys.exit(main())
