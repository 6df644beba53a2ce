"""Triton's Prometheus metrics (its metrics port, ``/metrics``), read by the portal in two places: the
gateway's balancer (apps/gateway/dataplane/balancer.py: one server's load, summed over its models) and the
autoscaler (apps/deployments/autoscale.py: one model's load on one server). No Django: a text parser.

The families read:

- ``nv_inference_pending_request_count`` (gauge): requests received and not yet executing, per model;
- ``nv_inference_queue_duration_us`` (counter): total time requests waited in the queue, per model;
- ``nv_inference_request_success`` (counter): requests answered, per model;
- ``nv_gpu_utilization`` (gauge, 0..1, per GPU) where the server reports a GPU.

Queue time per request is a ratio of two counters' increments between two readings
(:func:`queue_ms_between`): Triton only keeps totals since it started.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

FAMILIES = {
    "nv_inference_pending_request_count": "pending",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_request_success": "success",
    "nv_gpu_utilization": "gpu",
}
MODEL_KEYS = ("pending", "queue_us", "success")
_MODEL_LABEL = re.compile(r'(?:^|,)\s*model="((?:[^"\\]|\\.)*)"')


def _samples(text: str) -> Iterator[tuple[str, str, float]]:
    """(key, labels, value) for each sample of a family in FAMILIES; comments and other families skipped;
    `labels`: the text between the braces."""
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = FAMILIES.get(name)
        if key is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        labels = line[len(name) + 1 : line.rfind("}")] if line[len(name) : len(name) + 1] == "{" else ""
        yield key, labels, value


def parse_metrics(text: str) -> dict[str, float]:
    """The sums over all labels of the families read (GPU utilisation: the mean over the GPUs)."""
    out: dict[str, float] = {}
    gpus = 0
    for line in text.splitlines():  # _samples inlined: the balancer reads every server every 1.5 s
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = FAMILIES.get(name)
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


def parse_model_metrics(text: str) -> dict[str, dict[str, float]]:
    """Per Triton model name, the sums over its versions of pending, queue_us and success."""
    out: dict[str, dict[str, float]] = {}
    for key, labels, value in _samples(text):
        if key not in MODEL_KEYS:
            continue
        match = _MODEL_LABEL.search(labels)
        if match is None:
            continue
        figures = out.setdefault(match.group(1), {})
        figures[key] = figures.get(key, 0.0) + value
    return out


def queue_ms_between(previous: Mapping[str, float] | None, current: Mapping[str, float]) -> float | None:
    """Mean queue time per request (ms) between two readings of one model's counters; None when there is
    no earlier reading, no request was answered in between (idle, or stuck: the caller tells which from
    the pending gauge), or the counters went back (Triton restarted, or the model was reloaded)."""
    if not previous or "queue_us" not in previous or "success" not in previous:
        return None
    if "queue_us" not in current or "success" not in current:
        return None
    done = current["success"] - previous["success"]
    waited = current["queue_us"] - previous["queue_us"]
    if done <= 0 or waited < 0:
        return None
    return waited / done / 1000.0
