"""Date and age families for text written by others (a recall-first complement to dates.py and ages.py).

dates.py takes a month/day after a word from its list of events; a note written by someone else
dates events with words no list holds ("recheck 7/22", "bike fall 6/21"). Here a FAMILY is taken
whole, and what it must not be is said instead:

- **m/d anywhere**, unless it is a score, a fraction or
  a count by the words around it (pain 3/10, strength 5/5, 1/2 tab, 2/6 murmur, 12/36 sessions,
  1/2 ppd, a card's "exp 08/27");
- **a month name with a day in any order and spelling**: "March the 3rd", "January fifth", "the
  fifth of January", "Jan-05", "05Jan2024", "mid-Sept", "early Jan", "end of Oct";
- **a weekday alone** ("seen Tuesday", "on Sat"; not a plural, "Mondays") and its Chinese forms
  (星期二, 礼拜天, 上周三, 下周五, 本周四);
- **a holiday named alone** (Thanksgiving, Christmas, New Year's, 除夕, 元旦, 大年三十; not
  "Christmas tree");
- Chinese **month/day without 日** (3月5), a month with 份 (5月份) or after 于/在/自/从 (于9月开学), a
  dotted date in brackets after a signature (钮主任（5.12）).

Ages over 89: any 9x/1xx number next to an age unit in any order and spacing ("95 y", "93y",
"95 yrs", "95 years young"), after "a woman/man … of", after "at" before a clause ("at 95 she"),
and an ordinal birthday after a possessive ("her 95th").

Spans rank just below those of dates.py and ages.py, so where both find a date theirs is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from . import fastre
from .spans import AGE, DATE, Span

DATE_PRIORITY = 48
AGE_PRIORITY = 61

_M = r"(?:1[0-2]|0?[1-9])"
_D = r"(?:3[01]|[12]\d|0?[1-9])"
# what a fraction, a score or a count has after it
_NOT_AFTER = (
    r"(?![0-9A-Za-z]|[./-]\d|\s?(?:tab|tablet|pill|cap|of\b|strength|murmur|pain|scale|score|power|reflex|in\b|on\b"
    r"|x\b|%|mm|cm|mg|ml|units?\b|dose|sessions?|days?\b|weeks?\b|wk|cycles?|visits?|children|kids|patients?"
    r"|times?\b|hrs?\b|hours?\b|positive|negative|lobes?|vessels?|nodes?|criteria|points?|systolic|diastolic"
    r"|holosystolic|ppd|pack|packs|drinks?|beers?|glasses|cups?|servings?|flights?|stairs|blocks?|miles?))"
)
_MD_RE = re.compile(
    rf"(?<![0-9A-Za-z./:-]){_M}/{_D}{_NOT_AFTER}",
    re.I,
)
# what a fraction, a score or a count has before it
_MD_NOT_BEFORE = re.compile(
    r"(?:pain|strength|score|power|grade|murmur|reflexes?|take|takes|x|GCS|motor|sensation|vision|ratio|of|sat"
    r"|rate|AC|PS|PEEP|gravida|para|ht|MMSE|MoCA|dilated|effaced|station|fingers|scale|NIHSS|APGARs?|stage|level"
    r"|bowel|tone|mobility|cycle|session|day|week|dose|round|injection|tabs?|class|NYHA|CCS|ASA|Mallampati"
    r"|gtt|drops|puffs|taken|passed|out\s?of|positive|negative|exp|expires?|expiry|expiration|valid\sthru"
    r"|good\sthru|[0-9]|[<>=≤≥~+:/])\s*[:#]?\s*$",
    re.I,
)
_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December"
    "|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec"
)
# a full month name, or an abbreviation with its optional full stop
_MONTH = (
    "(?:January|February|March|April|May|June|July|August|September|October|November|December"
    "|(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\\.?)"
)
_ORD_WORDS = (
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth"
    "|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty-(?:first|second|third|fourth|fifth"
    "|sixth|seventh|eighth|ninth)|thirtieth|thirty-first"
)
_DAYN = rf"(?:(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?|(?i:{_ORD_WORDS}))"
_YEAR = r"(?:,?\s?(?:1[89]|20)\d\d(?!\d))?"
_MONTH_DAY_RES = (
    # March the 3rd, January fifth, Jan-05, Sept. 14th
    re.compile(rf"(?<![A-Za-z]){_MONTH}(?:\s(?:the\s)?|-){_DAYN}(?![0-9A-Za-z]){_YEAR}"),
    # the fifth of January, 3rd March, 05-Jan
    re.compile(rf"(?<![0-9A-Za-z]){_DAYN}(?:\s(?:of\s)?|-){_MONTH}(?![A-Za-z]){_YEAR}"),
    # 05Jan2024, 5JAN24
    re.compile(rf"(?<![0-9A-Za-z])(?:3[01]|[12]\d|0?[1-9])(?i:{_MONTHS})(?:\d{{2}}|\d{{4}})?(?![0-9A-Za-z])"),
    # mid-Sept, early Jan, end of Oct, beginning of Nov
    re.compile(
        rf"(?<![A-Za-z])(?i:early|mid|late|(?:the\s)?(?:beginning|start|middle|end)\sof)[\s-]{_MONTH}(?![A-Za-z])"
    ),
)
# a range of two m/d ("Index admission 8/9-8/14"): each end is a date
_MD_RANGE_RE = re.compile(
    rf"(?<![0-9A-Za-z./:-])(?P<a>{_M}/{_D})\s?-\s?(?P<b>{_M}/{_D})(?![0-9A-Za-z]|[./-]\d)",
)
# a month in capitals or any case with a day and a four-digit year: "02 APR 1957", "APR 02, 1957"
_MONTH_ANY = (
    r"(?i:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)"
)
_CAPS_DATE_RES = (
    re.compile(rf"(?<![0-9A-Za-z])(?:3[01]|[12]\d|0?[1-9])[\s-]{_MONTH_ANY}\.?[\s-](?:1[89]|20)\d\d(?!\d)"),
    re.compile(rf"(?<![A-Za-z]){_MONTH_ANY}\.?[\s-](?:3[01]|[12]\d|0?[1-9]),?[\s-](?:1[89]|20)\d\d(?!\d)"),
)
_WEEKDAY_RE = re.compile(
    r"(?<![A-Za-z])(?:(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day(?![A-Za-z'’])"
    r"|(?<=\bon\s)(?:Mon|Tue|Tues|Wed|Thu|Thur|Thurs|Fri|Sat|Sun)\.?(?![A-Za-z]))"
)
_HOLIDAY_RE = re.compile(
    r"(?<![A-Za-z])(?:Thanksgiving|Christmas|Xmas|Easter|Halloween|Hanukkah|Chanukah|Passover|Diwali|Kwanzaa"
    r"|New\sYear'?s?(?:\s(?:Day|Eve))?|Lunar\sNew\sYear|Chinese\sNew\sYear|Rosh\sHashanah|Yom\sKippur|Juneteenth"
    r"|Independence\sDay|Fourth\sof\sJuly|July\s4th|Labor\sDay|Memorial\sDay|Veterans\sDay|Mother'?s\sDay"
    r"|Father'?s\sDay|Valentine'?s\sDay|Super\sBowl\sSunday)(?![A-Za-z])"
    r"(?!\s(?:tree|trees|card|cards|gift|gifts|music|song|songs|carols?|lights|decorations?|cactus|lily|lilies"
    r"|bonus|shopping|sale|movie|special|stocking|ornaments?|spirit|story|stories|themed|island))"
)
_ZH_DATE_RES = (
    re.compile(r"(?:星期|礼拜)[一二三四五六日天](?![一二三四五六七八九十])"),
    re.compile(r"(?:上|下|本|这|这个|上个|下个)(?:周|星期|礼拜)[一二三四五六日天末](?![一二三四五六七八九十])"),
    re.compile(r"除夕|元旦|大年三十|大年初[一二三四五六七八九十]|年三十"),
    # 3月5 (no 日), 5月份
    re.compile(r"(?<![0-9.])(?:1[0-2]|[1-9])月(?:3[01]|[12]\d|[1-9])(?![0-9日号次个例天岁年周分%.])"),
    re.compile(r"(?<![0-9.])(?:1[0-2]|[1-9])月份"),
    re.compile(r"(?<=[于在自从至到])(?:1[0-2]|[1-9])月(?![0-9余多内后前来个以初中下上底旬])"),
    # a dotted month.day in brackets after a signature: 钮主任（5.12）
    re.compile(
        r"(?<=主任|医师|医生|护士|老师|签名|签字|药师)[（(]\s?(?P<v>(?:1[0-2]|[1-9])\.(?:3[01]|[12]\d|[1-9]))\s?[）)]"
    ),
)
_HAN_GATE = re.compile(r"[\u4e00-\u9fff]")

_AGE_N = r"(?:9\d|1[01]\d)"
_AGE_RES = (
    # 95 y, 93y, 93-y, 95 yrs, 95 years young, 95 yr. old (the number alone is the span)
    re.compile(
        rf"(?<![0-9A-Za-z.,/$#-])(?P<v>{_AGE_N})(?=\s?-?\s?(?:y|yr|yrs|years?)\.?(?:\s(?:old|young|of\sage))?(?![A-Za-z])"
        r"(?!\s(?:ago|later|earlier|before|after|since|of\s(?!age)|in\b|on\b|experience|service|married|supply)))",
        re.I,
    ),
    # a woman of 95, a gentleman of 101
    re.compile(
        rf"(?<![A-Za-z])(?i:woman|man|lady|gentleman|female|male|widow|widower|veteran|grandmother|grandfather"
        rf"|patient|pt)\sof\s(?P<v>{_AGE_N})(?![0-9A-Za-z%]|\.\d)"
    ),
    # at 95 she still …, at 101, he …
    re.compile(
        rf"(?<![A-Za-z])(?i:at)\s(?P<v>{_AGE_N})(?=,?\s(?i:she|he|they|I|the\spatient|pt|is|was|still|remains|lives"
        r"|continues|remained|walked|drives|moved)\b)"
    ),
    # a full name in apposition: "Walter Krantz, 96, comfortable", 'Walter "Buddy" Krantz, 96,' (two
    # capitalised words, the last with a vowel: not "Patient Plt, 95," — a platelet count)
    re.compile(
        r"(?<![A-Za-z])(?!(?:Heart|Pulse|Resp|Respiratory|Blood|Oxygen|Glucose|Sugar|Serum|Sodium|Potassium|Urine"
        r"|Weight|Height|Temp|Temperature|Platelet|Platelets|Mean|Systolic|Diastolic|Sat|Saturation|Fasting)\b)"
        r"[A-Z][a-z'’-]+(?:\s\"[^\"\n]{1,20}\")?\s(?!(?:Rate|Rates|Count|Level|Pressure|Score|Sat|Saturation|Sugar"
        r"|Glucose|Temp|Index)\b)[A-Z](?=[a-z'’-]*[aeiouy])[a-z'’-]{2,}"
        rf"(?:\s\([^()\n]{{1,20}}\))?,\s(?P<v>{_AGE_N})(?=[,;)]|\s(?:and|with|who|is|was|has"
        r"|comfortable|lives|alert|frail|resides|seen|admitted)\b)"
    ),
    # "90 today!", "is 95 this week", "turned 97 last week"
    re.compile(
        r"(?:(?<=[.!?]\s)|^|(?<=\bis\s)|(?<=\bwas\s)|(?<=\bbe\s)|(?<=\bnow\s)|(?<=\bturns\s)|(?<=\bturned\s)"
        rf"|(?<=\bturning\s))(?P<v>{_AGE_N})"
        r"(?=\s(?:today|tomorrow|next\s(?:week|month)|this\s(?:week|month|year)|last\s(?:week|month))\b)",
        re.M,
    ),
    # an age in words standing alone: "Yes, ninety", "she is ninety-four" (not "ninety percent", "ninety days")
    re.compile(
        r"(?<![A-Za-z-])(?<!nearly\s)(?<!almost\s)(?<!around\s)(?<!about\s)(?<!under\s)(?<!close\sto\s)"
        r"(?P<v>(?i:ninety(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?"
        r"|one\shundred(?:(?:\sand)?[- ](?:one|two|three|four|five|six|seven|eight|nine|ten))?))(?![A-Za-z-])"
        r"(?!\s?(?:percent|%|per\b|days?|minutes?|mins?|seconds?|secs?|hours?|hrs?|weeks?|months?|times|mg|ml|units?"
        r"|dollars|cents|pounds|lbs?|kg|miles?|feet|ft|yards?|degrees?|beats?|bpm|breaths?|over|x\b|cc|mmHg|steps"
        r"|patients|people|cases|beds|pages|tablets|pills|milligrams|milliliters|millilitres))",
    ),
    # her 95th (birthday), his 100th
    re.compile(
        rf"(?<![A-Za-z])(?i:her|his|their|my|your|pt's|patient's)\s(?P<v>{_AGE_N})(?:st|nd|rd|th)(?![A-Za-z])"
        r"(?!\s(?:percentile|centile|day|week|visit|dose|admission|time|cycle|session))"
    ),
)


# A Chinese age in brackets after an elder's or a person's title: 袁大爷（92）, 王奶奶（95岁）
_ZH_AGE_RE = re.compile(
    r"(?:(?<=大爷|大娘|奶奶|爷爷|老人|老太|老伯|阿姨|阿婆|婆婆|先生|女士|老汉|大妈|患者|外婆|外公|姥姥|姥爷)|(?<=老先生|老太太))"
    r"[（(](?P<v>9\d|1[01]\d)(?:岁|周岁)?[）)]"
)


fastre.accelerate(globals())  # every pattern above: see fastre.py


def find_tail(text: str, kinds: frozenset[str]) -> Iterator[Span]:
    if DATE in kinds:
        for m in _MD_RE.finditer(text):
            if not _MD_NOT_BEFORE.search(text, max(0, m.start() - 24), m.start()):
                yield Span(m.start(), m.end(), DATE, DATE_PRIORITY)
        for m in _MD_RANGE_RE.finditer(text):
            if not _MD_NOT_BEFORE.search(text, max(0, m.start() - 24), m.start()):
                yield Span(m.start("a"), m.end("a"), DATE, DATE_PRIORITY)
                yield Span(m.start("b"), m.end("b"), DATE, DATE_PRIORITY)
        for regex in (*_MONTH_DAY_RES, *_CAPS_DATE_RES):
            for m in regex.finditer(text):
                yield Span(m.start(), m.end(), DATE, DATE_PRIORITY)
        for regex in (_WEEKDAY_RE, _HOLIDAY_RE):
            for m in regex.finditer(text):
                yield Span(m.start(), m.end(), DATE, DATE_PRIORITY)
        if _HAN_GATE.search(text):
            for regex in _ZH_DATE_RES:
                for m in regex.finditer(text):
                    group = "v" if "v" in regex.groupindex else 0
                    yield Span(m.start(group), m.end(group), DATE, DATE_PRIORITY)
    if AGE in kinds:
        for regex in _AGE_RES:
            for m in regex.finditer(text):
                yield Span(m.start("v"), m.end("v"), AGE, AGE_PRIORITY)
        if _HAN_GATE.search(text):
            for m in _ZH_AGE_RE.finditer(text):
                yield Span(m.start("v"), m.end("v"), AGE, AGE_PRIORITY)
