"""Build data/tagger.crfsuite, the model of model.py, from the labelled corpora 1-7 (issue 14).

    .venv/bin/python -m apps.gateway.deid.train [--exclude N ...] [--out PATH]

Reproducible: the corpora are read in a fixed order, the rule features come from the rules of this
tree, and CRFsuite's L-BFGS is deterministic (no random state): the same tree writes the same
model. `--exclude N` leaves corpus N out (bench/deid_model_eval.py's leave-one-corpus-out folds).
corpus8 is never read here: its dev half judges development, its held half the end of the round.

Every note is given twice: with the rules' spans as features and without them. Rules written from
these very corpora find nearly every labelled span in them, so a model trained on the first copy
alone would learn to copy the rules; the second copy makes it learn the words themselves, which is
what it is for on text the rules were not written from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import engine, model
from .canonical import canonicalise
from .evaluation import load_corpus
from .spans import ADDRESS, GEO

ROOT = Path(__file__).resolve().parents[3]
CORPORA = {
    1: ["tests/gateway/deid_corpus/corpus.jsonl"],
    2: ["tests/gateway/deid_corpus2/dev.jsonl", "tests/gateway/deid_corpus2/heldout.jsonl"],
    **{n: [f"tests/gateway/deid_corpus{n}/validation.jsonl"] for n in range(3, 8)},
}
PARAMS = {"c1": 0.05, "c2": 0.01, "max_iterations": 150, "feature.possible_transitions": True}


def records(numbers) -> list[dict]:
    out = []
    for n in sorted(numbers):
        for rel in CORPORA[n]:
            for rec in load_corpus(ROOT / rel):
                out.append({**rec, "corpus": n})
    return out


def sequences(recs: list[dict]):
    """(features, labels) pairs: each note with the rule features, then without. Notes whose
    canonical text differs from the original are skipped (their labels are the original's offsets);
    so are corpus1's notes where the rules find a place (corpus1 labels no places: see
    tests/gateway/test_deid_corpus.py)."""
    was = model._enabled
    model.set_enabled(False)
    try:
        for rec in recs:
            canon = canonicalise(rec["text"])
            if canon.changed:
                continue
            text = canon.text  # what the detectors scan (same offsets: no character resized)
            rules = engine.detect(rec["text"])
            if rec["corpus"] == 1 and any(s.type in (GEO, ADDRESS) for s in rules):
                continue
            for start, end in model.segments(text):
                toks = model.tokens(text, start, end)
                if not toks:
                    continue
                gold = model.labels(toks, rec["spans"])
                inside = [s for s in rules if s.end > start and s.start < end]
                yield model.features(text, toks, model.rule_tags(toks, inside)), gold
                yield model.features(text, toks, None), gold
    finally:
        model.set_enabled(was)


def train(numbers, out: Path, params=None) -> int:
    import pycrfsuite

    trainer = pycrfsuite.Trainer(verbose=False)
    n = 0
    for xseq, yseq in sequences(records(numbers)):
        trainer.append(xseq, yseq)
        n += 1
    trainer.set_params({**PARAMS, **(params or {})})
    out.parent.mkdir(parents=True, exist_ok=True)
    trainer.train(str(out))
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exclude", type=int, action="append", default=[], help="leave corpus N out")
    parser.add_argument("--out", type=Path, default=model.MODEL_PATH)
    args = parser.parse_args()
    numbers = [n for n in CORPORA if n not in args.exclude]
    n = train(numbers, args.out)
    print(f"{args.out}: corpora {numbers}, {n} sequences, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
