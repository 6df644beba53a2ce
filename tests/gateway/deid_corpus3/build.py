#!/usr/bin/env python3
"""Build validation.jsonl from notes_en.txt / notes_zh.txt (deid_corpus3).

Markup: records separated by a line that is exactly '===';
lines starting with '##' are comments; identifiers are '[[TYPE|text]]'.
Validates every span and writes validation.jsonl next to this file.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
TYPES = {
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
SPAN_RE = re.compile(r"\[\[([A-Z_]+)\|([^\[\]|]*)\]\]")
CNID_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CNID_C = "10X98765432"

errors = []


def err(rid, msg):
    errors.append(f"{rid}: {msg}")


def cnid_ok(s):
    if not re.fullmatch(r"\d{17}[\dX]", s):
        return False
    return CNID_C[sum(int(a) * b for a, b in zip(s[:17], CNID_W)) % 11] == s[17]


def luhn_ok(s):
    d = re.sub(r"[ -]", "", s)
    if not d.isdigit() or not 12 <= len(d) <= 19:
        return False
    tot = 0
    for i, ch in enumerate(reversed(d)):
        x = int(ch)
        if i % 2 == 1:
            x *= 2
            if x > 9:
                x -= 9
        tot += x
    return tot % 10 == 0


def parse_records(path):
    recs, cur = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line == "===":
            recs.append(cur)
            cur = []
        elif line.startswith("##"):
            continue
        else:
            cur.append(line)
    recs.append(cur)
    out = []
    for lines in recs:
        raw = "\n".join(lines).strip("\n")
        if raw.strip():
            out.append(raw)
    return out


def convert(rid, raw):
    text, spans, pos = [], [], 0
    n = 0
    for m in SPAN_RE.finditer(raw):
        text.append(raw[pos : m.start()])
        n += len(raw[pos : m.start()])
        typ, val = m.group(1), m.group(2)
        if typ not in TYPES:
            err(rid, f"unknown type {typ!r}")
        if not val:
            err(rid, f"empty span {typ}")
        elif val != val.strip():
            err(rid, f"padded span {typ}|{val!r}")
        if typ == "CN_ID" and not cnid_ok(val):
            err(rid, f"bad CN_ID check char {val}")
        if typ == "BANK_CARD" and not luhn_ok(val):
            err(rid, f"bank card fails Luhn {val}")
        spans.append({"start": n, "end": n + len(val), "type": typ})
        text.append(val)
        n += len(val)
        pos = m.end()
    text.append(raw[pos:])
    text = "".join(text)
    if "[[" in text or "]]" in text:
        err(rid, "stray [[ or ]] (nesting, bad type, or unclosed markup)")
    for a, b in zip(spans, spans[1:]):
        if b["start"] < a["end"]:
            err(rid, "overlapping spans")
    return text, spans


def main():
    rows, seen = [], {}
    counts = {}
    for lang in ("en", "zh"):
        recs = parse_records(HERE / f"notes_{lang}.txt")
        c = Counter()
        for i, raw in enumerate(recs, 1):
            rid = f"{lang}-{i:04d}"
            text, spans = convert(rid, raw)
            if text in seen:
                err(rid, f"duplicate text of {seen[text]}")
            seen[text] = rid
            for s in spans:
                c[s["type"]] += 1
            rows.append({"id": rid, "lang": lang, "text": text, "spans": spans})
        counts[lang] = (len(recs), c)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        print(f"{len(errors)} error(s); validation.jsonl NOT written", file=sys.stderr)
        return 1
    with open(HERE / "validation.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{'':12}{'en':>6}{'zh':>6}{'total':>7}")
    ne, nz = counts["en"][0], counts["zh"][0]
    print(f"{'records':12}{ne:>6}{nz:>6}{ne + nz:>7}")
    for t in sorted(TYPES):
        e, z = counts["en"][1][t], counts["zh"][1][t]
        print(f"{t:12}{e:>6}{z:>6}{e + z:>7}")
    se, sz = sum(counts["en"][1].values()), sum(counts["zh"][1].values())
    print(f"{'spans':12}{se:>6}{sz:>6}{se + sz:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
