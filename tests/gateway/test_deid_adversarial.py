"""An attacker's spellings of every structured identifier: nothing of the identifier survives.

For each structured type, a sample identifier in a realistic sentence is rewritten class by class:
its digits in other scripts (Arabic-Indic, Extended Arabic-Indic, Devanagari, Bengali, Thai,
Khmer, Myanmar, full-width, mathematical bold), each class of invisible code point inserted
between every pair of its characters (and once, in the middle), each class of separator between
its digit groups (ASCII, Unicode dashes and minus signs, non-breaking, narrow, ideographic, line
and paragraph separators; mixed), and combinations of the three. After `deidentify(…, "redact")`:

- the text around the identifier is unchanged, character for character (the replacement was
  mapped back onto the original offsets and covered the invisible characters inside);
- between that prefix and suffix, once the output is canonicalised (so Thai digits that "survive"
  as Thai digits count), only replacement tokens remain: no letter or digit of the identifier.

Leaks are counted per (type, class) and reported all at once, not stopped at the first.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.gateway.deid import deidentify
from apps.gateway.deid.canonical import canonical_text
from apps.gateway.deid.checksums import cn_id_check_char, luhn_ok

DIGIT_SCRIPTS = {
    "arabic-indic": 0x0660,
    "extended-arabic-indic": 0x06F0,
    "devanagari": 0x0966,
    "bengali": 0x09E6,
    "thai": 0x0E50,
    "khmer": 0x17E0,
    "myanmar": 0x1040,
    "fullwidth": 0xFF10,
    "math-bold": 0x1D7CE,
}
INVISIBLES = {
    "ZWSP": "\u200b",
    "ZWNJ": "\u200c",
    "ZWJ": "\u200d",
    "LRM": "\u200e",
    "RLM": "\u200f",
    "ALM": "\u061c",
    "LRE+PDF": "\u202a\u202c",
    "RLO": "\u202e",
    "LRI+PDI": "\u2066\u2069",
    "word joiner": "\u2060",
    "invisible times": "\u2062",
    "soft hyphen": "\u00ad",
    "BOM": "\ufeff",
    "CGJ": "\u034f",
    "Mongolian FVS1": "\u180b",
    "Mongolian FVS4": "\u180f",
    "Mongolian vowel separator": "\u180e",
    "VS16": "\ufe0f",
    "VS17": "\U000e0100",
    "tag A": "\U000e0041",
    "tag cancel": "\U000e007f",
    "Hangul filler": "\u3164",
    "Hangul choseong filler": "\u115f",
    "Hangul jungseong filler": "\u1160",
    "halfwidth Hangul filler": "\uffa0",
    "Khmer inherent vowel": "\u17b4",
    "interlinear annotation": "\ufff9",
    "Arabic number sign": "\u0600",
}
SEPARATORS = {
    "hyphen-minus": "-",
    "space": " ",
    "dot": ".",
    "U+2010 hyphen": "\u2010",
    "U+2011 non-breaking hyphen": "\u2011",
    "U+2012 figure dash": "\u2012",
    "U+2013 en dash": "\u2013",
    "U+2014 em dash": "\u2014",
    "U+2015 horizontal bar": "\u2015",
    "U+2212 minus": "\u2212",
    "U+FE58 small em dash": "\ufe58",
    "U+FE63 small hyphen-minus": "\ufe63",
    "U+FF0D full-width hyphen-minus": "\uff0d",
    "NBSP": "\u00a0",
    "narrow NBSP": "\u202f",
    "figure space": "\u2007",
    "thin space": "\u2009",
    "ideographic space": "\u3000",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "full-width full stop": "\uff0e",
}
MIXED_SEPARATORS = ["-", ".", " ", "\u2013", "\u00a0", "\u2212", "\u3000"]


def _cn_id(first17: str) -> str:
    return first17 + cn_id_check_char(first17)


def _luhn_complete(prefix: str) -> str:
    return next(prefix + d for d in "0123456789" if luhn_ok(prefix + d))


@dataclass(frozen=True)
class Sample:
    kind: str
    prefix: str
    value: str  # digit groups are separated by "|" where separators may go
    suffix: str
    numeric: bool = True  # separator classes apply


SAMPLES = [
    Sample("SSN", "Her SSN is ", "123|45|6789", " on file."),
    Sample("SSN", "Identifier ", "219|09|9999", " was given."),  # no cue: the 3-2-4 shape alone
    Sample("CN_ID", "身份证号：", "110101|19900307|457" + _cn_id("11010119900307457")[-1], "，已核验。"),
    Sample("CN_ID", "ID ", "4401|0619|8512|2400|1" + _cn_id("44010619851224001")[-1], " checked."),
    Sample("CN_MOBILE", "手机：", "138|0013|8000", "，请联系。"),
    Sample("CN_MOBILE", "reach her at ", "139|1234|5678", " today."),
    Sample("PHONE", "Phone: ", "617|555|0143", " (home)."),
    Sample("PHONE", "call the clinic on ", "212|555|0187", " before noon."),
    Sample("FAX", "Fax: ", "617|555|0199", " for records."),
    Sample("BANK_CARD", "card ", "4111|1111|1111|1111", " was charged."),
    Sample("BANK_CARD", "银行卡号：", "6222|0212|3456|7890|128", "。"),
    Sample("BANK_CARD", "paid with ", "5500|0000|0000|0004", " yesterday."),
    Sample("MRN", "MRN: ", "0048|2913", " admitted."),
    Sample("MRN", "病历号：", "2024|00317", "，住院。"),
    Sample("ZIP", "Mailing state MA ", "02115", " is the address."),
    Sample("ZIP", "邮编：", "100730", "。"),
    Sample("IP", "logged in from ", "192.168.10.23", " at noon.", numeric=False),
    Sample("EMAIL", "write to ", "m.gonzalez77@example.org", " soon.", numeric=False),
    Sample("DATE", "admitted ", "2024-03-05", " for pain.", numeric=False),
    Sample("DATE", "DOB: ", "03/05/1948", ".", numeric=False),
    Sample("DATE", "于", "2024年3月5日", "入院。", numeric=False),
    Sample("AGE", "a ", "92", "-year-old man", numeric=False),
    Sample("HEALTH_PLAN", "member ID ", "W1234|56789", " active."),
    Sample("ACCOUNT", "Billing account ", "5337|1097|46", " closed."),
    Sample("DEVICE", "hub MAC ", "00:1A:2B:3C:4D:5E", " online.", numeric=False),
    Sample("DEVICE", "IMEI ", _luhn_complete("35693803564380"), " registered.", numeric=False),
    Sample("VEHICLE", "VIN ", "1HGCM82633A004352", " towed.", numeric=False),
    Sample("URL", "see ", "https://portal.example.org/patients/123", " now.", numeric=False),
]
# Cued samples also take a separator between every pair of digits; the others only between groups.
CUED_EVERY_DIGIT = {"SSN", "CN_ID", "CN_MOBILE", "PHONE", "FAX", "BANK_CARD"}

_TOKEN = re.compile(r"\[[A-Z_]+\]")


# HHS Safe Harbor guidance: three-digit ZIP areas of 20,000 people or fewer (2000 Census), written out
# here rather than read from the engine's data file
SAFE_HARBOR_RESTRICTED = {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831"} | {
    "878",
    "879",
    "884",
    "890",
    "893",
}


def _zip3(value: str) -> str | None:
    if len(value) != 5:  # a 6-digit 邮编 keeps nothing
        return None
    return f"{'000' if value[:3] in SAFE_HARBOR_RESTRICTED else value[:3]}**"


_SAFE_HARBOR_KEPT = {"ZIP": _zip3, "AGE": lambda value: "90+"}


def _digits(value: str, zero: int) -> str:
    return "".join(chr(zero + int(c)) if c.isascii() and c.isdigit() else c for c in value)


def _sep(value: str, sep: str) -> str:
    return value.replace("|", sep)


def _between(value: str, inv: str) -> str:
    return inv.join(value)


def _variants(sample: Sample):
    """(class, spelled identifier) for every class that applies to the sample."""
    base = _sep(sample.value, {"SSN": "-", "PHONE": "-", "FAX": "-", "BANK_CARD": " "}.get(sample.kind, ""))
    yield "ascii", base
    for script, zero in DIGIT_SCRIPTS.items():
        yield f"digits {script}", _digits(base, zero)
    for name, inv in INVISIBLES.items():
        yield f"invisible {name} between every character", _between(base, inv)
        mid = len(base) // 2
        yield f"invisible {name} once", base[:mid] + inv + base[mid:]
    if sample.numeric and "|" in sample.value:
        for name, sep in SEPARATORS.items():
            yield f"separator {name}", _sep(sample.value, sep)
        groups = sample.value.split("|")
        mixed = groups[0] + "".join(MIXED_SEPARATORS[i % len(MIXED_SEPARATORS)] + g for i, g in enumerate(groups[1:]))
        yield "separators mixed", mixed
        if sample.kind in CUED_EVERY_DIGIT and _cued(sample):
            plain = sample.value.replace("|", "")
            yield "separator between every digit (cued)", " ".join(plain)
            yield "dot between every digit (cued)", ".".join(plain)
        for script in ("arabic-indic", "thai", "devanagari"):
            for inv in ("ZWSP", "CGJ", "VS16", "tag A", "Hangul filler"):
                for sep in ("U+2013 en dash", "NBSP", "dot", "U+2212 minus", "ideographic space"):
                    spelled = _between_groups_keep(sample.value, SEPARATORS[sep], INVISIBLES[inv])
                    yield f"combo {script}+{inv}+{sep}", _digits(spelled, DIGIT_SCRIPTS[script])
    else:
        for script in ("arabic-indic", "thai", "devanagari"):
            for inv in ("ZWSP", "CGJ", "VS16", "tag A", "Hangul filler"):
                yield f"combo {script}+{inv}", _digits(_between(base, INVISIBLES[inv]), DIGIT_SCRIPTS[script])


def _between_groups_keep(value: str, sep: str, inv: str) -> str:
    """Groups separated by `sep`, `inv` between the characters inside each group."""
    return sep.join(inv.join(group) for group in value.split("|"))


def _cued(sample: Sample) -> bool:
    return sample.prefix not in ("Identifier ", "reach her at ", "ID ", "paid with ", "call the clinic on ")


def leak(sample: Sample, spelled: str) -> str | None:
    """None if nothing of the identifier survived and the surroundings are intact; else why."""
    text = sample.prefix + spelled + sample.suffix
    out = deidentify(text, "redact").text
    if not out.startswith(sample.prefix) or not out.endswith(sample.suffix):
        return f"surroundings changed: {out!r}"
    middle = out[len(sample.prefix) : len(out) - len(sample.suffix)]
    canonical = canonical_text(middle)
    kept = _SAFE_HARBOR_KEPT.get(sample.kind)
    if kept is not None:  # what Safe Harbor lets stay: a ZIP's three-digit area (or 000), "90+" for an age
        allowed = kept(sample.value.replace("|", ""))
        canonical = canonical.replace(allowed, "[KEPT]") if allowed else canonical
    rest = _TOKEN.sub("", canonical)
    if any(c.isalnum() for c in rest):
        return f"survived: {rest!r} in {out!r}"
    if not _TOKEN.search(middle) and "[KEPT]" not in canonical:
        return f"nothing replaced: {out!r}"
    return None


def _all_cases():
    for sample in SAMPLES:
        for cls, spelled in _variants(sample):
            yield sample, cls, spelled


def test_every_class_of_every_structured_type_leaks_nothing():
    cases = Counter()
    leaks = Counter()
    examples: dict[tuple[str, str], str] = {}
    for sample, cls, spelled in _all_cases():
        family = cls.split(" ", 1)[0]
        family = {"dot": "separator", "separators": "separator"}.get(family, family)
        cases[sample.kind, family] += 1
        why = leak(sample, spelled)
        if why:
            leaks[sample.kind, family] += 1
            examples.setdefault((sample.kind, cls), why)
    total = sum(cases.values())
    report = "\n".join(
        f"{kind:12} {family:10} {leaks[kind, family]:4} leaked of {cases[kind, family]:4}"
        for kind, family in sorted(cases)
        if leaks[kind, family]
    )
    shown = "\n".join(f"  {k} / {c}: {why}" for (k, c), why in list(examples.items())[:40])
    assert not leaks, f"{sum(leaks.values())} of {total} spellings leaked:\n{report}\n{shown}"
    assert total > 1500


NEGATIVES = [
    "BP 132/84, HR 72, temp 37.2.",
    "Na 140 mmol/L, K 4.1, Cr 1.02, WBC 7.5, Hb 13.8.",
    "metformin 500 mg twice daily, 10 units insulin.",
    "Labs: 13.8 0.9 1.3 8.0 4.5 2.1 140 4.1.",
    "PHQ-9 items 1 2 1 0 3 2 1 1 0, total 11.",
    "血压 132/84 mmHg，心率 72 次/分，体温 36.8℃。",
    "in 2019 and again in 2021",
]


@pytest.mark.parametrize("text", NEGATIVES)
@pytest.mark.parametrize("script", ["ascii", "arabic-indic", "thai", "devanagari", "fullwidth"])
def test_lab_values_doses_and_years_in_any_script_stay(text, script):
    spelled = text if script == "ascii" else _digits(text, DIGIT_SCRIPTS[script])
    assert deidentify(spelled, "redact").text == spelled


# ---- property-based: random mixtures, per character --------------------------------------------

_SCRIPT_ZEROS = [0x30, *DIGIT_SCRIPTS.values()]
_INVISIBLE_CHARS = list(INVISIBLES.values())
_SEPARATOR_CHARS = list(SEPARATORS.values())


@st.composite
def _attack(draw, sample: Sample):
    out = []
    groups = sample.value.split("|") if sample.numeric else [sample.value]
    for gi, group in enumerate(groups):
        if gi:
            out.append(draw(st.sampled_from(_SEPARATOR_CHARS)))
        for ci, ch in enumerate(group):
            if ci and draw(st.integers(0, 3)) == 0:
                out.append(draw(st.sampled_from(_INVISIBLE_CHARS)))
            if ch.isascii() and ch.isdigit():
                ch = chr(draw(st.sampled_from(_SCRIPT_ZEROS)) + int(ch))
            out.append(ch)
    return "".join(out)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.numeric and "|" in s.value], ids=lambda s: s.kind)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mixtures_leak_nothing(sample, data):
    spelled = data.draw(_attack(sample))
    assert leak(sample, spelled) is None


# ---- the canonical view itself ------------------------------------------------------------------


def test_every_format_character_and_dash_of_this_unicode_database_is_folded():
    import sys
    import unicodedata

    from apps.gateway.deid.canonical import TABLE

    missing = []
    for cp in range(0x80, sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat == "Cf" and TABLE.get(cp) != "":
            missing.append(f"U+{cp:04X} Cf")
        elif cat == "Pd" and TABLE.get(cp) != "-":
            missing.append(f"U+{cp:04X} Pd")
        elif cat == "Nd" and TABLE.get(cp) != str(unicodedata.decimal(chr(cp))):
            missing.append(f"U+{cp:04X} Nd")
    assert not missing, missing[:20]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(list("abc 12-.")),
            st.sampled_from(_INVISIBLE_CHARS + _SEPARATOR_CHARS),
            st.sampled_from(["ﬁ", "①", "⑴", "½", "㍱", "١", "๒", "\U0001d7d0", "\U0001f600"]),
        ),
        max_size=40,
    )
)
def test_offsets_map_every_canonical_character_back_to_the_one_it_came_from(chars):
    from apps.gateway.deid.canonical import TABLE, canonicalise

    text = "".join(chars)
    canon = canonicalise(text)
    assert canon.text == text.translate(TABLE)
    for p in range(len(canon.text)):
        start, end = canon.original(p, p + 1)
        assert end == start + 1
        assert canon.text[p] in text[start].translate(TABLE)
    if canon.text:
        start, end = canon.original(0, len(canon.text))
        assert text[start:end].translate(TABLE) == canon.text
