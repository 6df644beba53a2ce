"""Ages over 89 (Safe Harbor (C)), in English and Chinese, in digits or in words.

Safe Harbor removes every age over 89 and lets what remains say only "90 or older". An age is a
number from 90 to 119 (digits, English words, Chinese numerals) that the words around it make an
age:

- after it: "95-year-old", "95 years old", "95 years of age", "95 yo", "95 y/o", "95yoF", "a 95M",
  "95 F", "95/M", "95th birthday", "ninety-five-year-old", 95岁, 95周岁, 九十五岁, 一百零二岁, 百岁;
- before it: "age 95", "aged 95", "age: 95", "at the age of 95", "lived to 95", "died at 95",
  "turned 95", 年龄：92, 享年95, 现年95;
- a person and a verb before it: "she is 95", "the patient is now 95", "mother, currently 95,";
- a word that is itself an age of 100 or more: "centenarian", "supercentenarian", 期颐.

Decade words that say no more than the Safe Harbor category itself are kept: "in her 90s",
"in his nineties", "nonagenarian", 九旬, 年过九旬 (each says 90–99; "90 or older" is what Safe Harbor
lets through, and the decade adds only "not 100+"). Numbers followed by a unit ("95 mg", "95 kg",
"95%", "95/60", "aged 95 days"), or after a vital sign ("HR now 95", "temp 95 F"), are not ages.

The span is the number (or the age word) alone, so the replacement keeps the words around it:
"a 90+-year-old". In Chinese the unit 岁/周岁 is part of the span ("95岁", as Chinese annotators
mark it) and the replacement puts it back: "90+岁" (see safeharbor.py and engine.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from . import fastre
from .spans import AGE, Span

_PRIORITY = 62

# ---- the number: 90–119 ------------------------------------------------------------------------

_UNITS_EN = "one|two|three|four|five|six|seven|eight|nine"
_TEENS_EN = "ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen"
_ORD_UNITS_EN = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"
_ORD_TEENS_EN = "tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth"
_HUNDRED = r"(?:one|a)[\s-]hundred"

# Cardinals in words: ninety, ninety-five, ninety five, one hundred, a hundred and two, one hundred nineteen.
_WORDS = (
    rf"(?:ninety(?:[\s-](?:{_UNITS_EN}))?|{_HUNDRED}(?:[\s-](?:and[\s-])?(?:{_UNITS_EN}|{_TEENS_EN}))?)(?![A-Za-z])"
)
_ORD_WORDS = (
    rf"(?:ninetieth|ninety[\s-](?:{_ORD_UNITS_EN})|{_HUNDRED}th"
    rf"|{_HUNDRED}[\s-](?:and[\s-])?(?:{_ORD_UNITS_EN}|{_ORD_TEENS_EN}))(?![A-Za-z])"
)
_LEFT = r"(?<![0-9])(?<![0-9][.,])"
_DIGITS = rf"{_LEFT}(?:9\d|1[01]\d)(?![0-9]|[.,]\d)"
_NUM = rf"(?P<v>{_DIGITS}|(?<![A-Za-z-]){_WORDS})"

# Chinese numerals: 九十, 九十五, 一百, 百, 一百零二, 一百一十, 一百一十九, 一百十二; digits as above.
_CN_DIGIT = "一二三四五六七八九"
_CN_NUM = (
    rf"(?<![〇零一二三四五六七八九十百千万两])"
    rf"(?:九十[{_CN_DIGIT}]?|一?百(?:零[{_CN_DIGIT}]|一?十[{_CN_DIGIT}]?)?)"
)
_CN_V = rf"(?P<v>{_DIGITS}|{_CN_NUM})"

# ---- what may not follow an age ----------------------------------------------------------------

# A unit, a percentage, a fraction or a range after the number makes it a measurement or a duration.
_NOT_AGE_AFTER = (
    r"(?!\s?(?:%|/\s?\d|°|percent|per\b|mg|mcg|µg|ug|g\b|gm|kg|lb|lbs|pounds?|kilos?|oz|cm|mm|ml|mL|l\b|dl|dL"
    r"|bpm|beats|breaths|degrees?|mmhg|mm\s?hg|mmol|meq|units?|iu|u\b|days?|d\b|weeks?|wks?|w\b|months?|mos?|mo\b"
    r"|hours?|hrs?|h\b|minutes?|mins?|seconds?|secs?|s\b|times|x\b|th\b|st\b|nd\b|rd\b|feet|ft|foot|inch(?:es)?"
    r"|meters?|metres?|m\b|miles?|km|steps|points?|pts?|people|patients|beds|cases|am\b|pm\b|o'clock|percentile"
    r"|天|日|周|个月|月|小时|分钟|次|毫|千克|公斤|斤|克|厘米|米|度|℃))"
)

# Measurements that a bare "now 95" / "is 95" may be about: such a number is not an age.
_VITALS = re.compile(
    r"(?<![A-Za-z])(?:HR|heart\srate|pulse|(?-i:P|T|K|Na)|SpO2|SaO2|O2|sats?|saturation|oxygen|BP|SBP|DBP|MAP|RR|resp\w*|temp\w*"
    r"|glucose|sugar|BG|BS|FSBG|weight|wt|Hb|Hgb|hemoglobin|score|level|count|rate|EF|GCS|FiO2|INR|Cr|creatinine|pain"
    r"|platelets?|PLT|WBC|systolic|diastolic|IQ|MMSE|MoCA|ABI|GFR|eGFR|albumin|sodium|BUN|LDL|HDL|A1c|PSA"
    r"|体温|脉搏|心率|血压|血糖|血氧|呼吸|体重|评分)(?![A-Za-z])",
    re.I,
)

# ---- the patterns ------------------------------------------------------------------------------

_PERSON = (
    r"(?:she|he|who|patient|pt|the\spatient|mother|father|mom|dad|grandmother|grandfather|grandma|grandpa"
    r"|husband|wife|spouse|sister|brother|aunt|uncle|widow|widower|resident|lady|gentleman|man|woman)"
)
_ADVERB = r"(?:(?:now|currently|presently|still|just|nearly|almost|over|already|today)\s)?"

_EN_RES = (
    # 95-year-old, 95 years old, 95 yrs of age, ninety-five-year-old, 95-year-old's
    re.compile(rf"{_NUM}\s?-?\s?(?:years?|yrs?\.?|y)\s?-?\s?(?:old|of\sage|o\b|/o|\.o\.?)", re.I),
    # 95 yo, 95yo, 95 y/o, 95 y.o., 95yoF, 95 yo M, 95y M
    re.compile(rf"{_NUM}\s?(?:yo|y/o|y\.o\.?|-yo|y(?=\s?[MF]\b))(?:[MFmf](?![A-Za-z]))?(?![A-Za-z/])", re.I),
    # a 95M, 95 M, 95 F, 95 male, 95/F — sex letters upper case only ("95 m" is metres)
    re.compile(rf"{_NUM}(?:\s?/?\s?(?-i:M|F)|\s(?:male|female|man|woman))(?![A-Za-z0-9/°])", re.I),
    # 95th birthday, ninety-fifth birthday
    re.compile(
        rf"(?P<v>{_LEFT}(?:9\d|1[01]\d)(?:st|nd|rd|th)|(?<![A-Za-z-]){_ORD_WORDS})\s(?:birthday|year\sof\slife)",
        re.I,
    ),
    # age 95, aged 95, age: 95, Age 95y, at the age of 95, lived to 95, died at 95
    re.compile(
        rf"(?<![A-Za-z])(?:age|aged|ages|age\sof|at\sage|at\sthe\sage\sof|lived\sto|lived\sto\sbe|died\sat|died\saged"
        rf"|age\sis|age\swas)\s?[:=]?\s?(?:about\s|around\s)?{_NUM}{_NOT_AGE_AFTER}",
        re.I,
    ),
    # turned 95, reached 95 (checked against vital signs before it: "glucose reached 95")
    re.compile(
        rf"(?<![A-Za-z])(?:turned|turns|turning|will\sturn|reached|reaching|celebrated|celebrating)\s{_NUM}"
        rf"{_NOT_AGE_AFTER}(?![A-Za-z])",
        re.I,
    ),
    # she is 95, the patient is now 95, he's 95, who was 95; the person speaking: "I'm ninety-six", "I am 93"
    re.compile(
        rf"(?<![A-Za-z])(?:{_PERSON}(?:\sis|\swas|'s|\sturned|\sis\snow|,)|I[’']m|I\sam|I\sturned|I[’']ll\sbe)"
        rf"\s{_ADVERB}{_NUM}{_NOT_AGE_AFTER}(?![A-Za-z%])",
        re.I,
    ),
)

# An age in apposition to a named patient: "Pt Ivo Marsh, 96, lives alone", "Mrs. Abbott (93) fell".
_NAMED_RE = re.compile(
    rf"(?<![A-Za-z])(?i:pt|patient|resident)\.?\s(?:[A-Z][A-Za-z'’-]+\s){{0,2}}[A-Z][A-Za-z'’-]+"
    rf"(?:,\s|\s\()(?P<v>{_DIGITS})(?=\s?[,;)])"
    rf"|(?<![A-Za-z])(?:Mr|Mrs|Ms|Miss|Mx)\.?\s(?:[A-Z][A-Za-z'’-]+\s){{0,2}}[A-Z][A-Za-z'’-]+"
    rf"(?:,\s|\s\()(?P<w>{_DIGITS})(?=\s?[,;)])"
)

# An age in apposition to a relative or a full name: "sister Mabel (91)", "Wilma Dykstra, 96, lives".
_APPOSITION_RE = re.compile(
    rf"(?<![A-Za-z])(?i:sister|brother|mother|father|wife|husband|spouse|partner|aunt|uncle|neighbou?r|friend"
    rf"|grandmother|grandfather|grandma|grandpa|mom|dad|resident|client|roommate)\s[A-Z][A-Za-z'’-]+"
    rf"(?:\s[A-Z][A-Za-z'’-]+)?(?:,\s|\s\()(?P<v>{_DIGITS})(?=\s?[,;)])"
    # a relative with no name, the age in brackets: "my mom (94) fell", "her father (101)"
    rf"|(?<![A-Za-z])(?i:my|his|her|their|pt'?s|patient'?s|the)\s(?i:sister|brother|mother|father|wife|husband"
    rf"|spouse|partner|aunt|uncle|grandmother|grandfather|grandma|grandpa|mom|mum|dad|mama|papa)\s\((?P<x>{_DIGITS})\)"
    rf"|(?<![A-Za-z])[A-Z][a-z'’-]+\s[A-Z][a-z'’-]+,\s(?P<w>{_DIGITS})(?=,)"
)

# ", now 95," / ", currently 95 and" / "Currently 95, she": checked against vital signs before it.
_WEAK_RE = re.compile(
    rf"(?:(?<=[,(;:])\s?|^|(?<=[.!?]\s))(?:now|currently|presently|today)\s{_NUM}{_NOT_AGE_AFTER}"
    r"(?=\s?[,.;:)!?]|\s?$|\s(?:and|but|who|with|lives|living|is|was|she|he|years?)\b)",
    re.I | re.M,
)

_CN_RES = (
    # 95岁, 95 岁, 95周岁, 九十五岁, 一百零二岁, 百岁老人, 95岁高龄 (the unit 岁 inside the span)
    re.compile(rf"{_CN_V}(?:\s?(?P<u>周岁|岁|歲|週歲)|\s?高龄)"),
    # 年龄：92, 年龄92岁 (the 岁 pattern finds it too), 享年95, 现年九十五
    re.compile(
        # also as a table's label cell and value cell: "| 年龄 | 92 |"
        rf"(?:年龄|年纪|年齡|享年|终年|现年|今年已|今年|高龄|虚岁|实岁)\s?(?:[:：]|\s?[|｜])?\s?(?:已|约)?\s?{_CN_V}"
        rf"(?![0-9〇零一二三四五六七八九十百]){_NOT_AGE_AFTER}"
    ),
)

# Words that are themselves an age over 89 — of 100 or more (centenarian, 期颐), or in the nineties
# (nonagenarian, "in her nineties", 九旬): each narrower than Safe Harbor's single "90 or older", so replaced.
_WORD_RE = re.compile(
    r"(?<![A-Za-z])(?P<v>(?:semi-?)?super-?centenarians?|centenarians?|nonagenarians?)(?![A-Za-z])"
    # a person's decade over 89 (not "the 90s", a decade of the calendar): "in her nineties", "his late 90s"
    r"|(?<![A-Za-z])(?:his|her|their|my|your)\s(?P<d>(?:early\s|mid-?\s?|late\s)?(?:90['’]?s|nineties))(?![A-Za-z])"
    r"|(?P<cn>期颐|一?百(?:多|余)(?:岁|周岁)"
    # in their nineties (every such age is over 89): 九旬, 年逾九旬, 九十多岁; 八旬 (80s) is not
    r"|(?:年逾|年过|年近)?九旬|九十(?:多|余|几)(?:岁|周岁)"
    # the literary "ninety and five" (九十有五, 百有二): said of a person's age only
    r"|(?<![〇零一二三四五六七八九十])(?:九十|一?百)有[一二三四五六七八九])",
    re.I,
)


def _vital_before(text: str, start: int) -> bool:
    """A vital sign or lab name earlier in the same clause ("HR 110 on arrival, now 95")."""
    window = text[max(0, start - 48) : start]
    cut = max(window.rfind("."), window.rfind(";"), window.rfind("\n"), window.rfind("。"))
    return _VITALS.search(window[cut + 1 :]) is not None


def _temperature_before(text: str, start: int) -> bool:
    window = text[max(0, start - 16) : start]
    return re.search(r"(?<![A-Za-z])(?:T|temp\w*|Tmax|体温)(?![A-Za-z])", window, re.I) is not None


# Every age pattern holds one of these: the patterns run only in a window around each, so a text
# with few candidate numbers costs one scan.
_TRIGGER = re.compile(r"(?<![0-9])(?:9\d|1[01]\d)(?![0-9])|ninet|hundred|centenar|nonagen|九十|九旬|百|期颐", re.I)
_BEFORE, _AFTER = 48, 40  # longer than any cue before the number, any unit or cue after it


def _windows(text: str) -> Iterator[tuple[int, int]]:
    start = end = -1
    for m in _TRIGGER.finditer(text):
        lo, hi = max(0, m.start() - _BEFORE), min(len(text), m.end() + _AFTER)
        if lo > end:
            if end > start:
                yield start, end
            start = lo
        end = hi
    if end > start:
        yield start, end


def find_ages(text: str) -> Iterator[Span]:
    seen: set[tuple[int, int]] = set()
    for lo, hi in _windows(text):
        for span in _find(text, lo, hi):
            if (span.start, span.end) not in seen:
                seen.add((span.start, span.end))
                yield span


def _find(text: str, lo: int, hi: int) -> Iterator[Span]:
    # pos/endpos, not a slice: look-behinds still see the text before the window.
    for i, regex in enumerate(_EN_RES):
        for m in regex.finditer(text, lo, hi):
            start = m.start("v")
            if i == 2 and _temperature_before(text, start):
                continue  # "temp 95 F" is hypothermia, not a 95-year-old woman
            if i in (5, 6) and _vital_before(text, start):
                continue
            yield Span(start, m.end("v"), AGE, _PRIORITY)
    for m in _NAMED_RE.finditer(text, lo, hi):
        group = "v" if m.group("v") else "w"
        if not _vital_before(text, m.start(group)):  # "Pt HR, 95, regular"
            yield Span(m.start(group), m.end(group), AGE, _PRIORITY)
    for m in _APPOSITION_RE.finditer(text, lo, hi):
        group = "v" if m.group("v") else "w" if m.group("w") else "x"
        if not _vital_before(text, m.start(group)):
            yield Span(m.start(group), m.end(group), AGE, _PRIORITY)
    for m in _WEAK_RE.finditer(text, lo, hi):
        if not _vital_before(text, m.start()):
            yield Span(m.start("v"), m.end("v"), AGE, _PRIORITY)
    for regex in _CN_RES:
        for m in regex.finditer(text, lo, hi):
            end = m.end("u") if "u" in regex.groupindex and m.group("u") else m.end("v")
            yield Span(m.start("v"), end, AGE, _PRIORITY)
    for m in _WORD_RE.finditer(text, lo, hi):
        group = "v" if m.group("v") else "d" if m.group("d") else "cn"
        yield Span(m.start(group), m.end(group), AGE, _PRIORITY)


fastre.accelerate(globals())  # after every pattern: see fastre.py
