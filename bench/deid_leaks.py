"""Every gold span that would survive redaction in part, with its context, sorted by type.

    .venv/bin/python bench/deid_leaks.py tests/gateway/deid_corpus3/validation.jsonl [TYPE ...]

A span leaks when any of its non-space characters is outside every detected span (of any type):
what `deid_eval.py` counts in its "leaked" column, listed one per line to sort into families.
With TYPE arguments, only those types. Synthetic corpora only (they hold no real data)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT  # noqa: E402,F401 - puts the repository on sys.path

from apps.gateway.deid import detect  # noqa: E402
from apps.gateway.deid.evaluation import load_corpus  # noqa: E402


def main() -> None:
    path, only = Path(sys.argv[1]), set(sys.argv[2:])
    rows = []
    for rec in load_corpus(path):
        text, found = rec["text"], detect(rec["text"])
        for g in rec["spans"]:
            if only and g["type"] not in only:
                continue
            s, e = g["start"], g["end"]
            if any(not text[i].isspace() and not any(p.start <= i < p.end for p in found) for i in range(s, e)):
                before, after = text[max(0, s - 40) : s], text[e : e + 25]
                rows.append(f"{g['type']:12} {rec['id']:10} {text[s:e]!r:36} …{before!r} ⟦⟧ {after!r}")
    print("\n".join(sorted(rows)))
    print(f"\n{len(rows)} leaked spans")


if __name__ == "__main__":
    main()
