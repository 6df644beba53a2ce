"""Abuse flood: 10,000 anonymous bad gateway calls from many addresses while a granted caller keeps calling.

Measures the granted caller's latency before and during the flood, the CPU each flood call costs, and what
the flood leaves in the audit log (rows, and that their counts add up to the calls). Runs on
bench/harness.py (PostgreSQL database, Redis, temp data dir, tritonserver, the data plane as in production) and
bench/gateway_overhead.py's demo deployment, under its own database and Redis db (BENCH_DB_NAME,
BENCH_REDIS_URL override them). The flood comes through a trusted
proxy (SOVEREIGN_TRUSTED_PROXIES=127.0.0.1/32) with X-Forwarded-For naming one of --addresses clients.
Run from the repository root: .venv/bin/python bench/abuse_flood.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as go  # noqa: E402 - the gateway bench's deployment and calls
from harness import (  # noqa: E402 - bench/ is not a package
    CLEANUP,
    MARKS,
    cpu_snapshot,
    cpu_used,
    db_name,
    flushed_redis,
    fresh_db,
    log,
    percentiles,
    redis_url,
    run_main,
    setup_django,
    start_server,
    start_triton,
    table,
    time_calls,
)
from harness import (
    port as free_bench_port,
)

DB_NAME = db_name("sovereign_bench_abuse")  # not gateway_overhead's: both may run on one machine
REDIS_URL = redis_url("redis://127.0.0.1:6379/7")


def new_conn(port: int) -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1, retries=False, timeout=30.0)


def call(conn: urllib3.HTTPConnectionPool, side: dict, model: str) -> urllib3.BaseHTTPResponse:
    return conn.request("POST", f"/v2/models/{model}/infer", body=go.BODY, headers=side["headers"], redirect=False)


def granted_calls(port: int, headers: dict, model: str, stop: threading.Event, n: int | None = None) -> list[float]:
    """Sequential calls on one keep-alive connection until `stop` is set (or `n` calls); latencies in ms."""
    conn, lat = new_conn(port), []
    while not stop.is_set() and (n is None or len(lat) < n):
        t0 = time.perf_counter()
        resp = call(conn, {"headers": headers}, model)
        lat.append((time.perf_counter() - t0) * 1e3)
        if resp.status != 200:
            raise RuntimeError(f"the granted caller got {resp.status}: {resp.data[:300]!r}")
    conn.close()
    return lat


def flood(port: int, model: str, total: int, addresses: int, threads: int) -> Counter:
    """`total` calls with wrong tokens, spread over `addresses` clients behind the trusted proxy."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        conn, seen = new_conn(port), Counter()
        for i in counter:  # a shared iterator: every call index is taken exactly once
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer svt_guess-{i}",
                "X-Forwarded-For": f"203.0.113.{i % addresses + 1}",
                "X-Forwarded-Proto": "https",
            }
            resp = conn.request("POST", f"/v2/models/{model}/infer", body=go.BODY, headers=headers, redirect=False)
            seen[resp.status] += 1
        conn.close()
        with lock:
            statuses.update(seen)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return statuses


def limiter_cost(iters: int) -> dict:
    """Median wall and CPU µs of one rate-limit check against this Redis (the gateway's one round trip)."""
    from apps.core.throttling import hit_gateway_token, limiter

    wall, cpu = time_calls(lambda: hit_gateway_token(0), iters, warmup=200)
    limiter().reset()
    return {"wall_us": statistics.median(wall), "cpu_us": statistics.median(cpu), "backend": type(limiter()).__name__}


def audit_outcome(granted: int) -> dict:
    """Close the last window as the beat task would, then read what the flood left in the log."""
    from apps.audit.models import AuditEvent
    from apps.audit.refusals import flush_closed, window_seconds

    window = window_seconds()
    time.sleep(window - time.time() % window + 0.5)  # the flood's last window closes
    flushed = flush_closed()
    refusals = AuditEvent.objects.filter(event_type="inference.infer", actor__isnull=True)
    counts = list(refusals.values_list("details__count", flat=True))
    by_code = Counter(refusals.values_list("error_code", flat=True))
    served = AuditEvent.objects.filter(event_type="inference.infer", actor__isnull=False).count()
    return {"rows": len(counts), "sum_of_counts": sum(counts), "rows_by_code": dict(by_code),
            "flushed_at_end": flushed, "granted_events": served, "granted_calls": granted}  # fmt: skip


