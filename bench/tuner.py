"""Batching tuner (issue 16, docs/tuning.md): a sweep of the demo model on a real local tritonserver, run by
the service the Celery worker runs (apps.deployments.tuning.run_batching_sweep, in this process), and its table.

The grid includes max_batch_size 0 (Triton without batching): the baseline the other points are compared with
(ratios of throughput and p99), measured in the same run on the same arrival times. The load generator runs in
this process (open loop, threads); its own CPU per call and how late it sent (lag) are reported, because it
shares the machine's cores with tritonserver. The live replica of the set is not loaded (no reconcile runs), so
the dedicated replica has the server to itself (allow_shared_server: one tritonserver).

Sets up its own PostgreSQL database and temp data dir (bench/harness.py); removes them on exit.
BENCH_DB_NAME chooses another database. Run from the repository root:
  .venv/bin/python bench/tuner.py [--rate 150] [--repeats 3] [--seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CLEANUP, db_name, fresh_db, log, machine, port, portal_env, run_main, setup_django, table  # noqa: E402

DB_NAME = db_name("sovereign_tuner_bench")
GRID = {"max_batch_size": [0, 8, 32], "max_queue_delay_us": [0, 2000], "preferred_batch_sizes": [[]],
        "instance_count": [1, 2]}  # fmt: skip


def run(args) -> dict:
    data = Path(tempfile.mkdtemp(prefix="sov-tuner-bench-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    (data / "artifacts").mkdir(mode=0o700)
    os.environ.update(portal_env(data, DB_NAME))
    os.environ.pop("REDIS_URL", None)
    fresh_db(DB_NAME)
    setup_django()

    from django.contrib.auth import get_user_model

    from apps.deployments import services, tuning
    from apps.registry.services import register_model_version
    from inference_backend.demo_model import build_demo_onnx
    from inference_backend.server import LocalTritonServer

    kek = {"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": os.environ["SOVEREIGN_LOCAL_KEK_FILE"]}
    triton = LocalTritonServer(data / "triton", port(), port(), port(), extra_env=kek)
    CLEANUP.append(triton.stop)
    triton.start(timeout=240)
    admin = get_user_model().objects.create_superuser("bench", "bench@localhost", secrets.token_urlsafe(16))
    services.register_server(name="triton-1", http_url=triton.http_url, actor=admin)
    mv = register_model_version(model_name="demo", data=build_demo_onnx(), actor=admin)
    rs = services.request_replica_set(model_version_id=mv.pk, replicas=1, actor=admin)
    sweep = tuning.request_batching_sweep(
        replica_set_id=rs.pk, arrival="synthetic", rate_per_second=args.rate, burstiness=args.burstiness,
        slo_p99_ms=args.slo, grid=GRID, repeats=args.repeats, point_seconds=args.seconds,
        warmup_seconds=args.warmup, allow_shared_server=True, actor=admin,
    )  # fmt: skip
    log(f"sweep {sweep.pk}: {len(tuning.grid_configs(GRID))} configurations x {args.repeats} x {args.seconds} s")
    load0, started = os.getloadavg(), time.time()
    sweep = tuning.run_batching_sweep(sweep.pk)
    return {"sweep": sweep, "seconds": time.time() - started, "load": (load0, os.getloadavg()), "args": args}


def report(res: dict) -> None:
    sweep, args, m = res["sweep"], res["args"], machine()
    print(f"== Sovereign batching tuner bench, {m['nproc']} x {m['cpu']}, Python {m['python']}")
    print(f"load average (1/5/15 min) at start {res['load'][0]}, at end {res['load'][1]}; sweep took "
          f"{res['seconds']:.0f} s; state {sweep.state} {sweep.error}")  # fmt: skip
    print(f"arrival: synthetic {args.rate:g} calls/s, burstiness {args.burstiness:g}; SLO p99 {args.slo:g} ms; "
          f"{args.repeats} repeats x {args.seconds:g} s, warm-up {args.warmup:g} s")  # fmt: skip
    base = next((p for p in sweep.points if p["config"]["max_batch_size"] == 0 and "error" not in p), None)
    rows = []
    for p in sweep.points:
        if "error" in p:
            rows.append([p["label"], "not loaded", p["error"][:40], "", "", "", "", ""])
            continue
        tp, p99 = p["throughput"], p["p99_ms"]
        ratio = (f"{tp['mean'] / base['throughput']['mean']:.2f} / {p99['mean'] / base['p99_ms']['mean']:.2f}"
                 if base else "-")  # fmt: skip
        rows.append([
            ("* " if p["config"] == sweep.chosen else "") + p["label"],
            f"{tp['mean']:.1f} ± {tp['stdev']:.1f} ({tp['min']:.1f}–{tp['max']:.1f})",
            f"{p99['mean']:.1f} ± {p99['stdev']:.1f} ({p99['min']:.1f}–{p99['max']:.1f})",
            f"{p['p50_ms']['mean']:.1f}",
            f"{p['errors']} / {p['sent']}",
            ratio,
            f"{p['lag_ms_max']:.1f}",
            f"{p['cpu_ms_per_call']:.2f}",
        ])  # fmt: skip
    table(
        "Points (mean ± stdev (min–max) of the repeats; * = chosen)",
        [
            "config",
            "throughput /s",
            "p99 ms",
            "p50 ms",
            "errors/sent",
            "vs b0 i1: tp / p99",
            "lag ms",
            "gen CPU ms/call",
        ],
        rows,
    )
    print(f"\nchosen: {sweep.chosen}\nreason: {sweep.reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150.0, help="synthetic arrival rate, calls/s")
    parser.add_argument("--burstiness", type=float, default=1.0)
    parser.add_argument("--slo", type=float, default=100.0, help="p99 SLO, ms")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="each repeat of each point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 1.5 s (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.seconds, args.warmup = 1, 1.5, 0.3
    return run_main(lambda: report(run(args)))


if __name__ == "__main__":
    sys.exit(main())
