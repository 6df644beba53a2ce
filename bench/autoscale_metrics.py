"""CPU of reading Triton's /metrics text (issue 16, autoscaling): the shared parser
(inference_backend/metrics.py) against the balancer's parser as it was before it moved (the baseline,
copied below), on a synthetic exposition as large as a busy Triton's (N models, every family Triton
prints), in the same run. Prints µs of CPU per call and the ratio to the baseline.

    .venv/bin/python bench/autoscale_metrics.py [--models 50] [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference_backend.metrics import parse_metrics, parse_model_metrics  # noqa: E402


def baseline_parse_metrics(text: str) -> dict[str, float]:
    """apps/gateway/dataplane/balancer.py parse_metrics before this change (commit 39e5ce6)."""
    wanted = {
        "nv_inference_pending_request_count": "pending",
        "nv_inference_queue_duration_us": "queue_us",
        "nv_inference_request_success": "success",
        "nv_gpu_utilization": "gpu",
    }
    out: dict[str, float] = {}
    gpus = 0
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = wanted.get(name)
        if key is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        out[key] = out.get(key, 0.0) + value
        if key == "gpu":
            gpus += 1
    if gpus:
        out["gpu"] /= gpus
    return out


FAMILIES = [  # what Triton 24.x prints per model (counters, gauges, summaries): read or skipped
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_cache_num_hits_per_model",
]


def exposition(models: int) -> str:
    lines = []
    for family in FAMILIES:
        lines += [f"# HELP {family} a description", f"# TYPE {family} counter"]
        lines += [f'{family}{{model="model-{i}--v1",version="1"}} {i * 17}' for i in range(models)]
    lines += ["# TYPE nv_cpu_utilization gauge", "nv_cpu_utilization 0.25", "nv_cpu_memory_used_bytes 123456789"]
    return "\n".join(lines) + "\n"


def cpu_per_call(fn, text: str, calls: int) -> float:
    fn(text)
    started = time.process_time()
    for _ in range(calls):
        fn(text)
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    text = exposition(args.models)
    assert parse_metrics(text) == baseline_parse_metrics(text)
    print(f"exposition: {args.models} models, {len(text.splitlines())} lines, {len(text)} bytes; {args.calls} calls")
    rounds = {"baseline (balancer's parser before)": [], "parse_metrics (shared)": [], "parse_model_metrics": []}
    for _ in range(3):  # interleaved, so that a neighbour's burst hits every side
        rounds["baseline (balancer's parser before)"].append(cpu_per_call(baseline_parse_metrics, text, args.calls))
        rounds["parse_metrics (shared)"].append(cpu_per_call(parse_metrics, text, args.calls))
        rounds["parse_model_metrics"].append(cpu_per_call(parse_model_metrics, text, args.calls))
    base = sorted(rounds["baseline (balancer's parser before)"])[1]
    for name, figures in rounds.items():
        median = sorted(figures)[1]
        spread = ", ".join(f"{f:.0f}" for f in figures)
        print(f"{name:40s} CPU {median:8.0f} µs per call (rounds {spread})  ratio to baseline {median / base:.2f}")


if __name__ == "__main__":
    main()
