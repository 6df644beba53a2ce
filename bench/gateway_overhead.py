"""Gateway overhead: Sovereign's gateway (auth, route, rate limit, checks, audit) vs Triton directly, one run,
ratios against the direct figures measured in the same run.

What it measures (the demo model on the embedded tritonserver):
  1. sequential p50 over HTTP: wrk -t1 -c1, rounds alternating direct / gateway; overhead = the difference
     in each round (median over rounds);
  2. requests/s at concurrency 32 over HTTP: wrk -t1 -c32 (a Lua script POSTs the body), same rounds;
     CPU ms per answered call of each process group, from /proc/<pid>/stat utime+stime (the gateway's and
     Triton's whole sessions, every PostgreSQL process, the Redis server, wrk via its rusage);
  3. gRPC (KServe v2 ModelInfer): sequential p50 with tritonclient.grpc (one channel, one call at a time),
     requests/s at concurrency 32 with h2load (nghttp2: 32 HTTP/2 connections x 1 stream, a pre-serialised
     ModelInferRequest), direct Triton's gRPC port vs the gateway's; answers cross-checked with Triton's count;
  4. dynamic batching: the model deployed with dynamic batching ON, wrk at concurrency 32; mean batch size =
     Triton's nv_inference_request_success / nv_inference_exec_count over the window, direct and through the
     gateway, and their ratio (the gateway must not serialise calls).

Which gateway (--mode):
  dataplane  `manage.py run_dataplane --port P --grpc-port G` (the issue 12 data plane; the default)
  gunicorn   the portal under gunicorn (gthread, 2 x 8) serving Django's /v2 views (the gateway before
             issue 12; no gRPC)
  --gateway-cmd 'ARGV'  any server: a command with {python}, {port}, {grpc_port} (also BENCH_GATEWAY_CMD),
             ready when GET --ready-path answers 200; --no-grpc if it has no gRPC port
--code-root DIR runs the portal from another checkout (its Django deploys the model, its server is measured):
before/after from one machine, e.g.
  git worktree add --detach /work/wt/before 34aaea2
  .venv/bin/python bench/gateway_overhead.py --mode gunicorn --code-root /work/wt/before
  .venv/bin/python bench/gateway_overhead.py

Sets up its own PostgreSQL database, Redis db 14, temp data dir and servers (bench/harness.py); removes them on
exit, Ctrl-C or error. BENCH_DB_NAME, BENCH_REDIS_URL and BENCH_PORT_BASE choose another database, Redis db and
port range. Needs wrk and h2load (Debian packages wrk, nghttp2-client).
Run from the repository root: .venv/bin/python bench/gateway_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402 - bench/ is not a package
from harness import (  # noqa: E402
    CLEANUP,
    GUNICORN,
    MARKS,
    db_name,
    deploy,
    flushed_redis,
    fresh_db,
    gateway_env,
    grpc_infer_frame,
    h2load,
    log,
    machine,
    percentiles,
    port,
    redis_url,
    run_main,
    setup_django,
    start_gunicorn,
    start_server,
    start_triton,
    table,
    triton_counts,
    triton_name,
    wrk,
    wrk_script,
)

DB_NAME = db_name("sovereign_bench")
REDIS_URL = redis_url("redis://127.0.0.1:6379/14")
BATCHED, UNBATCHED = "bench-batched", "bench-unbatched"
QUEUE_DELAY_US = 1000  # max_queue_delay_microseconds of the batched deployment
VALUES = [0.5, 1.0, -0.5, 2.0]
BODY = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": VALUES}]}).encode()
DATAPLANE_CMD = "{python} manage.py run_dataplane --port {port} --grpc-port {grpc_port}"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def start_gateway(args, data: Path, env: dict) -> dict:
    """The gateway under test: {"name", "http_port", "grpc_port" (None without gRPC), "proc"}."""
    if args.mode == "gunicorn" and not args.gateway_cmd:
        return {"name": f"gunicorn ({GUNICORN})", "http_port": start_gunicorn(data, env), "grpc_port": None}
    template = args.gateway_cmd or DATAPLANE_CMD
    http_port, grpc_port = port(), (None if args.no_grpc else port())
    argv = [a.format(python=sys.executable, port=http_port, grpc_port=grpc_port or 0) for a in shlex.split(template)]
    ready = f"http://127.0.0.1:{http_port}{args.ready_path}"
    start_server("gateway", argv, data, env, ready, timeout=120)
    return {"name": " ".join(shlex.split(template)[1:]) if args.gateway_cmd else "run_dataplane (uvicorn, 1 worker)",
            "http_port": http_port, "grpc_port": grpc_port}  # fmt: skip


# --- gRPC ----------------------------------------------------------------------------------------


def grpc_sequential(port_: int, token: str | None, model: str, seconds: float) -> dict:
    """p50/p90/p99 (ms) of tritonclient.grpc infer calls one at a time on one channel for `seconds`."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port_}")
    inp = grpcclient.InferInput("INPUT", [1, 4], "FP32")
    inp.set_data_from_numpy(np.array([VALUES], dtype=np.float32))
    headers = {"authorization": f"Bearer {token}"} if token else None
    for _ in range(50):  # warm-up
        client.infer(model, [inp], headers=headers)
    lat, end = [], time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        client.infer(model, [inp], headers=headers)
        lat.append((time.perf_counter() - t0) * 1e3)
    client.close()
    return percentiles(lat)


