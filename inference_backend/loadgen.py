"""An open-loop load generator for the batching tuner (apps/deployments/tuning.py, docs/tuning.md).

Open loop: calls are sent at the times an arrival pattern says, whether or not earlier calls have
answered, as real callers do — a closed loop (send, wait, send) slows down with the server and hides
its queueing. Each call's latency is measured from the time it was *due*, not the time a thread got
round to sending it, so a generator that falls behind does not flatter the server (no coordinated
omission); how far it fell behind is reported (`lag_ms`), with its own CPU per call, because on a
2-core machine the generator competes with Triton for the cores.

No Django here: the caller passes `send()` (one inference call; raises on failure).
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

MIN_BURSTINESS = 0.1  # nearly regular gaps
MAX_BURSTINESS = 5.0


def arrival_offsets(rate: float, burstiness: float, seconds: float, seed: int) -> list[float]:
    """Send times (seconds from the start) of a renewal process with `rate` calls per second whose
    gaps have coefficient of variation `burstiness` (gamma-distributed: 1 is Poisson, below 1 more
    regular, above 1 bursty). The same arguments give the same times."""
    if rate <= 0 or seconds <= 0:
        return []
    cv = min(max(burstiness, MIN_BURSTINESS), MAX_BURSTINESS)
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    rng = random.Random(seed)
    out, t = [], 0.0
    while True:
        t += rng.gammavariate(shape, scale)
        if t >= seconds:
            return out
        out.append(t)


def pattern_from_counts(counts: Sequence[int]) -> tuple[float, float] | None:
    """(rate, burstiness) of recorded per-second call counts, or None when there was no call.

    The rate is the mean over the span from the first second with calls to the last (idle time
    before and after the traffic is not averaged in). Burstiness is the square root of the index of
    dispersion (variance / mean of the per-second counts), which for a renewal process tends to the
    coefficient of variation of its gaps: a Poisson stream gives about 1."""
    seen = [i for i, n in enumerate(counts) if n > 0]
    if not seen:
        return None
    span = list(counts[seen[0] : seen[-1] + 1])
    mean = sum(span) / len(span)
    dispersion = statistics.pvariance(span) / mean if len(span) > 1 else 1.0
    burstiness = min(max(math.sqrt(dispersion), MIN_BURSTINESS), MAX_BURSTINESS)
    return mean, burstiness


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method (an observed value, never interpolated)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class RunResult:
    """One open-loop run: what was sent, what answered, how fast."""

    sent: int
    ok: int
    errors: int
    seconds: float  # from the start to the last answer (at least the pattern's length)
    throughput: float  # answered calls per second over `seconds`
    p50_ms: float
    p99_ms: float
    lag_ms: float  # the most a call was sent after it was due (the generator falling behind)
    cpu_ms_per_call: float  # this process's CPU time per call sent (the generator's own cost)
    first_error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def run_open_loop(
    send: Callable[[], object], offsets: Sequence[float], *, seconds: float, in_flight: int = 16
) -> RunResult:
    """Call `send()` at each offset (seconds from now) on up to `in_flight` threads. A call that
    raises counts as an error; latencies are measured from the due time. A call whose thread frees up
    more than `seconds` after its due time is not sent and counts as an error: the queue of calls is
    unbounded, so a configuration that keeps up with a tenth of the rate would otherwise hold the
    worker (and hammer the server) ten times the run's length, far past the sweep's time budget."""
    latencies: list[float] = []
    lock = threading.Lock()
    state = {"errors": 0, "lag": 0.0, "last": 0.0, "first_error": ""}
    start = time.perf_counter()
    cpu_start = time.process_time()

    def one(due: float) -> None:
        began = time.perf_counter()
        if began - due > max(seconds, 1.0):
            with lock:
                state["errors"] += 1
                state["first_error"] = state["first_error"] or f"not sent: the generator fell {seconds:g} s behind"
                state["lag"] = max(state["lag"], began - due)
            return
        try:
            send()
        except Exception as err:  # noqa: BLE001 - any failure of a call is an error of the point
            with lock:
                state["errors"] += 1
                state["first_error"] = state["first_error"] or str(err)[:300]
                state["last"] = max(state["last"], time.perf_counter())
            return
        done = time.perf_counter()
        with lock:
            latencies.append((done - due) * 1000.0)
            state["lag"] = max(state["lag"], began - due)
            state["last"] = max(state["last"], done)

    with ThreadPoolExecutor(max_workers=max(1, in_flight), thread_name_prefix="loadgen") as pool:
        for offset in offsets:
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing the arrivals: the generator's clock, not a wait for a condition
            pool.submit(one, due)
    cpu = time.process_time() - cpu_start
    span = max(seconds, (state["last"] or start) - start)
    ok = len(latencies)
    return RunResult(
        sent=len(offsets),
        ok=ok,
        errors=state["errors"],
        seconds=round(span, 3),
        throughput=round(ok / span, 3) if span > 0 else 0.0,
        p50_ms=round(percentile(latencies, 50), 3),
        p99_ms=round(percentile(latencies, 99), 3),
        lag_ms=round(state["lag"] * 1000.0, 3),
        cpu_ms_per_call=round(cpu * 1000.0 / len(offsets), 3) if offsets else 0.0,
        first_error=state["first_error"],
    )


def summarise(runs: Sequence[RunResult]) -> dict:
    """Mean and spread (sample standard deviation, min, max) of a point's repeats."""

    def spread(values: list[float]) -> dict:
        return {
            "mean": round(statistics.fmean(values), 3),
            "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }

    return {
        "throughput": spread([r.throughput for r in runs]),
        "p99_ms": spread([r.p99_ms for r in runs]),
        "p50_ms": spread([r.p50_ms for r in runs]),
        "errors": sum(r.errors for r in runs),
        "sent": sum(r.sent for r in runs),
        "lag_ms_max": max(r.lag_ms for r in runs),
        "cpu_ms_per_call": round(statistics.fmean([r.cpu_ms_per_call for r in runs]), 3),
        "first_error": next((r.first_error for r in runs if r.first_error), ""),
    }
