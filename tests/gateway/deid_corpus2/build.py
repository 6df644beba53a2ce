"""Build dev.jsonl and heldout.jsonl from the hand-labelled notes (notes_en.txt, notes_zh.txt).

Markup: [[TYPE|text]] marks an identifier span; records are separated by a line
containing only '==='; lines starting with '##' are comments.  Output records:
{"id", "lang", "text", "spans": [{"start", "end", "type"}]} with character offsets
into "text" (end exclusive).  Records alternate between dev (even index within a
language) and heldout (odd index).  Run: python tests/gateway/deid_corpus2/build.py
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent

LABELS = {
    "NAME",
    "ADDRESS",
    "GEO",
    "ZIP",
    "DATE",
    "AGE",
    "PHONE",
    "FAX",
    "CN_MOBILE",
    "EMAIL",
    "URL",
    "IP",
    "SSN",
    "CN_ID",
    "BANK_CARD",
    "MRN",
    "HEALTH_PLAN",
    "ACCOUNT",
    "LICENSE",
    "VEHICLE",
    "DEVICE",
}
SOURCES = (("en", "notes_en.txt"), ("zh", "notes_zh.txt"))
MARK = re.compile(r"\[\[([A-Z_]+)\|([^\]|]*)\]\]")

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id_ok(s: str) -> bool:
    s = s.upper()
    if not re.fullmatch(r"\d{17}[\dX]", s):
        return False
    return "10X98765432"[sum(int(a) * w for a, w in zip(s[:17], _W)) % 11] == s[17]


def luhn_ok(s: str) -> bool:
    d = [int(c) for c in s if c.isdigit()]
    total = 0
    for i, x in enumerate(reversed(d)):
        if i % 2:
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return len(d) >= 12 and total % 10 == 0


class MarkupError(ValueError):
    pass


def parse_record(block: str, where: str) -> tuple[str, list[dict]]:
    out: list[str] = []
    spans: list[dict] = []
    pos = 0
    length = 0
    for m in MARK.finditer(block):
        before = block[pos : m.start()]
        out.append(before)
        length += len(before)
        typ, val = m.group(1), m.group(2)
        if typ not in LABELS:
            raise MarkupError(f"{where}: unknown type {typ!r}")
        if not val or val != val.strip():
            raise MarkupError(f"{where}: empty or padded span {val!r}")
        spans.append({"start": length, "end": length + len(val), "type": typ})
        out.append(val)
        length += len(val)
        pos = m.end()
    out.append(block[pos:])
    text = "".join(out)
    if "[[" in text or "]]" in text:
        raise MarkupError(f"{where}: stray markup in {text!r}")
    for a, b in zip(spans, spans[1:]):
        if b["start"] < a["end"]:
            raise MarkupError(f"{where}: overlapping spans")
    for s in spans:
        val = text[s["start"] : s["end"]]
        if s["type"] == "CN_ID" and not cn_id_ok(val):
            raise MarkupError(f"{where}: bad 身份证 check digit {val}")
        if s["type"] == "BANK_CARD" and not luhn_ok(val):
            raise MarkupError(f"{where}: bank card fails Luhn {val}")
    return text, spans


def load(lang: str, fname: str) -> list[dict]:
    raw = (HERE / fname).read_text(encoding="utf-8")
    lines = [ln for ln in raw.splitlines() if not ln.startswith("##")]
    blocks: list[list[str]] = [[]]
    for ln in lines:
        if ln.strip() == "===":
            blocks.append([])
        else:
            blocks[-1].append(ln)
    records = []
    for block_lines in blocks:
        block = "\n".join(block_lines).strip()
        if not block:
            continue
        idx = len(records)
        text, spans = parse_record(block, f"{fname} record {idx}")
        records.append({"id": f"{lang}-{idx:04d}", "lang": lang, "text": text, "spans": spans})
    return records


def main() -> int:
    dev: list[dict] = []
    held: list[dict] = []
    seen_text: set[str] = set()
    for lang, fname in SOURCES:
        for i, rec in enumerate(load(lang, fname)):
            if rec["text"] in seen_text:
                raise MarkupError(f"duplicate record text: {rec['id']}")
            seen_text.add(rec["text"])
            (dev if i % 2 == 0 else held).append(rec)
    for name, recs in (("dev.jsonl", dev), ("heldout.jsonl", held)):
        with open(HERE / name, "w", encoding="utf-8") as f:
            for rec in recs:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    # summary
    table: dict[tuple[str, str], Counter] = {}
    for half, recs in (("dev", dev), ("heldout", held)):
        for rec in recs:
            c = table.setdefault((half, rec["lang"]), Counter())
            c["#records"] += 1
            for s in rec["spans"]:
                c[s["type"]] += 1
    cols = [("dev", "en"), ("dev", "zh"), ("heldout", "en"), ("heldout", "zh")]
    print(f"{'type':<12}" + "".join(f"{half + '/' + lang:>12}" for half, lang in cols) + f"{'total':>8}")
    for t in ["#records"] + sorted(LABELS):
        row = [table.get(k, Counter())[t] for k in cols]
        print(f"{t:<12}" + "".join(f"{v:>12}" for v in row) + f"{sum(row):>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
