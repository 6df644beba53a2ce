"""The latency histogram's arithmetic: which bucket a latency falls in, merging bucket lists and
reading a percentile back from them (linear within the bucket, so within one bucket's width)."""

from bisect import bisect_right

from .models import BUCKETS, LATENCY_BOUNDS_MS


def bucket_of(latency_ms: float) -> int:
    """Index of the bucket [bound before, bound) that holds `latency_ms` (PostgreSQL's width_bucket
    over the same bounds gives the same index)."""
    return bisect_right(LATENCY_BOUNDS_MS, latency_ms)


def empty() -> list[int]:
    return [0] * BUCKETS


def add(into: list[int], other: list[int]) -> list[int]:
    """`into` plus `other`, bucket by bucket (a stored list shorter than BUCKETS counts as zeros)."""
    for i, n in enumerate(other[:BUCKETS]):
        into[i] += n
    return into


def percentile(buckets: list[int], q: float) -> float | None:
    """The q-th quantile (0 < q <= 1) of the latencies counted in `buckets`, in ms; None when empty.
    Interpolated linearly inside the bucket the rank falls in; a rank in the open top bucket reads
    as the last bound (the histogram knows no more)."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            if i >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            low = 0.0 if i == 0 else float(LATENCY_BOUNDS_MS[i - 1])
            return low + (LATENCY_BOUNDS_MS[i] - low) * (rank - seen) / n
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])
