"""Precision, recall and speed of the de-identifier on the shipped labelled corpus.

    cd /work/deid && .venv/bin/python bench/deid_eval.py [--misses N]

Span-level, overlap match within a type (see apps/gateway/deid/evaluation.py); the exact-match
recall is printed beside it. Speed is characters per second of `detect` over the whole corpus,
best of three passes, single thread. `--misses N` prints up to N missed and N spurious spans per
type (synthetic values only: the corpus holds no real data).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT  # noqa: E402 - bench/ is not a package; puts the repository on sys.path

from apps.gateway.deid import ALL_TYPES, UNSTRUCTURED_TYPES, detect  # noqa: E402
from apps.gateway.deid.evaluation import evaluate, load_corpus  # noqa: E402

CORPUS = ROOT / "tests" / "gateway" / "deid_corpus" / "corpus.jsonl"


def table(counts) -> list[str]:
    rows = [
        "| type | gold | predicted | precision | recall (overlap) | recall (exact) | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for kind in ALL_TYPES:
        c = counts[kind]
        target = "≥ 0.90" if kind in UNSTRUCTURED_TYPES else "≥ 0.98"
        goal = 0.90 if kind in UNSTRUCTURED_TYPES else 0.98
        mark = "" if c.recall >= goal else " **(below)**"
        rows.append(
            f"| {kind} | {c.gold} | {c.predicted} | {c.precision:.3f} | {c.recall:.3f}{mark} | "
            f"{c.exact_recall:.3f} | {target} |"
        )
    gold = sum(c.gold for c in counts.values())
    recalled = sum(c.recalled for c in counts.values())
    pred = sum(c.predicted for c in counts.values())
    correct = sum(c.correct for c in counts.values())
    rows.append(f"| all | {gold} | {pred} | {correct / pred:.3f} | {recalled / gold:.3f} | | |")
    return rows


def show_misses(records, n: int) -> None:
    misses: dict[str, list[str]] = {}
    spurious: dict[str, list[str]] = {}
    for rec in records:
        text, pred = rec["text"], detect(rec["text"])
        for g in rec["spans"]:
            if not any(p.type == g["type"] and p.start < g["end"] and g["start"] < p.end for p in pred):
                misses.setdefault(g["type"], []).append(
                    f"{rec['id']}: {text[max(0, g['start'] - 25) : g['end'] + 5]!r}"
                )
        for p in pred:
            if not any(p.type == g["type"] and p.start < g["end"] and g["start"] < p.end for g in rec["spans"]):
                spurious.setdefault(p.type, []).append(f"{rec['id']}: {text[max(0, p.start - 25) : p.end + 5]!r}")
    for title, found in (("missed", misses), ("spurious", spurious)):
        for kind, items in sorted(found.items()):
            print(f"\n{title} {kind} ({len(items)}):")
            for item in items[:n]:
                print("  ", item)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misses", type=int, default=0)
    args = parser.parse_args()
    records = load_corpus(CORPUS)
    chars = sum(len(r["text"]) for r in records)
    counts = evaluate(records)
    print(f"corpus: {CORPUS.relative_to(ROOT)}: {len(records)} notes, {chars} characters")
    print("\n".join(table(counts)))
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        for r in records:
            detect(r["text"])
        timings.append(time.perf_counter() - t0)
    best = min(timings)
    print(
        f"\nspeed: {chars / best:,.0f} chars/s (best of 3; median {chars / statistics.median(timings):,.0f}); "
        f"{best / len(records) * 1000:.2f} ms per note"
    )
    if args.misses:
        show_misses(records, args.misses)


if __name__ == "__main__":
    main()
