"""Identifiers recognisable by their shape alone, each confirmed by a check where one exists.

Every pattern is linear: no nested unbounded quantifiers, every repetition bounded, and each
starts with a negative look-behind for its own alphabet so that a long run of digits or letters
is tried once, at its start, rather than at every position.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from . import cues, fastre
from .checksums import card_prefix_ok, cn_id_ok, luhn_ok, ssn_ok, vin_ok
from .spans import BANK_CARD, CN_ID, CN_MOBILE, DEVICE, EMAIL, FAX, IP, PHONE, SSN, URL, VEHICLE, Span

A = re.ASCII

EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])",
    A,
)
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]"
URL_RE = re.compile(
    rf"(?<![A-Za-z0-9@.])(?:(?:https?|ftp)://|www\.){_URL_CHARS}{{1,2000}}"
    rf"|(?<![A-Za-z0-9@.\-])[A-Za-z0-9\-]{{1,63}}(?:\.[A-Za-z0-9\-]{{1,63}}){{0,4}}"
    rf"\.(?:com|org|net|edu|gov|io|health|cn|us|uk)(?:/{_URL_CHARS}{{0,2000}})?(?![A-Za-z0-9@])",
    A | re.I,
)
IPV4_RE = re.compile(
    r"(?<![0-9A-Za-z.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![0-9A-Za-z]|\.\d)",
    A,
)
# Also right after a label's colon ("IP:2408:8207::1a3", "设备IP：…" — canonicalised to ":"): a colon
# after a letter that is not a hex digit cannot be inside an address.
IPV6_CANDIDATE_RE = re.compile(r"(?:(?<![0-9A-Za-z:.])|(?<=[G-Zg-z]:))[0-9A-Fa-f:.]{2,45}(?![0-9A-Za-z:.])", A)
MAC_RE = re.compile(r"(?<![0-9A-Fa-f:-])[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}(?![0-9A-Fa-f:-])", A)
# Numbers are matched on the canonical text (canonical.py), where every dash is "-", every space
# " " and every decimal digit ASCII: a separator inside a number is one of "-", "." or " ", and
# separators may be mixed ("123.45-6789"). Where a number may be written with a separator between
# any two digits, `_groups_ok` asks for groups of at least three digits unless a cue precedes it,
# so that a row of lab values ("13.8 0.9 1.3 8.0") is not read as a number.
_S = "[-. ]"
SSN_RE = re.compile(rf"(?<![0-9A-Za-z-])(?<!\d\.)(\d{{3}}){_S}(\d{{2}}){_S}(\d{{4}})(?![0-9A-Za-z-]|\.\d)", A)
CN_ID_RE = re.compile(rf"(?<![0-9A-Za-z])(?<!\d\.)\d(?:{_S}?\d){{16}}{_S}?[\dXx](?![0-9A-Za-z]|[-.]\d)", A)
CN_MOBILE_RE = re.compile(
    rf"(?<![0-9A-Za-z+])(?<!\d\.)(?:(?:\+|00)86{_S}?)?(?P<n>1{_S}?[3-9](?:{_S}?\d){{9}})(?![0-9A-Za-z]|[-.]\d)", A
)
CARD_RE = re.compile(rf"(?<![0-9A-Za-z-])(?<!\d\.)\d(?:{_S}?\d){{12,18}}(?![0-9A-Za-z]|{_S}\d)", A)
_SEP_RE = re.compile(_S)
_CARD_CUES = re.compile(
    r"card|卡号|银行卡|信用卡|借记卡|visa|mastercard|amex|credit|debit|account|acct|a/c|账号|帐号", A | re.I
)
VIN_RE = re.compile(r"(?<![0-9A-Za-z])[A-HJ-NPR-Z0-9]{17}(?![0-9A-Za-z])", A)
CN_PLATE_RE = re.compile(
    "[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼][A-HJ-NP-Z][·・. -]?[A-HJ-NP-Z0-9]{5,6}"
    "(?![0-9A-Za-z])",
    A,
)
# North American numbers: (617) 555-0143, 617-555-0143, 617.555.0143, +1 617 555 0143, with an extension.
US_PHONE_RE = re.compile(
    r"(?<![0-9A-Za-z+])(?<!\d[ -])(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
    r"(?:,? ?(?:x|ext\.?|extension) ?\d{1,5})?(?![0-9A-Za-z])",
    A | re.I,
)
INTL_PHONE_RE = re.compile(
    r"(?<![0-9A-Za-z+])(?<!\d[ -])(?:\+|00)[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
    r"(?![0-9A-Za-z])",
    A,
)
# Chinese landlines: 010-12345678, (0755) 8888 8888, 021 6543 2100.
CN_LANDLINE_RE = re.compile(
    r"(?<![0-9A-Za-z])(?<!\d[ -])(?:\(0\d{2,3}\) ?|0\d{2,3}[ -])\d{3,4}[ -]?\d{3,4}(?:[ -]?(?:转|ext\.?|x) ?\d{1,5})?"
    r"(?![0-9A-Za-z]|[ -]\d)",
    A,
)
# After a cue only: ten digits (or 0 and 10-12), written with any separators between them.
BARE_PHONE_RE = re.compile(
    rf"(?<![0-9A-Za-z])(?<!\d\.)(?:[2-9](?:{_S}?\d){{9}}|0(?:{_S}?\d){{9,11}})(?![0-9A-Za-z]|{_S}\d)", A
)
# A seven-digit local number (555-0134), only after a phone cue in the same line ("call back at", "phone").
LOCAL_PHONE_RE = re.compile(r"(?<![0-9A-Za-z-])(?<!\d[ .])[2-9]\d{2}-\d{4}(?![0-9A-Za-z]|[-.]\d)", A)
_DATE_START = re.compile(r"(?:\d{4}[-.]\d\d?[-.]\d\d?|\d\d?[-.]\d\d?[-.]\d{2,4})(?!\d)", A)
_PHONE_CUES = re.compile(
    # the nearest cue wins: "传真至 …（传真），或致电 …" — the second number is a phone
    r"(fax|facsimile|传真)|(phone|\btel\b|telephone|cell|mobile|call|pager|contact|电话|手机|联系|热线|致电|来电|拨打|电联)",
    A | re.I,
)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _groups_ok(value: str, text: str, start: int, cues: re.Pattern) -> bool:
    """Separated digit groups of three or more (the last may be shorter), or any grouping after a cue."""
    groups = _SEP_RE.split(value)
    if len(groups) == 1 or all(len(g) >= 3 for g in groups[:-1]):
        return True
    window = text[max(0, start - 30) : start]
    return cues.search(window[window.rfind("\n") + 1 :]) is not None


def find_email(text: str) -> Iterator[Span]:
    for m in EMAIL_RE.finditer(text):
        yield Span(m.start(), m.end(), EMAIL, 90)


# Where a URL_RE match can start, found with str.find on the case-folded text instead of entering the
# matcher at every letter and digit (its second alternative, a bare domain, starts with any of them):
# a match of the first alternative starts with its scheme or "www." (folded, lead 0); one of the
# second holds ".com", ".org" … after a run of [A-Za-z0-9.-] of at most 319 characters (63 + 4 × 64),
# and its look-behind puts its start at the start of that run (no run character before it).
_URL_SCHEMES = ("http://", "https://", "ftp://", "www.")
_URL_TLDS = (".com", ".org", ".net", ".edu", ".gov", ".io", ".health", ".cn", ".us", ".uk")
_URL_RUN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-"
_URL_LONGEST_HOST = 63 + 4 * 64
# More than one anchor every DENSE characters (text written to be slow): one whole-text scan.
_URL_DENSE = 48
# Below this many characters one scan costs less than the fourteen look-ups.
_URL_FIND_FROM = 2048


def _url_starts(text: str) -> list[int] | None:
    """Every position where URL_RE can match, in order; None when they are too dense to be worth it."""
    folded = cues.fold(text)
    starts: set[int] = set()
    budget = len(text) // _URL_DENSE + 1  # anchors found, with or without a start
    for literal in _URL_SCHEMES:
        i = folded.find(literal)
        while i != -1:
            starts.add(i)
            budget -= 1
            if budget < 0:
                return None
            i = folded.find(literal, i + 1)
    for literal in _URL_TLDS:
        a = folded.find(literal)
        while a != -1:
            lo = max(0, a - _URL_LONGEST_HOST - 1)
            before = text[lo:a]
            run = len(before) - len(before.rstrip(_URL_RUN))
            if run < len(before) or lo == 0:  # the run starts inside the window: a match can start there
                starts.add(a - run)
            budget -= 1
            if budget < 0:
                return None
            a = folded.find(literal, a + 1)
    return sorted(starts)


def _url_matches(text: str) -> Iterator[re.Match]:
    """What URL_RE.finditer(text) yields (tests/gateway/test_deid_shortcuts.py compares them)."""
    starts = _url_starts(text) if len(text) >= _URL_FIND_FROM else None
    if starts is None:
        yield from URL_RE.finditer(text)
        return
    last = 0
    match = URL_RE.match
    for s in starts:
        if s >= last:
            m = match(text, s)
            if m:
                yield m
                last = m.end()


def find_url(text: str) -> Iterator[Span]:
    for m in _url_matches(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:!?)]}'":
            if text[end - 1] == ")" and text.count("(", m.start(), end) >= text.count(")", m.start(), end):
                break
            end -= 1
        yield Span(m.start(), end, URL, 85)


def find_ip(text: str) -> Iterator[Span]:
    for m in IPV4_RE.finditer(text):
        yield Span(m.start(), m.end(), IP, 70)
    for m in IPV6_CANDIDATE_RE.finditer(text):
        cand = m.group().rstrip(".")
        if cand.count(":") < 2:
            continue
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            continue
        yield Span(m.start(), m.start() + len(cand), IP, 70)


def find_mac(text: str) -> Iterator[Span]:
    for m in MAC_RE.finditer(text):
        yield Span(m.start(), m.end(), DEVICE, 70)


def find_ssn(text: str) -> Iterator[Span]:
    for m in SSN_RE.finditer(text):
        if ssn_ok(m.group(1) + m.group(2) + m.group(3)):
            yield Span(m.start(), m.end(), SSN, 80)


def find_cn_id(text: str) -> Iterator[Span]:
    for m in CN_ID_RE.finditer(text):
        v = _SEP_RE.sub("", m.group())
        month, day = int(v[10:12]), int(v[12:14])
        if v[6:8] in ("18", "19", "20") and 1 <= month <= 12 and 1 <= day <= 31 and cn_id_ok(v):
            yield Span(m.start(), m.end(), CN_ID, 95)


def find_cn_mobile(text: str) -> Iterator[Span]:
    for m in CN_MOBILE_RE.finditer(text):
        number = m.group("n")
        lengths = [len(g) for g in _SEP_RE.split(number)]
        if len(lengths) > 1 and lengths[0] < 3 and max(lengths) > 1:
            continue  # 1-713-555-0155 is a North American number; 1 3 8 0 … is spelled out
        if len(lengths) == 4 and max(lengths) <= 3 and "-" not in number and " " not in number:
            continue  # 192.168.242.31 is an IPv4 address
        if _groups_ok(number, text, m.start(), _PHONE_CUES):
            yield Span(m.start(), m.end(), CN_MOBILE, 75)


def find_bank_card(text: str) -> Iterator[Span]:
    for m in CARD_RE.finditer(text):
        digits = _digits(m.group())
        if card_prefix_ok(digits) and luhn_ok(digits) and _groups_ok(m.group(), text, m.start(), _CARD_CUES):
            yield Span(m.start(), m.end(), BANK_CARD, 85)


def find_vin(text: str) -> Iterator[Span]:
    for m in VIN_RE.finditer(text):
        v = m.group()
        if not v.isdigit() and not v.isalpha() and vin_ok(v):
            yield Span(m.start(), m.end(), VEHICLE, 80)


def find_cn_plate(text: str) -> Iterator[Span]:
    for m in CN_PLATE_RE.finditer(text):
        if any(c.isdigit() for c in m.group()[2:]):
            yield Span(m.start(), m.end(), VEHICLE, 75)


_EXTENSION_RE = re.compile(r"[ ,]*(?:转|ext\.?|extension|x) ?\d{1,5}$", re.I)
# The clause a number belongs to: its cue may sit further back ("Fax to Dr. A. Jones at ...").
# A full stop after a title or an initial ("Dr.", "J.") does not end the clause.
_CLAUSE_START = re.compile(r"[\n;。；!?]|(?<![A-Z])(?<!Dr|Mr|Ms|St|Jr|Sr)(?<!Mrs|Drs|Pro)\.")


# "T 734-555-0121 F 734-555-0122": a letterhead's one-letter labels, F (fax) right before the number.
_FAX_LETTER_RE = re.compile(r"(?<![A-Za-z])F[:.]?\s?$")


def _phone_type(text: str, start: int) -> str:
    """FAX when the nearest cue before the number (same clause, 60 characters) says fax."""
    if _FAX_LETTER_RE.search(text, max(0, start - 3), start):
        return FAX
    window = text[max(0, start - 60) : start]
    cuts = [m.end() for m in _CLAUSE_START.finditer(window)]
    window = window[cuts[-1] :] if cuts else window
    kind = PHONE
    for m in _PHONE_CUES.finditer(window):
        kind = FAX if m.group(1) else PHONE
    return kind


def _has_phone_cue(text: str, start: int) -> bool:
    window = text[max(0, start - 30) : start]
    return _PHONE_CUES.search(window[window.rfind("\n") + 1 :]) is not None


def find_phone(text: str) -> Iterator[Span]:
    for regex in (US_PHONE_RE, INTL_PHONE_RE, CN_LANDLINE_RE):
        for m in regex.finditer(text):
            # the extension ("转8012", "x214") does not count towards the number's length, nor does the
            # "00" that dials out: "004417732" (a zero-padded record number) is 7 digits, too short
            digits = _digits(_EXTENSION_RE.sub("", m.group()))
            if 9 <= len(digits[2:] if m.group().startswith("00") else digits) <= 15:
                yield Span(m.start(), m.end(), _phone_type(text, m.start()), 60)
    for m in BARE_PHONE_RE.finditer(text):
        if _has_phone_cue(text, m.start()) and not _DATE_START.match(m.group()):
            yield Span(m.start(), m.end(), _phone_type(text, m.start()), 55)
    for m in LOCAL_PHONE_RE.finditer(text):
        if _has_phone_cue(text, m.start()):
            yield Span(m.start(), m.end(), _phone_type(text, m.start()), 55)


DETECTORS = {
    EMAIL: (find_email,),
    URL: (find_url,),
    IP: (find_ip,),
    SSN: (find_ssn,),
    CN_ID: (find_cn_id,),
    CN_MOBILE: (find_cn_mobile,),
    BANK_CARD: (find_bank_card,),
    VEHICLE: (find_vin, find_cn_plate),
    DEVICE: (find_mac,),
    PHONE: (find_phone,),
    FAX: (find_phone,),
}


fastre.accelerate(globals())  # after every pattern: see fastre.py