def grpc_answer(port_: int, token: str | None, model: str) -> list:
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port_}")
    inp = grpcclient.InferInput("INPUT", [1, 4], "FP32")
    inp.set_data_from_numpy(np.array([VALUES], dtype=np.float32))
    headers = {"authorization": f"Bearer {token}"} if token else None
    try:
        return client.infer(model, [inp], headers=headers).as_numpy("PROBABILITIES").tolist()
    finally:
        client.close()


# --- the run --------------------------------------------------------------------------------------


def run(args) -> dict:
    q = args.quick
    rounds, seconds, seq_seconds = (1, 3, 2) if q else (args.rounds, args.seconds, args.seq_seconds)
    data = Path(tempfile.mkdtemp(prefix="sovereign-bench-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    env = gateway_env(data, DB_NAME, REDIS_URL)
    os.environ.update(env)
    log(f"code {harness.ROOT}, database {DB_NAME}, redis {REDIS_URL}, data dir {data}")
    fresh_db(DB_NAME)
    flushed_redis(REDIS_URL)
    setup_django()
    triton = start_triton(data, env)
    log("deploying the demo model twice (dynamic batching off / on)")
    token = deploy(
        triton.http_url,
        {
            UNBATCHED: {"max_batch_size": 32, "dynamic_batching": False},
            BATCHED: {"max_batch_size": 32, "dynamic_batching": True, "max_queue_delay_us": QUEUE_DELAY_US},
        },
    )
    # Triton's own name for each model (the direct side and its metrics), the public one through the gateway
    names = {m: triton_name(m) for m in (UNBATCHED, BATCHED)}

    def as_called(side: str, model: str) -> str:
        return names[model] if side == "direct" else model

    log(f"starting the gateway ({args.gateway_cmd or args.mode})")
    gw = start_gateway(args, data, env)
    MARKS.update(postgres="postgres", redis="redis-server")  # every PostgreSQL process; the whole Redis server
    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": q, "gateway": gw["name"]}
    res["code"] = {"root": str(harness.ROOT), "commit": _commit(harness.ROOT)}
    res["machine"] = machine()
    res["machine"]["loadavg_at_start"] = os.getloadavg()
    res["config"] = {"rounds": rounds, "seconds": seconds, "seq_seconds": seq_seconds, "concurrency": 32,
                     "http load": "wrk -t1 (-c32 / -c1), Lua script for the POST",
                     "grpc load": "h2load -c32 -m1 -n (rate x seconds); tritonclient.grpc sequential (p50)",
                     "batched_max_queue_delay_us": QUEUE_DELAY_US, "max_batch_size": 32}  # fmt: skip

    # sides: direct Triton and the gateway, over HTTP (and gRPC)
    ct = {"Content-Type": "application/json"}
    gw_headers = {**ct, "Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    http = {"direct": (triton.http_port, ct), "gateway": (gw["http_port"], gw_headers)}
    scripts = {name: wrk_script(data / f"wrk-{name}.lua", BODY, h) for name, (_, h) in http.items()}
    answers = {}
    for name, (p, h) in http.items():
        url = _url(p, as_called(name, UNBATCHED))
        resp = urllib3.request("POST", url, body=BODY, headers=h, timeout=30, retries=False)
        if resp.status != 200:
            raise RuntimeError(f"{name} answered {resp.status}: {resp.data[:300]!r}")
        answers[name] = json.loads(resp.data)["outputs"][0]["data"]
    if answers["direct"] != answers["gateway"]:
        raise RuntimeError(f"the direct and the gateway answers differ: {answers}")

    log(f"1-2. HTTP: {rounds} rounds of wrk -c32 for {seconds}s and -c1 for {seq_seconds}s per side")
    thr, seq = {n: [] for n in http}, {n: [] for n in http}
    for r in range(rounds):
        order = list(http) if r % 2 == 0 else list(reversed(http))
        for n in order:
            wrk(_url(http[n][0], as_called(n, UNBATCHED)), scripts[n], 32, 1)  # warm-up
            c0 = triton_counts(triton.metrics_url, names[UNBATCHED])
            row = wrk(_url(http[n][0], as_called(n, UNBATCHED)), scripts[n], 32, seconds)
            row["triton_requests"] = _delta(c0, triton_counts(triton.metrics_url, names[UNBATCHED]))["requests"]
            thr[n].append(row)
        for n in order:
            seq[n].append(wrk(_url(http[n][0], as_called(n, UNBATCHED)), scripts[n], 1, seq_seconds))
    res["http"] = {"throughput": thr, "sequential": seq}

    if gw["grpc_port"] and not args.no_grpc:
        log("3. gRPC: tritonclient.grpc sequential, h2load -c32")
        grpc_ports = {"direct": (triton.grpc_port, None), "gateway": (gw["grpc_port"], token)}
        frames = {n: data / f"grpc-infer-{n}.bin" for n in grpc_ports}
        for n, frame in frames.items():
            tensor = [("INPUT", "FP32", [1, 4], struct.pack("<4f", *VALUES))]
            frame.write_bytes(grpc_infer_frame(as_called(n, UNBATCHED), tensor))
        g_thr, g_seq = {n: [] for n in grpc_ports}, {n: [] for n in grpc_ports}
        g_answers = {n: grpc_answer(p, t, as_called(n, UNBATCHED)) for n, (p, t) in grpc_ports.items()}
        if g_answers["direct"] != g_answers["gateway"]:
            raise RuntimeError(f"the direct and the gateway gRPC answers differ: {g_answers}")
        for r in range(rounds):
            order = list(grpc_ports) if r % 2 == 0 else list(reversed(grpc_ports))
            for n in order:
                p, t = grpc_ports[n]
                headers = {"content-type": "application/grpc", "te": "trailers"}
                if t:
                    headers["authorization"] = f"Bearer {t}"
                url = f"http://127.0.0.1:{p}{GRPC_PATH}"
                warm = h2load(url, frames[n], headers, 32, 640)  # warm-up; its rate sizes the timed run
                c0 = triton_counts(triton.metrics_url, names[UNBATCHED])
                row = h2load(url, frames[n], headers, 32, round(warm["rps"] * seconds))
                row["triton_requests"] = _delta(c0, triton_counts(triton.metrics_url, names[UNBATCHED]))["requests"]
                g_thr[n].append(row)
            for n in order:
                g_seq[n].append(grpc_sequential(*grpc_ports[n], as_called(n, UNBATCHED), seq_seconds))
        res["grpc"] = {"throughput": g_thr, "sequential": g_seq}

    log(f"4. dynamic batching: {BATCHED} at concurrency 32 per side")
    res["batching"] = {n: [] for n in http}
    for r in range(rounds):
        for n in list(http) if r % 2 == 0 else list(reversed(http)):
            url = _url(http[n][0], as_called(n, BATCHED))
            wrk(url, scripts[n], 32, 1)
            c0 = triton_counts(triton.metrics_url, names[BATCHED])
            row = wrk(url, scripts[n], 32, seconds)
            row.update(_delta(c0, triton_counts(triton.metrics_url, names[BATCHED])))
            res["batching"][n].append(row)
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    return res


def _url(p: int, model: str) -> str:
    return f"http://127.0.0.1:{p}/v2/models/{model}/infer"


def _delta(c0: dict, c1: dict) -> dict:
    requests = c1["nv_inference_request_success"] - c0["nv_inference_request_success"]
    executions = c1["nv_inference_exec_count"] - c0["nv_inference_exec_count"]
    return {"requests": requests, "executions": executions, "mean_batch": requests / executions if executions else 0}


def _commit(root: Path) -> str:
    import subprocess

    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return out.stdout.strip() + (" (modified)" if dirty else "")


# --- the report -----------------------------------------------------------------------------------


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _cpu(rows: list[dict]) -> dict:
    """CPU ms per answered call over all rounds (weighted by calls), per process group."""
    calls = sum(r["requests"] for r in rows) or 1
    groups = rows[0]["cpu_ms_per_request"]
    return {g: sum(r["cpu_ms_per_request"][g] * r["requests"] for r in rows) / calls for g in groups}


def summary(res: dict) -> dict:
    out: dict = {}
    for proto in ("http", "grpc"):
        if proto not in res:
            continue
        t, s = res[proto]["throughput"], res[proto]["sequential"]
        key = "p50_ms" if proto == "http" else "p50"
        out[proto] = {
            "rps_direct": _med(t["direct"], "rps"),
            "rps_gateway": _med(t["gateway"], "rps"),
            "ratio": statistics.median(g["rps"] / d["rps"] for g, d in zip(t["gateway"], t["direct"], strict=True)),
            "errors": sum(r["errors"] for side in t.values() for r in side),
            "p50_direct": _med(s["direct"], key),
            "p50_gateway": _med(s["gateway"], key),
            "p50_added": statistics.median(g[key] - d[key] for g, d in zip(s["gateway"], s["direct"], strict=True)),
            "cpu_direct": _cpu(t["direct"]),
            "cpu_gateway": _cpu(t["gateway"]),
        }
    b = res["batching"]
    out["batching"] = {
        "mean_batch_direct": _med(b["direct"], "mean_batch"),
        "mean_batch_gateway": _med(b["gateway"], "mean_batch"),
        "ratio": statistics.median(
            g["mean_batch"] / d["mean_batch"] for g, d in zip(b["gateway"], b["direct"], strict=True)
        ),
        "rps_direct": _med(b["direct"], "rps"),
        "rps_gateway": _med(b["gateway"], "rps"),
    }  # fmt: skip
    return out


def report(res: dict) -> None:
    m, s = res["machine"], summary(res)
    res["summary"] = s
    print(f"== Sovereign gateway overhead, {res['date']}, {m['nproc']} x {m['cpu']}, Python {m['python']}")
    print(f"gateway: {res['gateway']}; code {res['code']['root']} at {res['code']['commit']}")
    print(f"load average at start {m['loadavg_at_start']}, at end {m['loadavg_at_end']}; {res['config']}")
    rows = []
    for proto in ("http", "grpc"):
        if proto not in s:
            rows.append([f"{proto}: (no gRPC port on this gateway)", "", "", ""])
            continue
        x = s[proto]
        rows.append([f"{proto}: sequential p50, ms", f"{x['p50_direct']:.3f}", f"{x['p50_gateway']:.3f}",
                     f"+{x['p50_added']:.3f}"])  # fmt: skip
        rows.append([f"{proto}: requests/s at concurrency 32", f"{x['rps_direct']:.0f}", f"{x['rps_gateway']:.0f}",
                     f"{x['ratio']:.3f}x"])  # fmt: skip
        gw_cpu = {k: v for k, v in x["cpu_gateway"].items() if k not in ("machine busy", "steal", "load generator")}
        mine = gw_cpu.get("gateway", gw_cpu.get("gunicorn", 0.0)) + gw_cpu["postgres"]
        rows.append([f"{proto}: gateway + PostgreSQL CPU per call, ms", "", f"{mine:.3f}", ""])
    b = s["batching"]
    rows.append(["mean batch size, dynamic batching on, c=32", f"{b['mean_batch_direct']:.2f}",
                 f"{b['mean_batch_gateway']:.2f}", f"{b['ratio']:.3f}x"])  # fmt: skip
    rows.append(["  requests/s with dynamic batching on", f"{b['rps_direct']:.0f}", f"{b['rps_gateway']:.0f}", ""])
    table("Results (medians over rounds; ratios and overheads per round, then the median)",
          ["figure", "direct Triton", "through the gateway", "gateway vs direct"], rows)  # fmt: skip
    for proto in ("http", "grpc"):
        if proto not in s:
            continue
        groups = [g for g in s[proto]["cpu_gateway"] if g not in ("machine busy", "steal")] + ["machine busy", "steal"]
        cpu_rows = [[side, *(f"{s[proto][f'cpu_{side}'][g]:.3f}" for g in groups)] for side in ("direct", "gateway")]
        table(f"{proto}: CPU ms per answered call at concurrency 32, by process (machine busy includes steal)",
              ["", *groups], cpu_rows)  # fmt: skip
    rows = []
    for proto in ("http", "grpc"):
        if proto in res:
            for side, runs in res[proto]["throughput"].items():
                rows.append([f"{proto} {side}", " ".join(f"{r['rps']:.0f}" for r in runs),
                             " ".join(str(r["errors"]) for r in runs),
                             " ".join(f"{r['triton_requests']:.0f}/{r['requests']}" for r in runs)])  # fmt: skip
    for side, runs in res["batching"].items():
        rows.append([f"batched {side}", " ".join(f"{r['rps']:.0f}" for r in runs),
                     " ".join(str(r["errors"]) for r in runs),
                     " ".join(f"{r['requests']:.0f}/{r['executions']:.0f}" for r in runs)])  # fmt: skip
    table("Per round: req/s, errors, Triton's count / the load generator's (batched: requests / executions)",
          ["", "req/s", "errors", "counts"], rows)  # fmt: skip
    print("\n== JSON")
    print(json.dumps(res, indent=1, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round: a smoke run, not for figures")
    parser.add_argument("--mode", choices=("dataplane", "gunicorn"), default="dataplane")
    parser.add_argument("--gateway-cmd", default=os.environ.get("BENCH_GATEWAY_CMD"),
                        help="start this instead: {python} {port} {grpc_port} are filled in")  # fmt: skip
    parser.add_argument("--ready-path", default=None, help="GET path answering 200 once the gateway is up")
    parser.add_argument("--no-grpc", action="store_true", help="the gateway has no gRPC port")
    parser.add_argument("--code-root", default=None, help="run the portal from this checkout (the before code)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8, help="each concurrency-32 window")
    parser.add_argument("--seq-seconds", type=float, default=4, help="each sequential window")
    args = parser.parse_args()
    if args.mode == "gunicorn" and not args.gateway_cmd:
        args.no_grpc = True
    if args.ready_path is None:
        args.ready_path = "/dataplane/healthz" if args.mode == "dataplane" else "/healthz"
    if args.code_root:
        harness.use_code_root(args.code_root)
    return run_main(lambda: report(run(args)))


if __name__ == "__main__":
    sys.exit(main())
