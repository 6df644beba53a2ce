"""Build validation.jsonl from the hand-labelled notes_en.txt / notes_zh.txt.

Written blind (see README.md). Run:
    /work/main/.venv/bin/python tests/gateway/deid_corpus4/build.py
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

SPAN_RE = re.compile(r"\[\[([A-Z_]+)\|([^\[\]|]*)\]\]")
CN_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CN_ID_CHECK = "10X98765432"


class CorpusError(Exception):
    pass


def cn_id_ok(value: str) -> bool:
    if not re.fullmatch(r"\d{17}[\dX]", value):
        return False
    total = sum(int(c) * w for c, w in zip(value[:17], CN_ID_WEIGHTS))
    return CN_ID_CHECK[total % 11] == value[17]


def luhn_ok(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def read_records(path: Path) -> list[str]:
    records: list[str] = []
    current: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
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
        if "[[" in before or "]]" in before:
            raise CorpusError(f"{where}: stray or nested brackets near {before[-40:]!r}")
        out.append(before)
        length += len(before)
        label, value = m.group(1), m.group(2)
        if label not in LABELS:
            raise CorpusError(f"{where}: unknown label {label}")
        if not value or value != value.strip():
            raise CorpusError(f"{where}: empty or padded span {value!r}")
        if label == "CN_ID" and not cn_id_ok(value):
            raise CorpusError(f"{where}: bad 身份证 check character {value}")
        if label == "BANK_CARD" and not luhn_ok(value):
            raise CorpusError(f"{where}: card fails Luhn {value}")
        spans.append({"start": length, "end": length + len(value), "type": label})
        out.append(value)
        length += len(value)
        pos = m.end()
    rest = marked[pos:]
    if "[[" in rest or "]]" in rest or "|]]" in rest:
        raise CorpusError(f"{where}: stray brackets near {rest[:40]!r}")
    out.append(rest)
    text = "".join(out)
    for a, b in zip(spans, spans[1:]):
        if a["end"] > b["start"]:
            raise CorpusError(f"{where}: overlapping spans")
    return text, spans


def main() -> int:
    rows: list[dict] = []
    seen: set[str] = set()
    counts: dict[str, Counter] = {"en": Counter(), "zh": Counter()}
    n_records = Counter()
    negative_only = Counter()
    for lang in ("en", "zh"):
        path = HERE / f"notes_{lang}.txt"
        for i, marked in enumerate(read_records(path), start=1):
            rid = f"{lang}-{i:04d}"
            text, spans = parse_record(marked, f"{path.name} {rid}")
            if text in seen:
                raise CorpusError(f"{rid}: duplicate record text")
            seen.add(text)
            for s in spans:
                counts[lang][s["type"]] += 1
            n_records[lang] += 1
            if not spans:
                negative_only[lang] += 1
            rows.append({"id": rid, "lang": lang, "text": text, "spans": spans})
    out = HERE / "validation.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    print(f"{'type':<12} {'en':>5} {'zh':>5} {'total':>6}")
    for label in sorted(LABELS):
        en, zh = counts["en"][label], counts["zh"][label]
        print(f"{label:<12} {en:>5} {zh:>5} {en + zh:>6}")
    te, tz = sum(counts["en"].values()), sum(counts["zh"].values())
    print(f"{'ALL SPANS':<12} {te:>5} {tz:>5} {te + tz:>6}")
    print(f"{'records':<12} {n_records['en']:>5} {n_records['zh']:>5}")
    print(f"{'neg-only':<12} {negative_only['en']:>5} {negative_only['zh']:>5}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CorpusError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
