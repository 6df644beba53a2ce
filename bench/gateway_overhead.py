"""Gateway overhead: Sovereign's KServe v2 gateway (auth, route, checks, audit) vs Triton directly.
Sets up its own PostgreSQL database, Redis db 14, temp data dir, tritonserver and gunicorn (bench/harness.py);
removes them on exit, Ctrl-C or error. BENCH_DB_NAME and BENCH_REDIS_URL choose another database and Redis db.
Run from the repository root: .venv/bin/python bench/gateway_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402 - bench/ is not a package
    CLEANUP,
    GUNICORN,
    MARKS,
    cpu_snapshot,
    cpu_used,
    db_name,
    flushed_redis,
    fresh_db,
    log,
    machine,
    percentiles,
    portal_env,
    redis_url,
    run_main,
    setup_django,
    start_gunicorn,
    start_triton,
    table,
    timed,
)

DB_NAME = db_name("sovereign_bench")
REDIS_URL = redis_url("redis://127.0.0.1:6379/14")
BATCHED, UNBATCHED = "bench-batched", "bench-unbatched"
QUEUE_DELAY_US = 1000  # max_queue_delay_microseconds of the batched deployment
BODY = b'{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,4],"data":[0.5,1.0,-0.5,2.0]}]}'


def gateway_env(data: Path, db: str, redis: str, **extra: str) -> dict:
    """The portal as in production behind its TLS proxy, on the local KEK file."""
    return portal_env(
        data,
        db,
        REDIS_URL=redis,
        SOVEREIGN_ENV="production",
        SOVEREIGN_ALLOWED_HOSTS="127.0.0.1,localhost",
        SOVEREIGN_BEHIND_TLS_PROXY="true",  # clients send X-Forwarded-Proto: https, as the proxy would
        # production refuses the local KEK file unless told (docs/production.md); the HSM's own cost
        # is measured apart (bench/hsm_unwrap.py)
        SOVEREIGN_INSECURE_OVERRIDE="local_kek",
        **extra,
    )


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
    res = {name: percentiles(values) for name, values in lat.items()}
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
    ok, lat = sum(st["ok"] for st in stats), percentiles([x for st in stats for x in st["lat"]])
    out = {"rps": ok / duration, "errors": sum(st["errors"] for st in stats), "lat_p50_ms": lat["p50"]}
    out.update(lat_p99_ms=lat["p99"], **cpu_used(c0, c1, duration, ok))
    return out


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
            w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
    return {
        name: {"wall": statistics.median(wall[name][100:]), "cpu": statistics.median(cpu[name][100:])} for name in steps
    }


def run(quick: bool) -> dict:
    rounds, per_round, warm_n, warm_s, dur_s, iters = (4, 50, 50, 1, 2, 300) if quick else (20, 100, 200, 2, 5, 2000)
    data = Path(tempfile.mkdtemp(prefix="sovereign-bench-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    env = gateway_env(data, DB_NAME, REDIS_URL)
    os.environ.update(env)
    log(f"database {DB_NAME}, redis {REDIS_URL}, data dir {data}")
    fresh_db(DB_NAME)
    flushed_redis(REDIS_URL)
    setup_django()
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
    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick}
    res["machine"] = machine()
    loop = [time.perf_counter(), sum(i * i for i in range(10**6)), time.perf_counter()]  # pure-Python speed probe
    res["machine"].update(loadavg_at_start=os.getloadavg(), python_loop_1e6_ms=(loop[2] - loop[0]) * 1e3)
    res["config"] = {"gunicorn": GUNICORN, "max_batch_size": 32, "rounds": rounds,
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
    return run_main(lambda: report(run(args.quick)))


if __name__ == "__main__":
    sys.exit(main())
