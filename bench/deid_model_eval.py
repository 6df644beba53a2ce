"""The trained tagger beside the rules (apps/gateway/deid/model.py): precision and recall per type,
rules alone and rules + model, leave-one-corpus-out over corpora 1-7 and on corpus8's dev half.

    .venv/bin/python bench/deid_model_eval.py [--folds 1,2,...] [--thresholds 0.5,0.7] [--no-dev]

Fold k trains a model on the six other corpora (apps.gateway.deid.train, into a temporary file)
and scores corpus k with it. corpus8's dev half (odd ids) is scored with a model trained on all
of 1-7 (the shipped one is built the same way: `python -m apps.gateway.deid.train`). corpus8's
held half is never read here: the lead scores it once (`bench/deid_eval.py --half held`).
corpus1 labels no places: it is scored on its labelled types only, as its test does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT  # noqa: E402 - bench/ is not a package; puts the repository on sys.path

from apps.gateway.deid import ALL_TYPES, detect, model, train  # noqa: E402
from apps.gateway.deid.canonical import canonicalise  # noqa: E402
from apps.gateway.deid.evaluation import Counts, load_corpus, score_record  # noqa: E402
from apps.gateway.deid.spans import ADDRESS, AGE, GEO, NAME  # noqa: E402

SHOWN = (NAME, GEO, ADDRESS, AGE)
CORPUS8 = ROOT / "tests" / "gateway" / "deid_corpus8" / "validation.jsonl"


def dev_half(records: list[dict]) -> list[dict]:
    """Odd ids only (bench/deid_eval.py's --half dev)."""
    out = []
    for rec in records:
        digits = "".join(ch for ch in rec["id"].rsplit("-", 1)[-1] if ch.isdigit())
        if int(digits) % 2 == 1:
            out.append(rec)
    return out


def score(records, path: Path, configs, types=None) -> dict:
    """{"rules": counts, (threshold, veto): counts, ...} for `records`, with the model at `path`."""
    kinds = frozenset(types or ALL_TYPES)
    out = {"rules": {}, **{c: {} for c in configs}}
    model.use_model(path)
    for rec in records:
        text = rec["text"]
        model.set_enabled(False)
        rules = detect(text, types)
        score_record(rec, rules, out["rules"])
        model.set_enabled(True)
        canon = canonicalise(text)
        for t, v in configs:
            if canon.changed:  # offsets differ: through the engine (at its settings)
                merged = detect(text, types)
            else:
                merged = model.merge(canon.text, rules, kinds, threshold=t, veto=v)
            score_record(rec, merged, out[(t, v)])
    return out


def rows(name: str, result: dict, configs) -> list[str]:
    lines = []
    for kind in SHOWN:
        c = result["rules"].get(kind, Counts())
        if not c.gold:
            continue
        cells = [f"{c.precision:.3f} / {c.recall:.3f}"]
        for conf in configs:
            m = result[conf].get(kind, Counts())
            cells.append(f"{m.precision:.3f} / {m.recall:.3f}")
        lines.append(f"| {name} | {kind} | {c.gold} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", default="1,2,3,4,5,6,7")
    parser.add_argument("--thresholds", default="default", help="the model's spans kept above these")
    parser.add_argument("--vetoes", default="default", help="and the inversion pass's names vetoed above these")
    parser.add_argument("--no-dev", action="store_true", help="skip corpus8's dev half")
    parser.add_argument("--model", type=Path, help="score corpus8's dev half with this model file (default: train one)")
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",") if f]
    # "default": the per-type thresholds and the veto model.py ships with; "none": no veto
    thresholds = [None if t == "default" else float(t) for t in args.thresholds.split(",")]
    vetoes = [model.VETO if v == "default" else None if v == "none" else float(v) for v in args.vetoes.split(",")]
    configs = [(t, v) for t in thresholds for v in vetoes]
    header = (
        "| scored on | type | gold | rules: P / R | "
        + " | ".join(f"+ model ≥ {t or 'per type'}, veto {v}: P / R" for t, v in configs)
        + " |"
    )
    lines = [header, "|---|---|---:|---:|" + "---:|" * len(configs)]
    with tempfile.TemporaryDirectory() as tmp:
        for k in folds:
            path = Path(tmp) / f"fold{k}.crfsuite"
            train.train([n for n in train.CORPORA if n != k], path)
            recs = train.records([k])
            types = [t for t in ALL_TYPES if t not in (ADDRESS, GEO)] if k == 1 else None
            lines += rows(f"corpus{k} (trained on the other six)", score(recs, path, configs, types), configs)
            print("\n".join(lines[-len(SHOWN) :]), flush=True)
        if not args.no_dev:
            path = args.model or Path(tmp) / "all.crfsuite"
            if not args.model:
                train.train(list(train.CORPORA), path)
            recs = dev_half(load_corpus(CORPUS8))
            lines += rows("corpus8 dev (trained on 1-7)", score(recs, path, configs), configs)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
