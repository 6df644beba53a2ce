"""Person names: shipped dictionaries plus context.

English. A capitalised run of words is a name when a cue stands right before it ("Mr.", "Dr.",
"Patient:", "Name:", "daughter", "seen by"), or when it starts with a known given name (and is
not one of the given names that are also ordinary words, such as "Will" or "Grace"). Once a
name is found, its other occurrences in the same text are found too ("Mr. Okafor" ... "Okafor").

Chinese. A common surname followed by one or two given-name characters, after a cue (患者,
姓名：, 医生, 家属, 之女 ...) or before a title (先生, 女士, 医生, 主任 ...). Without a cue, Chinese
text is not searched for names: too many ordinary words start with a surname character (高血压).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from .spans import NAME, Span

_DATA = Path(__file__).with_name("data")
_HAN = "\u4e00-\u9fff"


def _load(filename: str) -> list[str]:
    lines = (_DATA / filename).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def dictionaries() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """(given EN, family EN, surnames ZH, given-name characters ZH, capitalised non-names EN)."""
    return (
        frozenset(_load("given_names_en.txt")),
        frozenset(_load("family_names_en.txt")),
        frozenset(_load("surnames_zh.txt")),
        frozenset("".join(_load("given_chars_zh.txt"))),
        frozenset(_load("not_names_en.txt")),
    )


# ---- English ---------------------------------------------------------------------------------

_TOKEN = r"[A-Z][A-Za-z'’]{1,30}(?:-[A-Z][A-Za-z'’]{1,30})?"
_RUN_RE = re.compile(rf"(?<![A-Za-z'’]){_TOKEN}(?:,?[ \t](?:[A-Z]\.[ \t]?)?{_TOKEN}){{0,3}}(?![A-Za-z])")
_TOKEN_RE = re.compile(rf"(?<![A-Za-z'’]){_TOKEN}(?![A-Za-z])")
_RELATION_WORDS = frozenset(
    [
        "mother",
        "father",
        "mom",
        "dad",
        "parent",
        "spouse",
        "wife",
        "husband",
        "son",
        "daughter",
        "sister",
        "brother",
        "sibling",
        "partner",
        "friend",
        "neighbor",
        "neighbour",
        "niece",
        "nephew",
        "grandson",
        "granddaughter",
        "grandchild",
        "grandmother",
        "grandfather",
        "grandma",
        "grandpa",
        "aunt",
        "uncle",
        "cousin",
        "boyfriend",
        "girlfriend",
        "fiance",
        "fiancee",
        "stepson",
        "stepdaughter",
        "roommate",
        "landlord",
        "employer",
        "colleague",
        "coworker",
    ]
)
_RELATIONS = "|".join(sorted(_RELATION_WORDS, key=len, reverse=True))
_TITLE_RE = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Drs|Prof|Professor|Doctor|Rev|Sr|Sister|Nurse|Judge|Officer|Capt|Sgt)\.?)[ \t]{1,2}"
)
_STRONG_RE = re.compile(
    r"(?:\b(?:(?:patient|pt|full|first|last|given|family|maiden)?\s?name|patient|pt|signed|signature|guarantor"
    r"|insured|subscriber|NOK|next of kin|attending|physician|provider|surgeon|anesth?esiologist|nurse|RN|NP"
    r"|resident|fellow|PCP|doctor|contact|emergency contact|guardian|caregiver|witness|interpreter|translator"
    r"|consultant|therapist|pharmacist|social worker|case manager|chaplain|author|cc)\s?[:：]"
    r"|\b(?:signed|dictated|transcribed|seen|evaluated|examined|reviewed|referred|accompanied|authored|verified"
    r"|cosigned|attested|performed|interpreted|read)\s(?:by|to)[:：]?"
    rf"|\b(?:{_RELATIONS})(?:'s)?(?:\s?name)?(?:\sis)?\s?[:：,-]?"
    r")\s{0,2}",
    re.I,
)
_WEAK_RE = re.compile(
    r"\b(?:with|to|from|per|and|for|called|paged|notified|informed|told|asked|visited|by|cc|of)[ \t]{1,2}", re.I
)
_CREDENTIALS_RE = re.compile(r",?\s(?:MD|M\.D\.|DO|RN|NP|PA-C|PA|PhD|MBBS|DDS|PharmD|LCSW|CNM|APRN|FNP|MSW)\b")


def _strip_possessive(token: str) -> str:
    return token[:-2] if token.endswith(("'s", "’s")) else token.rstrip("'’")


def _tokens(run_text: str, offset: int) -> list[tuple[int, int, str]]:
    out = []
    for m in _TOKEN_RE.finditer(run_text):
        tok = _strip_possessive(m.group())
        out.append((offset + m.start(), offset + m.start() + len(tok), tok))
    return out


def _is_word(tok: str, not_names: frozenset[str]) -> bool:
    return tok in not_names or tok.isupper() or tok.lower() in not_names


def _cue_strengths(text: str) -> dict[int, int]:
    """Where a name may start, and how strongly the text before says so: 3 after a title ("Dr. "),
    2 after a label or a relation ("Patient: ", "signed by ", "daughter, "), 1 after a weak cue
    ("with ", "per "). One linear pass per cue pattern, looked up by position."""
    ends: dict[int, int] = {}
    for regex, strength in ((_WEAK_RE, 1), (_STRONG_RE, 2), (_TITLE_RE, 3)):
        for m in regex.finditer(text):
            ends[m.end()] = max(strength, ends.get(m.end(), 0))
    return ends


def _english_names(text: str) -> Iterator[tuple[int, int]]:
    given, family, _, _, not_names = dictionaries()

    def surname_like(tok: str) -> bool:
        return tok in family or not _is_word(tok, not_names)

    cues = _cue_strengths(text)
    for run in _RUN_RE.finditer(text):
        toks = _tokens(run.group(), run.start())
        strength = cues.get(run.start(), 0)
        credentials = _CREDENTIALS_RE.match(text, run.end()) is not None
        i = 0
        while i < len(toks):
            tok = toks[i][2]
            word = _is_word(tok, not_names)
            nxt = toks[i + 1][2] if i + 1 < len(toks) else None
            starts = (
                (strength == 3 and (tok in family or tok in given))
                or not word
                and (
                    strength >= 2
                    or credentials
                    or tok in given
                    or (strength == 1 and tok in family)
                    or (nxt is not None and nxt in family and not _is_word(nxt, not_names))
                )
            )
            if not starts:
                strength = 2 if tok.lower() in _RELATION_WORDS else 0
                i += 1
                continue
            j = i + 1
            while j < len(toks) and j - i < 3 and toks[j][0] - toks[j - 1][1] <= 5 and surname_like(toks[j][2]):
                j += 1
            yield toks[i][0], toks[j - 1][1]
            strength, i = 0, j


# ---- Chinese ---------------------------------------------------------------------------------

_ZH_PREFIX = (
    "患者|病人|病患|患儿|姓名|医生|医师|主治医师|主治医生|经治医师|上级医师|住院医师|主任医师|副主任医师|护士|责任护士"
    "|家属|联系人|紧急联系人|签名|医师签名|记录人|记录者|陪同|陪护|监护人|配偶|丈夫|妻子|儿子|女儿|母亲|父亲|其子|其女"
    "|其妻|其夫|之子|之女|报告人|审核人|会诊医师|主刀医生|麻醉医师|药师|患者家属|被保险人|投保人|持卡人|户主|代理人"
)
_ZH_TITLES = "先生|女士|小姐|医生|医师|大夫|主任|护士长|护士|教授|老师|同志|阿姨|师傅|药师"
_ZH_PREFIX_RE = re.compile(rf"(?:{_ZH_PREFIX})[:：]?\s{{0,2}}(?=[{_HAN}])")
_ZH_BEFORE_BARE_SURNAME = set("请和与向找给及、，。：:（( \n\t")


_ZH_TITLE_RE = re.compile(_ZH_TITLES)


def _zh_surname_at(text: str, pos: int, surnames: frozenset[str]) -> int:
    if text[pos : pos + 2] in surnames:
        return 2
    return 1 if text[pos : pos + 1] in surnames else 0


def _is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def _zh_given_len(text: str, pos: int, given_chars: frozenset[str]) -> int:
    """How many of the (up to two) Han characters at pos belong to the name; 0 if none do."""
    g = [c for c in text[pos : pos + 2]]
    n_known = 0
    for c in g:
        if not _is_han(c) or c not in given_chars:
            break
        n_known += 1
    if n_known:
        return n_known
    after = lambda n: text[pos + n : pos + n + 1]  # noqa: E731
    for n in (2, 1):
        if len(g) >= n and all(_is_han(c) for c in g[:n]) and (not _is_han(after(n)) or after(n) in "男女"):
            return n
    return 0


def _chinese_names(text: str) -> Iterator[tuple[int, int]]:
    _, _, surnames, given_chars, _ = dictionaries()
    for m in _ZH_PREFIX_RE.finditer(text):
        pos = m.end()
        s = _zh_surname_at(text, pos, surnames)
        if s:
            g = _zh_given_len(text, pos + s, given_chars)
            if g:
                yield pos, pos + s + g
    for m in _ZH_TITLE_RE.finditer(text):
        found = _zh_name_before(text, m.start(), surnames, given_chars)
        if found:
            yield found


def _zh_name_before(text: str, end: int, surnames, given_chars) -> tuple[int, int] | None:
    """The longest surname + given-name characters that ends right before a title (王建国医生, 李主任)."""
    for k in (4, 3, 2, 1):
        start = end - k
        if start < 0:
            continue
        s = _zh_surname_at(text, start, surnames)
        if not s or s > k:
            continue
        given = text[start + s : end]
        if len(given) > 2 or not all(_is_han(c) and c in given_chars for c in given):
            continue
        if given or start == 0 or text[start - 1] in _ZH_BEFORE_BARE_SURNAME:
            return start, end
    return None


# ---- both ------------------------------------------------------------------------------------


def _propagate(text: str, found: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Other mentions of a name already found: "Maria Gonzalez" ... later "Gonzalez"."""
    _, _, _, _, not_names = dictionaries()
    words: set[str] = set()
    phrases: set[str] = set()
    for start, end in found:
        value = text[start:end]
        if _is_han(value[0]):
            if len(value) >= 2:
                phrases.add(value)
        else:
            words.update(t for t in re.split(r"[\s,.]+", value) if len(t) >= 3 and not _is_word(t, not_names))
    if words:
        for m in _TOKEN_RE.finditer(text):
            tok = _strip_possessive(m.group())
            if tok in words:
                yield m.start(), m.start() + len(tok)
    for phrase in phrases:
        pos = text.find(phrase)
        while pos != -1:
            yield pos, pos + len(phrase)
            pos = text.find(phrase, pos + len(phrase))


def find_names(text: str) -> Iterator[Span]:
    found = list(_english_names(text))
    found.extend(_chinese_names(text))
    seen = set(found)
    for start, end in found:
        yield Span(start, end, NAME, 40)
    for start, end in _propagate(text, found):
        if (start, end) not in seen:
            yield Span(start, end, NAME, 30)
