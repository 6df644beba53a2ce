"""Dump the spans `detect` finds on a fixed set of texts, to check that a change to how detection
runs (not what it detects) leaves its output identical.

    .venv/bin/python bench/deid_spans.py > /tmp/before.txt   # on the old code
    .venv/bin/python bench/deid_spans.py > /tmp/after.txt    # on the new code
    cmp /tmp/before.txt /tmp/after.txt

Texts: every note of the first corpus and of the dev half of the second (never the held-out
half), every spelling of the adversarial test, the concatenated notes (spans across notes), and
a deterministic fuzz of note fragments mixed with digits of other scripts, invisible characters,
separators, Han characters and no-digit / no-Han / ASCII-only variants, each also with a subset
of types. Prints one line per text: an id and the spans (offsets and type, never the text).
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT  # noqa: E402 - puts the repository on sys.path

from apps.gateway.deid import ALL_TYPES, detect  # noqa: E402
from apps.gateway.deid.evaluation import load_corpus  # noqa: E402

CORPORA = [
    ROOT / "tests" / "gateway" / "deid_corpus" / "corpus.jsonl",
    ROOT / "tests" / "gateway" / "deid_corpus2" / "dev.jsonl",
]
NOISE = [
    "\u200b", "\u00ad", "\u034f", "\ufe0f", "\U000e0041", "\u3164", "\u2028", "\u00a0", "\u3000", "\u2013",
    "\u2212", "\uff0e", "\u0663", "\u0e52", "\u096a", "\uff17", "\U0001d7d0", "ﬁ", "①", "½", "\U0001f600",
    "患者", "王", "岁", "市", "区", "路", "号", "，", "。", "\n", " ", "-", ".", "/", "9", "95", "(", ")",
]  # fmt: skip


def texts():
    notes = []
    for path in CORPORA:
        for rec in load_corpus(path):
            notes.append(rec["text"])
            yield f"{path.parent.name}/{rec['id']}", rec["text"]
    sys.path.insert(0, str(ROOT))
    from tests.gateway import test_deid_adversarial as adv

    for k, (sample, cls, spelled) in enumerate(adv._all_cases()):
        yield f"adv/{k}/{sample.kind}/{cls}", sample.prefix + spelled + sample.suffix
    for k, neg in enumerate(adv.NEGATIVES):
        yield f"neg/{k}", neg
    yield "concat/all", "\n".join(notes)
    rng = random.Random(14)
    for k in range(3000):
        a, b = rng.choice(notes), rng.choice(notes)
        i, j = sorted(rng.sample(range(len(a) + 1), 2)) if len(a) > 1 else (0, len(a))
        pieces = list(a[i:j])
        for _ in range(rng.randint(0, 6)):
            pieces.insert(rng.randint(0, len(pieces)), rng.choice(NOISE))
        text = "".join(pieces) + rng.choice(["", " ", "\n", "，"]) + b[: rng.randint(0, len(b))]
        variant = k % 5
        if variant == 1:
            text = "".join(c for c in text if not c.isdigit())
        elif variant == 2:
            text = "".join(c for c in text if not ("\u4e00" <= c <= "\u9fff"))
        elif variant == 3:
            text = text.encode("ascii", "ignore").decode()
        yield f"fuzz/{k}", text
    for k, note in enumerate(notes[:200]):
        types = random.Random(k).sample(ALL_TYPES, 1 + k % 6)
        yield f"types/{k}/{','.join(sorted(types))}", (note, types)


def main() -> None:
    digest = hashlib.sha256()
    n = 0
    for ident, text in texts():
        types = None
        if isinstance(text, tuple):
            text, types = text
        spans = detect(text, types)
        line = f"{ident}\t" + " ".join(f"{s.start}-{s.end}:{s.type}:{s.priority}" for s in spans)
        print(line)
        digest.update(line.encode())
        n += 1
    print(f"# {n} texts, sha256 {digest.hexdigest()}", file=sys.stderr)


if __name__ == "__main__":
    main()