def run(quick: bool, total: int, addresses: int, threads: int) -> dict:
    baseline_n = 200 if quick else 1000
    data = Path(tempfile.mkdtemp(prefix="sovereign-abuse-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    env = go.gateway_env(data, DB_NAME, REDIS_URL, SOVEREIGN_TRUSTED_PROXIES="127.0.0.1/32")
    os.environ.update(env)
    log(f"database {DB_NAME}, redis {REDIS_URL}, data dir {data}")
    fresh_db(DB_NAME)
    flushed_redis(REDIS_URL)
    setup_django()
    log("starting tritonserver and the data plane")
    triton = start_triton(data, env)
    port = free_bench_port()
    argv = [sys.executable, "manage.py", "run_dataplane", "--port", str(port), "--grpc-port", "0"]
    start_server("dataplane", argv, data, env, f"http://127.0.0.1:{port}/dataplane/healthz")
    MARKS.update(postgres=f" {DB_NAME} ")
    MARKS["redis (whole server, shared)"] = "redis-server"
    token = go.deploy(triton.http_url, {go.UNBATCHED: {"max_batch_size": 32, "dynamic_batching": False}})
    model = go.UNBATCHED
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}
    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick}
    res["machine"] = {"nproc": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    res["config"] = {"flood_calls": total, "addresses": addresses, "flood_threads": threads, "model": model,
                     "gateway": "manage.py run_dataplane", "baseline_calls": baseline_n}  # fmt: skip
    log("warm-up, then the granted caller alone")
    granted_calls(port, headers, model, threading.Event(), 100)
    before = granted_calls(port, headers, model, threading.Event(), baseline_n)
    res["before"] = percentiles(before)
    log(f"the flood: {total} bad calls from {addresses} addresses on {threads} connections, granted caller running")
    stop, during = threading.Event(), []
    caller = threading.Thread(target=lambda: during.extend(granted_calls(port, headers, model, stop)), daemon=True)
    c0, t0 = cpu_snapshot(), time.perf_counter()
    caller.start()
    statuses = flood(port, model, total, addresses, threads)
    seconds, c1 = time.perf_counter() - t0, cpu_snapshot()
    stop.set()
    caller.join()
    res["during"] = percentiles(during)
    res["flood"] = {"seconds": seconds, "calls_per_s": total / seconds, "statuses": dict(statuses)}
    res["flood"].update(cpu_used(c0, c1, seconds, total + len(during)))
    res["ratio_p50_during_before"] = res["during"]["p50"] / res["before"]["p50"]
    log("the granted caller alone again")
    res["after"] = percentiles(granted_calls(port, headers, model, threading.Event(), baseline_n))
    log("one rate-limit check (the gateway's Redis round trip), in-process")
    res["limiter"] = limiter_cost(500 if quick else 3000)
    log("waiting for the flood's last window to close, then reading the audit log")
    res["audit"] = audit_outcome(len(before) + len(during) + baseline_n + 100)
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    return res


def report(res: dict) -> None:
    m, f, a = res["machine"], res["flood"], res["audit"]
    print(f"== Sovereign abuse flood, {res['date']}, {m['nproc']} cores, load {m['loadavg_at_start']}")
    print(f"config: {json.dumps(res['config'])}")
    table(
        "Granted caller, sequential, ms",
        ["", "p50", "p90", "p99", "n"],
        [[k, *(f"{res[k][q]:.2f}" for q in ("p50", "p90", "p99")), res[k]["n"]] for k in ("before", "during", "after")],
    )
    print(f"p50 during / before: {res['ratio_p50_during_before']:.2f}")
    calls = res["config"]["flood_calls"]
    print(f"flood: {calls} calls in {f['seconds']:.1f} s ({f['calls_per_s']:.0f}/s), statuses {f['statuses']}")
    per_call = f["cpu_ms_per_request"]
    table("CPU ms per call during the flood (cores busy)", ["", "ms", "cores"],
             [[g, f"{per_call[g]:.3f}", f"{f['cores_busy'][g]:.2f}"] for g in per_call])  # fmt: skip
    lim = res["limiter"]
    print(f"\none rate-limit check ({lim['backend']}): {lim['wall_us']:.0f} µs wall, {lim['cpu_us']:.0f} µs CPU")
    print(f"audit: {a['rows']} rows for the flood, counts sum to {a['sum_of_counts']}, by code {a['rows_by_code']};")
    print(f"       granted caller: {a['granted_events']} events for {a['granted_calls']} calls")
    ok = a["sum_of_counts"] == res["config"]["flood_calls"] and a["granted_events"] == a["granted_calls"]
    print(f"complete: {'yes' if ok else 'NO'}")
    print("\n== JSON summary")
    print(json.dumps(res, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run, not for figures")
    parser.add_argument("--calls", type=int, default=10_000, help="flood calls (default 10,000)")
    parser.add_argument("--addresses", type=int, default=32, help="distinct client addresses in the flood")
    parser.add_argument("--threads", type=int, default=8, help="flood connections")
    args = parser.parse_args()
    calls = 2000 if args.quick else args.calls
    return run_main(lambda: report(run(args.quick, calls, args.addresses, args.threads)))


if __name__ == "__main__":
    sys.exit(main())
