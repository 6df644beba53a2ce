"""Build validation.jsonl from the hand-labelled notes_en.txt / notes_zh.txt.

Markup: records separated by a line that is exactly ``===``; lines starting with
``##`` are comments; identifiers are written inline as ``[[TYPE|text]]``.
Run: /work/main/.venv/bin/python tests/gateway/deid_corpus8/build.py
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent

LABELS = (
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
)

SPAN_RE = re.compile(r"\[\[([^\[\]|]*)\|([^\[\]]*)\]\]")
CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CN_ID_CHECK = "10X98765432"


class CorpusError(Exception):
    pass


def cn_id_ok(value: str) -> bool:
    v = value.upper()
    if not re.fullmatch(r"\d{17}[\dX]", v):
        return False
    total = sum(int(c) * w for c, w in zip(v[:17], CN_ID_WEIGHTS))
    return CN_ID_CHECK[total % 11] == v[17]


def luhn_ok(value: str) -> bool:
    digits = re.sub(r"[\s-]", "", value)
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def split_records(raw: str) -> list[str]:
    records: list[str] = []
    current: list[str] = []
    for line in raw.splitlines():
        if line == "===":
            records.append("\n".join(current).strip("\n"))
            current = []
        elif line.startswith("##"):
            continue
        else:
            current.append(line)
    records.append("\n".join(current).strip("\n"))
    return [r for r in records if r.strip()]


def parse_record(marked: str, where: str) -> tuple[str, list[dict]]:
    out: list[str] = []
    spans: list[dict] = []
    pos = 0
    length = 0
    for m in SPAN_RE.finditer(marked):
        before = marked[pos : m.start()]
        out.append(before)
        length += len(before)
        typ, value = m.group(1), m.group(2)
        if typ not in LABELS:
            raise CorpusError(f"{where}: unknown type {typ!r}")
        if not value:
            raise CorpusError(f"{where}: empty span of type {typ}")
        if value != value.strip():
            raise CorpusError(f"{where}: span padded with whitespace: {value!r}")
        if typ == "CN_ID" and not cn_id_ok(value):
            raise CorpusError(f"{where}: bad 身份证 check character: {value}")
        if typ == "BANK_CARD" and not luhn_ok(value):
            raise CorpusError(f"{where}: card fails Luhn: {value}")
        spans.append({"start": length, "end": length + len(value), "type": typ})
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(marked[pos:])
    text = "".join(out)
    for token in ("[[", "]]"):
        if token in text:
            raise CorpusError(f"{where}: stray {token!r} (nested or malformed span)")
    for a, b in zip(spans, spans[1:]):
        if b["start"] < a["end"]:
            raise CorpusError(f"{where}: overlapping spans")
    return text, spans


def build() -> list[dict]:
    rows: list[dict] = []
    seen: dict[str, str] = {}
    for lang in ("en", "zh"):
        raw = (HERE / f"notes_{lang}.txt").read_text(encoding="utf-8")
        for n, marked in enumerate(split_records(raw), start=1):
            rid = f"{lang}-{n:04d}"
            text, spans = parse_record(marked, rid)
            if text in seen:
                raise CorpusError(f"{rid}: duplicate of {seen[text]}")
            seen[text] = rid
            rows.append({"id": rid, "lang": lang, "text": text, "spans": spans})
    return rows


def count_table(rows: list[dict]) -> str:
    counts: Counter = Counter()
    records: Counter = Counter()
    negatives: Counter = Counter()
    for row in rows:
        records[row["lang"]] += 1
        if not row["spans"]:
            negatives[row["lang"]] += 1
        for span in row["spans"]:
            counts[(span["type"], row["lang"])] += 1
    lines = [f"{'type':<12} {'en':>5} {'zh':>5} {'total':>6}"]
    for typ in LABELS:
        en, zh = counts[(typ, "en")], counts[(typ, "zh")]
        lines.append(f"{typ:<12} {en:>5} {zh:>5} {en + zh:>6}")
    en_total = sum(v for (_, lang), v in counts.items() if lang == "en")
    zh_total = sum(v for (_, lang), v in counts.items() if lang == "zh")
    lines.append(f"{'spans':<12} {en_total:>5} {zh_total:>5} {en_total + zh_total:>6}")
    lines.append(f"{'records':<12} {records['en']:>5} {records['zh']:>5} {records['en'] + records['zh']:>6}")
    lines.append(
        f"{'no-span rec':<12} {negatives['en']:>5} {negatives['zh']:>5} {negatives['en'] + negatives['zh']:>6}"
    )
    return "\n".join(lines)


def main() -> int:
    try:
        rows = build()
    except CorpusError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    with open(HERE / "validation.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(count_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
