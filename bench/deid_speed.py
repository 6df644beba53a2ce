"""CPU time of `detect` per MiB, for comparing two versions of the de-identifier in one session.

    .venv/bin/python bench/deid_speed.py [--tree PATH] [--corpus REL] [--repeat N]

`--tree` is a checkout of the repository whose apps/gateway/deid is measured (default: this one),
so that a base commit (`git archive <commit> | tar -x -C /tmp/base`) and the working tree can be
alternated, each in a fresh process, on the same corpus file. Prints the best and the median of
`--repeat` CPU times (time.process_time, one thread) for: per-note calls, the notes concatenated
into one text, and 1 MiB of UTF-8 made by repeating them (one call, the de-identifier's length
limit) — the same three measurements as bench/deid_eval.py's last lines, with more repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _cpu(func, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        func()
        times.append(time.process_time() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path, default=HERE)
    parser.add_argument("--corpus", default="tests/gateway/deid_corpus6/validation.jsonl")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))
    from apps.gateway.deid import detect, warm
    from apps.gateway.deid.evaluation import load_corpus

    notes = [r["text"] for r in load_corpus(HERE / args.corpus)]
    joined = "\n".join(notes)
    mib = 1 << 20
    unit = (joined + "\n").encode("utf-8")
    big = (unit * (mib // len(unit) + 1))[:mib].decode("utf-8", "ignore")
    warm()  # as a server does at start: the gazetteers and the Hyperscan databases
    detect(big)  # first call: lazily loaded tables
    utf8 = len(joined.encode("utf-8"))
    size = len(big.encode("utf-8"))
    per_note = _cpu(lambda: [detect(t) for t in notes], args.repeat)
    whole = _cpu(lambda: detect(joined), args.repeat)
    one = _cpu(lambda: detect(big), args.repeat)
    label = tree.name if tree != HERE else "this tree"
    print(
        f"{label}: {args.corpus}, {len(notes)} notes; best / median of {args.repeat} (CPU)\n"
        f"  per-note calls: {per_note[0] / len(notes) * 1e6:.0f} / {per_note[1] / len(notes) * 1e6:.0f} µs per note"
        f" ({utf8 / per_note[0] / 1e6:.3f} MB/s best)\n"
        f"  concatenated notes ({utf8:,} B), one call: {utf8 / whole[0] / 1e6:.3f} / {utf8 / whole[1] / 1e6:.3f} MB/s\n"
        f"  1 MiB, one call: {one[0] * mib / size:.3f} / {one[1] * mib / size:.3f} s of CPU per MiB"
        f" ({size / one[0] / 1e6:.3f} / {size / one[1] / 1e6:.3f} MB/s)"
    )


if __name__ == "__main__":
    main()
