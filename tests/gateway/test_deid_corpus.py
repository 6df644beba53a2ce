"""The shipped corpus: its labels are what make_corpus.py writes, and the detector meets the targets on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.gateway.deid import ALL_TYPES, UNSTRUCTURED_TYPES
from apps.gateway.deid.evaluation import evaluate, load_corpus
from apps.gateway.deid.spans import ADDRESS, GEO
from tests.gateway.deid_corpus import make_corpus

CORPUS = Path(__file__).with_name("deid_corpus") / "corpus.jsonl"
# This corpus predates geography: its addresses and cities are not labelled, so it is scored on
# the types it labels only, with detection limited to them (a GEO span found there must neither
# count as a false positive nor displace a labelled span). Geography is scored on deid_corpus2.
LABELLED_TYPES = tuple(kind for kind in ALL_TYPES if kind not in (ADDRESS, GEO))


@pytest.fixture(scope="module")
def records():
    return load_corpus(CORPUS)


@pytest.fixture(scope="module")
def counts(records):
    return evaluate(records, LABELLED_TYPES)


def test_corpus_is_what_the_generator_writes(records):
    assert [json.loads(json.dumps(r, ensure_ascii=False)) for r in make_corpus.build()] == records


def test_corpus_has_enough_instances_of_every_type(records):
    per_type = {kind: 0 for kind in LABELLED_TYPES}
    for r in records:
        for s in r["spans"]:
            per_type[s["type"]] += 1
            assert 0 <= s["start"] < s["end"] <= len(r["text"])
    assert len(records) >= 150
    assert min(per_type.values()) >= 30, per_type
    assert {r["lang"] for r in records} == {"en", "zh"}


@pytest.mark.parametrize("kind", LABELLED_TYPES)
def test_recall_meets_target(counts, kind):
    target = 0.90 if kind in UNSTRUCTURED_TYPES else 0.98
    assert counts[kind].recall >= target, f"{kind}: recall {counts[kind].recall:.3f} < {target}"


@pytest.mark.parametrize("kind", LABELLED_TYPES)
def test_precision_stays_high(counts, kind):
    assert counts[kind].precision >= 0.95, f"{kind}: precision {counts[kind].precision:.3f}"
