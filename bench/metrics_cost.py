"""What /metrics costs: the data plane's per-call counting and a scrape's exposition.

1. CPU per call of `telemetry.record_call` (the hook in the data plane's audit step, apps/gateway/telemetry.py)
   against `slo.record` (the rollouts' per-call figures, the same pattern, already on every call) measured in
   the same run, alternating rounds; process CPU time (time.process_time), flusher threads included.
2. A flush of N distinct (model, version, code) series into Redis: one pipelined round trip.
3. A scrape: `portal.metrics.exposition()` with those series in Redis: wall time and the portal's CPU per scrape.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> REDIS_URL=redis://127.0.0.1:6379/<n> \\
      .venv/bin/python bench/metrics_cost.py [--calls 200000] [--models 50]

Writes the sv:metrics:* hashes of that Redis database (deleted at the end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def main() -> None:
    import django

    django.setup()
    from apps.core.throttling import redis_client
    from apps.deployments import slo
    from apps.gateway import telemetry
    from portal.metrics import exposition

    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client = redis_client()
    if client is None:
        sys.exit("REDIS_URL is required")
    keys = (telemetry.CALLS, telemetry.LATENCY, telemetry.TOKENS, telemetry.DEID)
    client.delete(*keys)
    route = type("Route", (), {"model": "bench", "version": 1})()
    deid = {"mode": "redact", "found": {"PERSON": 1}}

    def ours(n):
        for i in range(n):
            telemetry.record_call("inference.infer", status=200, error_code="", latency_ms=3.0 + i % 7,
                                  route=route, deid=deid)  # fmt: skip

    def baseline(n):
        for i in range(n):
            slo.record(1, 1, ok=True, latency_ms=3.0 + i % 7)

    per = {"record_call": [], "slo.record": []}
    n = args.calls // args.rounds
    for _ in range(args.rounds):
        for name, fn in (("slo.record", baseline), ("record_call", ours)):
            started = time.process_time()
            fn(n)
            per[name].append((time.process_time() - started) / n * 1e6)
    base, mine = statistics.median(per["slo.record"]), statistics.median(per["record_call"])
    print(
        f"CPU per call: slo.record {base:.2f} us (baseline), telemetry.record_call {mine:.2f} us, "
        f"ratio {mine / base:.2f}"
    )

    telemetry.recorder.flush()
    client.delete(*keys)
    codes = ("", "triton_error", "invalid_input", "rate_limited")
    for m in range(args.models):
        for v in (1, 2, 3):
            r = type("Route", (), {"model": f"model-{m}", "version": v})()
            for code in codes:
                telemetry.record_call("inference.infer", status=200 if not code else 400, error_code=code,
                                      latency_ms=12.0, route=r)  # fmt: skip
    started = time.perf_counter()
    written = telemetry.recorder.flush()
    print(f"flush of {written} fields ({args.models} models x 3 versions x {len(codes)} codes): "
          f"{(time.perf_counter() - started) * 1000:.1f} ms, one pipelined round trip")  # fmt: skip
    times, cpu, size = [], [], 0
    for _ in range(args.rounds * 2):
        started, started_cpu = time.perf_counter(), time.process_time()
        size = len(exposition())
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    print(
        f"scrape: {statistics.median(times) * 1000:.1f} ms wall, {statistics.median(cpu) * 1000:.1f} ms CPU in the "
        f"portal (medians of {len(times)}; {size} bytes; the database's time not included)"
    )
    client.delete(*keys)


if __name__ == "__main__":
    main()
