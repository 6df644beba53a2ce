"""Span-level precision and recall of the detector against a labelled corpus.

Matching is by overlap within a type: a labelled span is recalled when a detected span of the
same type overlaps it by at least one character, and a detected span is correct when it overlaps
a labelled span of the same type. Exact matches (same start, end and type) are counted as well.
Used by bench/deid_eval.py and by the regression test over the shipped corpus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .engine import detect
from .spans import ALL_TYPES, Span


@dataclass
class Counts:
    gold: int = 0
    predicted: int = 0
    recalled: int = 0  # gold spans overlapped by a prediction of the same type
    correct: int = 0  # predictions overlapping a gold span of the same type
    exact: int = 0  # gold spans predicted with identical offsets

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.recalled / self.gold if self.gold else 1.0

    @property
    def exact_recall(self) -> float:
        return self.exact / self.gold if self.gold else 1.0


def load_corpus(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _overlaps(a_start: int, a_end: int, b: Iterable[tuple[int, int]]) -> bool:
    return any(a_start < end and start < a_end for start, end in b)


def score_record(record: dict, predicted: list[Span], counts: dict[str, Counts]) -> None:
    gold_by_type: dict[str, list[tuple[int, int]]] = {}
    for s in record["spans"]:
        gold_by_type.setdefault(s["type"], []).append((s["start"], s["end"]))
    pred_by_type: dict[str, list[tuple[int, int]]] = {}
    for p in predicted:
        pred_by_type.setdefault(p.type, []).append((p.start, p.end))
    for kind in set(gold_by_type) | set(pred_by_type):
        c = counts.setdefault(kind, Counts())
        gold, pred = gold_by_type.get(kind, []), pred_by_type.get(kind, [])
        c.gold += len(gold)
        c.predicted += len(pred)
        c.recalled += sum(_overlaps(s, e, pred) for s, e in gold)
        c.correct += sum(_overlaps(s, e, gold) for s, e in pred)
        c.exact += len(set(gold) & set(pred))


def evaluate(records: list[dict], types=None) -> dict[str, Counts]:
    """`types`: detect only these (a corpus that labels some types only is scored on those)."""
    counts: dict[str, Counts] = {kind: Counts() for kind in (types or ALL_TYPES)}
    for record in records:
        score_record(record, detect(record["text"], types), counts)
    return counts
