"""Detection, overlap resolution and the three replacement modes."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter

from . import contextual, cues, dates, geo, identifiers, late, model, names, prefilter, safeharbor, structured, tail
from .canonical import canonical_text, canonicalise
from .spans import (
    ADDRESS,
    AGE,
    ALL_TYPES,
    DATE,
    DEVICE,
    GEO,
    LICENSE,
    NAME,
    SSN,
    VEHICLE,
    ZIP,
    BudgetExceeded,
    DeidError,
    InputTooLong,
    InvalidMode,
    KeyRequired,
    Span,
    UnknownType,
)

REDACT, MASK, PSEUDONYMISE, SURROGATE = "redact", "mask", "pseudonymise", "surrogate"
MODES = (REDACT, MASK, PSEUDONYMISE, SURROGATE)
_MODE_ALIASES = {"pseudonymize": PSEUDONYMISE}

# 1 MiB: far above any prompt an LLM accepts, far below what would make one request slow.
DEFAULT_MAX_LENGTH = 1 << 20
MIN_KEY_BYTES = 16
TOKEN_HEX_DIGITS = 8


# Below this many characters a text is checked against the budget before and after detection only
# (it costs well under a millisecond); longer ones also between detector passes.
_CHECK_EVERY_PASS_FROM = 4096


class Budget:
    """CPU seconds one request may spend in the de-identifier, across every text it carries.

    CPU time of the thread doing the work (time.thread_time), not wall time, so a loaded machine
    does not refuse what an idle one accepts. Checked before each text, and between detector
    passes on long texts: a request over budget raises BudgetExceeded after at most one more pass.
    One Budget per request; texts of a request may be handled in different threads (each call
    adds its own thread's CPU)."""

    __slots__ = ("cpu_seconds", "spent")

    def __init__(self, cpu_seconds: float):
        if not cpu_seconds > 0:
            raise ValueError("a de-identification budget is a positive number of CPU seconds")
        self.cpu_seconds = float(cpu_seconds)
        self.spent = 0.0

    def check(self, since: float) -> None:
        if self.spent + (time.thread_time() - since) > self.cpu_seconds:
            raise BudgetExceeded(
                f"de-identification exceeded its CPU budget of {self.cpu_seconds:g} s for this request; "
                "send less text per request"
            )


@dataclass(frozen=True)
class Result:
    """The de-identified text and how many identifiers of each type were replaced (never which)."""

    text: str
    found: dict[str, int] = field(default_factory=dict)


# What warm() runs the detectors over, to learn which patterns they search over a whole long text
# and how often each one's Hyperscan expression fires on ordinary clinical prose (prefilter.py).
_WARM_TEXT = (
    "Patient: John A. Smith, DOB 03/14/1931, MRN 00482913, seen on January 5, 2024 at 4180 Willow Creek "
    "Road, Springfield, IL 62704. He is a 93-year-old retired teacher; currently 95 per his daughter Anna. "
    "Phone (617) 555-0143, fax 617.555.0199, email j.smith@example.com, http://www.example.org/chart. "
    "SSN 123-45-6789, card 4111 1111 1111 1111, IP 192.168.1.20, VIN 1HGCM82633A004352, plate 7ABC123. "
    "Seen by Dr. Mary O'Neil (cardiology) with Ms. Lee; follow-up on 2024-02-11 and 2/18/24, then in "
    "March. BP 132/84, HR 72, temp 98.6 F, weight 70 kg; aspirin 81 mg daily, metformin 500 mg twice. "
    "The patient lives with his son in Boca Raton, Palm Beach County, and visited Boston last spring.\n"
    "患者刘洋，男，95岁，2023年3月15日入院，住址上海市徐汇区漕溪北路88号3室，电话13812345678，身份证"
    "110101199003074514，病历号ZY20230315。主治医师：王芳；护士：李娜。既往高血压十年，规律服药，"
    "血压控制可。家属：其子刘强，联系电话021-64370045。九十五岁，于去年春节后出现胸闷。\n"
    # the literals of late.py's families, so that warm() enters their patterns in the Hyperscan pass too
    "Signed BJL WOCN; initials only: D.M.K.; transcribed: kls. Hi, it's Rosario, from home; this is dana from "
    'rm 4. Ms. G., nonagenarian (96); pt currently 95; age on card: 91, corrected to 90. Called "Jack".\n'
    "To: Gupta, Anand\n石头（患儿小名）；小名“糖糖”；木某；姓名：宁*；钟离女士；是阚老太的外孙；家属老包询问；"
    "主治左医生；院感科韦春花。官大爷（官德胜）；其妻梁月娥学习；小芳是患儿的小名。阿不都·买买提，男。\n"
)
_WARM_TEXT = _WARM_TEXT * (prefilter.MIN_LENGTH // len(_WARM_TEXT) + 2)


def warm() -> None:
    """Load the dictionaries and build the gazetteer automata and the Hyperscan databases now (each
    once a process): a server calls this at start so that no request pays for it inside its CPU
    budget. Until it has run, every pattern is searched on its own (the same spans, slower)."""
    names.dictionaries()
    geo.warm()
    cues.automaton()
    prefilter.build(lambda: _detect(_WARM_TEXT, frozenset(ALL_TYPES), None), _WARM_TEXT)
    cues.hits.cache_clear()
    cues.automaton(cues._searched_by_anchors(_WARM_TEXT))  # the anchors of the gates it does not serve
    if model.enabled():
        model.warm()


def _check_types(types) -> frozenset[str]:
    if types is None:
        return frozenset(ALL_TYPES)
    wanted = frozenset(types)
    unknown = wanted - set(ALL_TYPES)
    if unknown:
        raise UnknownType(f"unknown identifier type(s) {sorted(unknown)}; known: {', '.join(ALL_TYPES)}")
    return wanted


def check_length(n: int, max_length: int) -> None:
    if n > max_length:
        raise InputTooLong(
            f"input of {n} characters exceeds the de-identifier's limit of {max_length}; split it or raise the limit"
        )


def _candidates(text: str, kinds: frozenset[str], check=None):
    """Every detector's candidate spans; `check()` (the budget) runs before each detector pass."""
    seen_funcs = set()
    for kind, funcs in structured.DETECTORS.items():
        for func in funcs:
            if kind in kinds and func not in seen_funcs:
                seen_funcs.add(func)
                if check:
                    check()
                yield from func(text)
    if check:
        check()
    yield from contextual.find_cued(text, kinds)
    if SSN in kinds:
        yield from contextual.find_ssn_cued(text)
        yield from contextual.find_ssn_last4(text)
    if DEVICE in kinds:
        yield from contextual.find_imei(text)
    if VEHICLE in kinds:
        yield from contextual.find_plate(text)
        yield from contextual.find_plate_cn_cued(text)
        yield from contextual.find_vin_cued(text)
    if LICENSE in kinds:
        yield from contextual.find_license_state(text)
    if ZIP in kinds:
        yield from contextual.find_zip(text)
    if AGE in kinds:
        if check:
            check()
        yield from contextual.find_age(text)
    if DATE in kinds:
        if check:
            check()
        yield from dates.find_dates(text)
    if NAME in kinds:
        if check:
            check()
        yield from names.find_names(text)
    if ADDRESS in kinds or GEO in kinds:
        if check:
            check()
        yield from geo.find_geo(text, kinds)
    if check:
        check()
    yield from identifiers.find_identifiers(text, kinds)  # the lowest priority: any other detector wins
    yield from tail.find_tail(text, kinds)  # date and age families, below dates.py's and ages.py's


def _resolve(spans: list[Span], length: int) -> list[Span]:
    """Keep non-overlapping spans: higher priority first, then the longer, then the earlier."""
    taken = bytearray(length)
    chosen: list[Span] = []
    # Sorted by (-priority, -length, start, index): the index keeps the sort stable (spans with equal
    # keys in the order they were found). The four fields are packed into one integer per span
    # (ints sort several times faster than tuples), each in a field wide enough for its largest value.
    width = max(length, len(spans)).bit_length() + 1
    mask = (1 << width) - 1
    priorities = {s.priority for s in spans}
    if not priorities or not all(type(p) is int and 0 <= p < 1 << 16 for p in priorities):
        return _resolve_tuples(spans, length)
    top, shift_length, shift_start = (1 << 16) << (3 * width), 2 * width, width
    keyed = [
        top - (s.priority << (3 * width)) + ((length - s.end + s.start) << shift_length) + (s.start << shift_start) + i
        for i, s in enumerate(spans)
    ]
    keyed.sort()
    find = taken.find
    for key in keyed:
        span = spans[key & mask]
        start, end = span.start, span.end
        if find(1, start, end) == -1:
            taken[start:end] = _ONES[: end - start] if end - start <= len(_ONES) else b"\x01" * (end - start)
            chosen.append(span)
    chosen.sort(key=_START)
    return chosen


def _resolve_tuples(spans: list[Span], length: int) -> list[Span]:
    """_resolve for priorities outside the packed key's field (none today): the same order as tuples."""
    taken = bytearray(length)
    chosen: list[Span] = []
    keyed = [(-s.priority, s.start - s.end, s.start, i) for i, s in enumerate(spans)]
    keyed.sort()
    find = taken.find
    for _p, negative_length, start, i in keyed:
        end = start - negative_length
        if find(1, start, end) == -1:
            taken[start:end] = _ONES[: end - start] if end - start <= len(_ONES) else b"\x01" * (end - start)
            chosen.append(spans[i])
    chosen.sort(key=_START)
    return chosen


_ONES = b"\x01" * 4096
_START = attrgetter("start")


def detect(text: str, types=None, max_length: int = DEFAULT_MAX_LENGTH, budget: Budget | None = None) -> list[Span]:
    """Spans (offsets into `text`, in order, non-overlapping) of the identifiers found. With a
    `budget`, raises BudgetExceeded once the request has spent it (see Budget)."""
    if not isinstance(text, str):
        raise DeidError(f"expected text (str), got {type(text).__name__}")
    check_length(len(text), max_length)
    kinds = _check_types(types)
    if budget is None:
        return _detect(text, kinds, None)
    since = time.thread_time()
    try:
        budget.check(since)
        spans = _detect(text, kinds, (lambda: budget.check(since)) if len(text) >= _CHECK_EVERY_PASS_FROM else None)
        budget.check(since)
        return spans
    finally:
        budget.spent += time.thread_time() - since


def _detect(text: str, kinds: frozenset[str], check) -> list[Span]:
    canon = canonicalise(text)
    spans = [s for s in _candidates(canon.text, kinds, check) if s.type in kinds and s.end > s.start]
    # families read off the candidates: a town after an address, an age after a name ... (late.py)
    spans += [s for s in late.find_late(canon.text, spans, kinds) if s.type in kinds and s.end > s.start]
    chosen = _resolve(spans, len(canon.text))
    if model.enabled():  # the trained tagger: names and places beside the rules' (model.py)
        if check:
            check()
        chosen = model.merge(canon.text, chosen, kinds, check=check)  # and between its segments
    if not canon.changed:  # offsets are the original's: the spans as they are (frozen, so shared)
        return chosen
    mapped = canon.originals(chosen)
    return [Span(start, end, s.type, s.priority) for s, (start, end) in zip(chosen, mapped, strict=True)]


_SEPARATORS = re.compile(r"[\s\-./()·・]+")


def _canonical(kind: str, value: str) -> str:
    """One spelling per value, so that "(617) 555-0143", "617.555.0143" and "٦١٧-٥٥٥-٠١٤٣" get the
    same token."""
    value = unicodedata.normalize("NFKC", canonical_text(value)).casefold()
    if kind == NAME:
        return " ".join(value.split())
    return _SEPARATORS.sub("", value)


def pseudonym(kind: str, value: str, key: bytes) -> str:
    digest = hmac.new(key, f"{kind}\x00{_canonical(kind, value)}".encode(), hashlib.sha256).hexdigest()
    return f"[{kind}-{digest[:TOKEN_HEX_DIGITS]}]"


def _mask(value: str) -> str:
    return "".join("*" if ch.isalnum() else ch for ch in value)


def _replacement(mode: str, kind: str, value: str, key: bytes | None, mapping=None) -> str:
    # AGE and ZIP follow Safe Harbor's "90 or older" and ZIP3 rules: see safeharbor.py.
    if kind == AGE:
        number, unit = safeharbor.split_age_unit(value)
        if unit:  # "95岁" -> "90+岁", "**岁", "[AGE-…]岁", a surrogate age + 岁
            return _replacement(mode, kind, number, key, mapping) + unit
    if mode == SURROGATE:
        return mapping.surrogate(kind, value)
    if mode == REDACT:
        return safeharbor.redacted(kind, value) or f"[{kind}]"
    if mode == MASK:
        return safeharbor.masked(kind) or _mask(value)
    return pseudonym(kind, safeharbor.pseudonym_value(kind, value), key)


def _check_mode(mode: str, key, mapping=None) -> str:
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise InvalidMode(f"unknown de-identification mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == SURROGATE:
        from .surrogate import MappingRequired, SurrogateMap

        if not isinstance(mapping, SurrogateMap):
            raise MappingRequired("surrogate mode needs a SurrogateMap (mapping=SurrogateMap())")
    if mode == PSEUDONYMISE and (not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES):
        raise KeyRequired(f"pseudonymise needs an HMAC key of at least {MIN_KEY_BYTES} bytes")
    return mode


def deidentify(
    text: str,
    mode: str = REDACT,
    key: bytes | None = None,
    types=None,
    max_length: int = DEFAULT_MAX_LENGTH,
    budget: Budget | None = None,
    mapping=None,
) -> Result:
    """Replace every identifier found in `text` according to `mode`; count them by type. With a
    `budget` (one per request), raises BudgetExceeded instead of finishing once it is spent.
    `mapping`: the SurrogateMap of the call or conversation, for mode "surrogate" (it is updated)."""
    mode = _check_mode(mode, key, mapping)
    spans = detect(text, types, max_length, budget)
    pieces: list[str] = []
    pos = 0
    for s in spans:
        pieces.append(text[pos : s.start])
        pieces.append(_replacement(mode, s.type, text[s.start : s.end], bytes(key) if key else None, mapping))
        pos = s.end
    pieces.append(text[pos:])
    return Result("".join(pieces), dict(Counter(s.type for s in spans)))
