"""Identifier-looking tokens, typed by the nearest label before them (a recall-first family).

The cued detectors (contextual.py) find a record number after a label they list. A note written by
someone else uses labels no list holds ("Inmate health record", "Pt acct ref", 住院流水号), so this
family works the other way round: first the TOKEN — letters and digits with inner "-", "/", "." or
"_", carrying enough digits to identify (five or more; or three or more in a code of six characters
or more that mixes letters and digits) — then what it is:

- not a measurement, dose, lab value or vital (a number with a unit, "3.2mmol/L", "12000 IU"), a
  ratio ("142/88", "7.31/58/62"), a decimal amount ("3245.60"), a year range, a valid date, an
  ICD-10 code: those are skipped by their shape;
- its type is the type of the NEAREST label word before it in the same line (a few words back;
  `data/identifier_labels.txt`, English and Chinese): record/chart/住院号 … -> MRN, member/policy/
  Medicare/医保 … -> HEALTH_PLAN, account/FIN/claim/结算 … -> ACCOUNT, licence/DEA/NPI/执业 … ->
  LICENSE, VIN/plate/车牌 … -> VEHICLE, serial/device/序列号 … -> DEVICE, SSN (four digits too:
  "SSN last 4 (6602)"), phone/fax words -> PHONE/FAX;
- a NEG label (lot, batch, protocol, study subject, badge, CPT/ICD, tax ID, model, Rx, 批号, 警号 …)
  means the token is not an identifier of the person;
- with no label in reach, a bare long number is typed by DEFAULT (see below) when it has enough
  digits to be a record number.

Its spans have the lowest priority of all detectors: wherever a validated or cued detector found
something overlapping (a phone, a date, a cued MRN), that one wins.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from . import dates, fastre
from .spans import ACCOUNT, BANK_CARD, CN_ID, DEVICE, FAX, HEALTH_PLAN, IP, LICENSE, MRN, PHONE, SSN, VEHICLE, Span

NEG = "NEG"
PRIORITY = 12
# Unlabelled tokens: a bare number with this many digits or more is typed DEFAULT.
DEFAULT = MRN
DEFAULT_MIN_DIGITS = 7
# How far back a label may stand (characters, same line).
WINDOW = 32

_DATA = Path(__file__).with_name("data") / "identifier_labels.txt"
_TYPES = {
    "MRN": MRN,
    "HEALTH_PLAN": HEALTH_PLAN,
    "ACCOUNT": ACCOUNT,
    "LICENSE": LICENSE,
    "VEHICLE": VEHICLE,
    "DEVICE": DEVICE,
    "SSN": SSN,
    "PHONE": PHONE,
    "FAX": FAX,
    "CN_ID": CN_ID,
    "BANK_CARD": BANK_CARD,
    "IP": IP,
    "NEG": NEG,
}

# A token: letters and digits with single inner separators, holding at least two digits (the
# look-ahead, bounded); its digit count and shape are checked after.
_TOKEN_RE = re.compile(
    r"(?<![A-Za-z0-9_])(?:(?=(?:[A-Za-z/._ -]{0,12}\d){5})|(?=[0-9/._-]{0,20}[A-Za-z])(?=(?:[A-Za-z/._-]{0,12}\d){3}))"
    r"[A-Za-z0-9]{1,40}(?:(?:[-/._]|(?<=\d) (?=\d\d(?:\d|(?![A-Za-z]))))[A-Za-z0-9]{1,40}){0,8}(?![A-Za-z0-9])",
    re.A,
)
_UNITS = (
    "mg|mcg|ug|µg|ul|µl|mm3|g|kg|lb|lbs|oz|ml|l|dl|cc|mmhg|mmol|umol|µmol|mol|meq|iu|u|units?|bpm|cm|mm|m|km|in|ft|kcal"
    "|cal|ng|pg|pmol|nmol|fl|ml/min|mmol/l|g/l|mg/l|mg/dl|ng/ml|pg/ml|u/l|iu/l|x|k|h|hr|hrs|min|mins|sec|s|d|wk"
    "|mo|yr|yrs|y|steps|copies|cells|gy|cgy|mci|mbq|mah|v|mv|w|hz|khz|mhz|ghz|kb|mb|gb|tb|px|dpi|rpm|psi|kpa"
)
_UNIT_TAIL_RE = re.compile(rf"[\d.,/]+(?:{_UNITS})(?:/[a-z0-9]+)*", re.I | re.A)
_UNIT_AFTER_RE = re.compile(
    rf"[ \t]?(?:(?:{_UNITS})(?![A-Za-z])|%|℃|°|/(?:uL|mm3|min|kg|L|d|day|hr|h)\b|x\s?10|×"
    r"|元|块|次|个|例|分|岁|天|小时|毫|克|升|米|万|千|人|位|份|件|支|片|粒|袋|瓶|盒|步|秒|周|月|年)",
    re.I,
)
_RATIO_RE = re.compile(r"\d{1,3}(?:\.\d{1,3})?(?:/\d{1,3}(?:\.\d{1,3})?)+", re.A)
_DECIMAL_RE = re.compile(r"\d+\.\d+", re.A)
_YEAR_RANGE_RE = re.compile(r"(?:1[89]|20)\d\d[-/](?:(?:1[89]|20)\d\d|\d\d)", re.A)
_IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}", re.A)
_ICD_RE = re.compile(r"[A-Z]\d\d(?:\.[0-9A-Z]{1,4})?", re.A)
_EXCLUDED_RE = re.compile(
    "|".join(f"(?:{r.pattern})" for r in (_RATIO_RE, _DECIMAL_RE, _IPV4_RE, _YEAR_RANGE_RE, _UNIT_TAIL_RE, _ICD_RE)),
    re.I | re.A,
)
_NUMERIC_DATE_RE = re.compile(r"(\d{1,4})([-/.])(\d{1,2})\2(\d{1,4})", re.A)
_COMPACT_DATE_RE = re.compile(r"(?:19|20)\d\d(?:1[0-2]|0[1-9])(?:3[01]|[12]\d|0[1-9])", re.A)


@lru_cache(maxsize=1)
def _labels():
    """An Aho–Corasick automaton of the folded label words: value (length, type, open-ended, Latin start, Latin end)."""
    import ahocorasick

    auto = ahocorasick.Automaton()
    for line in _DATA.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, word = line.split("\t")
        word = word.lower()
        open_end = word.endswith("*")
        word = word.rstrip("*")
        for spelling in {word, word.replace(" ", "")}:
            latin_start = spelling[0].isascii() and spelling[0].isalnum()
            latin_end = spelling[-1].isascii() and spelling[-1].isalnum()
            auto.add_word(spelling, (len(spelling), _TYPES[kind], open_end, latin_start, latin_end))
    auto.make_automaton()
    return auto


def label_before(text: str, start: int) -> str | None:
    """The type of the nearest label before `start` in the same line (within WINDOW), or None."""
    found = _nearest_label(text, start)
    return found[0] if found else None


def _nearest_label(text: str, start: int) -> tuple[str, bool] | None:
    """(type, adjacent) of the nearest label before `start` in the same line (within WINDOW): the
    label that ends last, the longest of those; `adjacent` when only filler ("number", "#", ":")
    stands between it and `start`."""
    lo = max(0, start - WINDOW)
    window = text[lo:start].lower()
    if len(window) != start - lo:  # a character whose lower case is longer: compare as written
        window = text[lo:start]
    cut = max(window.rfind("\n"), window.rfind("。"), window.rfind("；"), window.rfind(";"))
    best = None
    for end, (length, kind, open_end, latin_start, latin_end) in _labels().iter(window):
        first = end - length + 1
        if first <= cut:
            continue
        if latin_start and first > 0 and window[first - 1].isascii() and window[first - 1].isalpha():
            continue
        stop = end + 1
        if open_end:
            while stop < len(window) and "a" <= window[stop] <= "z":
                stop += 1
        elif latin_end and stop < len(window) and "a" <= window[stop] <= "z":
            continue
        if best is None or (stop, length) > best[:2]:
            best = (stop, length, kind)
    if best is None:
        return None
    return best[2], _FILLER_RE.fullmatch(window, best[0]) is not None


def _label_in(cell: str) -> str | None:
    """The type of the last label word in a table header cell, or None."""
    best = None
    folded = cell.lower()
    for end, (_length, kind, _open, _ls, _le) in _labels().iter(folded):
        if best is None or end > best[0]:
            best = (end, kind)
    return best[1] if best else None


def _column_label(text: str, start: int) -> str | None:
    """In a table written with "|", the label of the column `start` is in: the header row above
    (the nearest row of as many cells without a digit), within eight rows."""
    line_start = text.rfind("\n", 0, start) + 1
    column = text.count("|", line_start, start)
    pos = line_start - 1
    for _ in range(8):
        if pos <= 0:
            return None
        row_start = text.rfind("\n", 0, pos) + 1
        row = text[row_start:pos]
        pos = row_start - 1
        if "|" not in row:
            return None
        if any(c.isdigit() for c in row) or not row.strip(" |-:"):
            continue  # a data row or a Markdown rule
        cells = row.split("|")
        return _label_in(cells[column]) if column < len(cells) else None
    return None


def _is_date(token: str) -> bool:
    if _COMPACT_DATE_RE.fullmatch(token):
        return True
    m = _NUMERIC_DATE_RE.fullmatch(token)
    return m is not None and dates.numeric_date_ok(m.group(1), m.group(3), m.group(4), m.group(2))


def _token_verdict(token: str) -> tuple[bool, int] | None:
    """None when the token's characters alone rule it out: too few digits and letters, or a shape
    that is no identifier's (a ratio, amount, year range, date or ICD code); else (whether a unit
    right after it makes it a measurement, its digit count)."""
    n = len(token)
    digits = n - len(token.translate(_NOT_DIGITS))
    letters = n - len(token.translate(_NOT_LETTERS))
    if not (digits >= 5 or (digits >= 3 and letters and digits + letters >= 6)):
        return None
    if token.isdigit():
        if _COMPACT_DATE_RE.fullmatch(token) is not None:
            return None
        return True, digits
    if _EXCLUDED_RE.fullmatch(token) or (not token.isalnum() and _is_date(token)):
        return None
    return token[-1].isdigit(), digits


# What may stand between a label and its value for the label to be adjacent ("NHS number 485 …").
_FILLER_RE = re.compile(
    r"(?:[\s:#=.()|｜\-]|(?<![a-z])(?:number|numbers|num|no|nos|id|ids|code|is|was|identifier|card|ref)(?![a-z])"
    r"|为|是|码|号码|号)*",
)
# A value right after its own label outranks a guess from its shape (a record number written 3-2-4
# after "MRN" is not an SSN, an NHS number in 3-3-4 groups is not a phone): above the SSN and phone
# detectors, below the checksummed ones (身份证, cards, e-mail, URLs).
LABELLED_PRIORITY = 81

_NOT_DIGITS = str.maketrans("", "", "0123456789")
_NOT_LETTERS = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# An IPv6 address right after a colon that ends a label in any script ("日志：2001:db8::1", canonical ":").
_IPV6_AFTER_LABEL_RE = re.compile(r"(?<=[^\x00-\x7f]:)[0-9A-Fa-f:.]{2,45}(?![0-9A-Za-z:.])")
_LOCAL_PHONE_RE = re.compile(r"(?<![0-9A-Za-z./:$#-])[2-9]\d\d-\d{4}(?![0-9A-Za-z]|[-./:]\d)")
_RANGE_BEFORE_RE = re.compile(r"(?:from|between|range|to|of|x|#|no\.|[<>=~+±])\s*$", re.I)
_SSN_HINT_RE = re.compile(r"(?<![A-Za-z])(?:ssn|ss#|social)", re.I)
_FOUR_RE = re.compile(r"(?:(?<![A-Za-z0-9-])|(?<=[*xX#A-Za-z]-))\d{4}(?![A-Za-z0-9]|[-.]\d)", re.A)
_MASKED_SSN_RE = re.compile(r"[xX#]{3}-?[xX#]{2}-?\d{4}", re.A)  # XXX-XX-6602: a stated last four
_SSN_SHAPE_RE = re.compile(r"\d{3}[-. ]\d\d[-. ]\d{4}", re.A)


def find_identifiers(text: str, kinds: frozenset[str]) -> Iterator[Span]:
    if SSN in kinds:  # a stated last four of an SSN: four digits after an SSN word
        last = -1
        for hint in _SSN_HINT_RE.finditer(text):
            for m in _FOUR_RE.finditer(text, hint.end(), hint.end() + WINDOW):
                if m.start() > last and label_before(text, m.start()) == SSN:
                    last = m.start()
                    yield Span(m.start(), m.end(), SSN, PRIORITY)
    # What a token's characters alone decide, once per distinct token of this text (kept for this
    # call only): None when it is never an identifier, else (whether a unit after it excludes it,
    # its digit count); see _token_verdict.
    verdicts: dict[str, tuple[bool, int] | None] = {}
    for m in _TOKEN_RE.finditer(text):
        token = m.group()
        if token in verdicts:
            verdict = verdicts[token]
        else:
            verdict = verdicts[token] = _token_verdict(token)
        if verdict is None:
            continue
        start, end = m.span()
        unit_check, digits = verdict
        if unit_check and _UNIT_AFTER_RE.match(text, end) is not None:
            continue
        label = _nearest_label(text, start)
        if label is None and "|" in text[text.rfind("\n", 0, start) + 1 : start]:
            header = _column_label(text, start)  # a table cell: the label is its column's header
            label = (header, False) if header else None
        if label is None:
            # no label in reach: only a bare run of digits long enough for a record number
            if not token.isdigit() or digits < DEFAULT_MIN_DIGITS:
                continue
            kind, priority = DEFAULT, PRIORITY
        else:
            kind, adjacent = label
            priority = LABELLED_PRIORITY if adjacent and kind not in (PHONE, FAX) else PRIORITY
        if kind == NEG or kind not in kinds:
            continue
        if _SSN_SHAPE_RE.fullmatch(token) and kind != SSN and priority == PRIORITY:
            continue  # 3-2-4 digits are the SSN detector's (which rejects invalid areas), unless labelled
        if kind == SSN and digits != 9 and not _MASKED_SSN_RE.fullmatch(token):
            continue
        yield Span(start, end, kind, priority)
    if PHONE in kinds or FAX in kinds:
        # a local number (555-0188) with no cue: a phone unless a unit, a range or a NEG label says otherwise
        for m in _LOCAL_PHONE_RE.finditer(text):
            if _UNIT_AFTER_RE.match(text, m.end()) or _RANGE_BEFORE_RE.search(text, max(0, m.start() - 12), m.start()):
                continue
            kind = label_before(text, m.start())
            if kind is None or kind in (PHONE, FAX):
                yield Span(m.start(), m.end(), kind or PHONE, PRIORITY)
    if IP in kinds and ":" in text:
        for m in _IPV6_AFTER_LABEL_RE.finditer(text):
            candidate = m.group().rstrip(".")
            if candidate.count(":") >= 2:
                try:
                    ipaddress.IPv6Address(candidate)
                except ValueError:
                    continue
                yield Span(m.start(), m.start() + len(candidate), IP, 70)


# After every pattern (the SSN hint, local phone and IPv6 patterns below the labels too: each searched over
# the whole text, and each starting with a look-behind, so unaccelerated `re` entered it at every character).
fastre.accelerate(globals())  # see fastre.py
