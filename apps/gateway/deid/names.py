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

from . import cues, fastre, safelist
from .spans import NAME, Span

_DATA = Path(__file__).with_name("data")
_HAN = "\u4e00-\u9fff"


def _load(filename: str) -> list[str]:
    lines = (_DATA / filename).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def dictionaries() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """(given EN, family EN, surnames ZH, given-name characters ZH, capitalised non-names EN).
    Loads the inversion pass's word lists too (safelist.py), so that engine.warm() builds them all."""
    safelist.safe_words()
    safelist.zh_words()
    return (
        frozenset(_load("given_names_en.txt") + _load("given_names_census.txt")),
        frozenset(_load("family_names_en.txt") + _load("family_names_census.txt")),
        frozenset(_load("surnames_zh.txt")),
        frozenset("".join(_load("given_chars_zh.txt"))),
        frozenset(_load("not_names_en.txt")),
    )


# ---- English ---------------------------------------------------------------------------------

_TOKEN = r"[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'’]{1,30}(?:-[A-ZÀ-ÖØ-Þa-z][A-Za-zÀ-ÖØ-öø-ÿ'’]{1,30})?"
_CRED = r"MD|M\.D\.|DO|RN|NP|PA-C|PA|PhD|MBBS|DDS|PharmD|LCSW|CNM|APRN|FNP|MSW|LPN|CNA|DNP|MPH|DCF|CRNA|RPh"
# A run of capitalised words; a credential after a comma ends the run ("Lena Marsh, NP").
_RUN_RE = re.compile(
    rf"(?<![A-Za-z'’]){_TOKEN}(?:,?[ \t](?!(?:{_CRED})\b)(?:[A-Z]\.[ \t]?)?{_TOKEN}){{0,3}}(?![A-Za-z])"
)
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
) | frozenset(w.lower() for w in _load("roles_en.txt"))
_RELATIONS = "|".join(re.escape(w).replace(r"\ ", r"\s") for w in sorted(_RELATION_WORDS, key=len, reverse=True))
_TITLE_RE = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Drs|Prof|Professor|Doctor|Rev|Sr|Sister|Nurse|Judge|Officer|Capt|Sgt)\.?)[ \t]{1,2}"
)
# A strong cue: a label and its colon, a verb before "by"/"to", or a relation word.
_NAME_LABELS = r"patient|pt|full|first|last|given|family|maiden"  # before "name"
_LABELS = (
    r"patient|pt|signed|signature|guarantor|insured|subscriber|NOK|next of kin|attending|physician|provider|surgeon"
    r"|anesth?esiologist|nurse|RN|NP|resident|fellow|PCP|doctor|contact|emergency contact|guardian|caregiver"
    r"|witness|interpreter|translator|consultant|therapist|pharmacist|social worker|case manager|chaplain|author|cc"
)
_STRONG_LABEL = rf"\b(?:(?:{_NAME_LABELS})?\s?name|{_LABELS})\s?[:：]"
_STRONG_VERB = (
    r"\b(?:signed|dictated|transcribed|seen|evaluated|examined|reviewed|referred|accompanied|authored|verified"
    r"|cosigned|attested|performed|interpreted|read)\s(?:by|to)[:：]?"
)
_STRONG_RELATION = rf"\b(?:{_RELATIONS})(?:'s)?(?:\s?name)?(?:\sis)?\s?[:：,-]?"
_STRONG_RE = re.compile(rf"(?:{_STRONG_LABEL}|{_STRONG_VERB}|{_STRONG_RELATION})\s{{0,2}}", re.I)
_WEAK_RE = re.compile(
    r"\b(?:with|to|from|per|and|for|called|paged|notified|informed|told|asked|visited|by|cc|of)[ \t]{1,2}", re.I
)
# A credential after a name ("J. Smith, RN"); not a role before one ("Hospice RN Deb Kline").
_CREDENTIALS_RE = re.compile(rf",?\s(?:{_CRED})\b(?![ \t]+[A-Z][a-z])")
# Given names that are also ordinary words: names only after a label or relation, or before a surname.
_WORD_GIVEN = frozenset(
    [
        "Will",
        "Hope",
        "Faith",
        "Joy",
        "Grace",
        "May",
        "Mark",
        "Rose",
        "Iris",
        "Dawn",
        "Rob",
        "Bill",
        "Sue",
        "Pat",
        "Art",
        "Bob",
        "Ray",
        "Jack",
        "Summer",
    ]
)
_PT_BEFORE_RE = re.compile(r"\b(?:pt|patient|Pt|Patient)\.?[ \t]{1,2}$")
# Roles written before a name without a colon ("Pt Rose Kowalczyk", "NP Quinn Albright",
# "caseworker Rob Delaney"); case-sensitive so "pt" inside prose is not taken for "Pt".
_ROLE_RE = re.compile(
    r"\b(?:Pt|PT|NP|RN|PA|LPN|Nurse|[Cc]aseworker|[Cc]ase worker|[Ss]ocial worker|[Pp]rescriber|[Oo]rdering"
    r"|[Oo]rdering provider|[Rr]eferring|[Rr]eferring provider|[Dd]ictated by|[Pp]rescribed by)\.?[:：]?[ \t]{1,2}"
)
# Age and sex right after a name: "Maria Lopez (82F)", "Yusuf Demir, 96M", "John Smith, 67 y/o",
# "Desmond Achebe (DOB ...", "Ann Lee is a 45-year-old".
_AFTER_RE = re.compile(
    r"[ \t]*(?:[,(（][ \t]*(?:\d{1,3}[ \t]?(?:[MF]|y/?o|yo|yrs?|years?)\b|\d{1,3}-year|age[d]?[ \t]\d|DOB"
    r"|D\.O\.B|born\b|MRN|male\b|female\b|man\b|woman\b"
    # a relation after the name: "Ada Brill (pt's granddaughter)", "Ada Brill, her niece,"
    rf"|(?:(?:the[ \t])?(?:pt|patient)['’]s|her|his|their)[ \t]+(?:{_RELATIONS})\b)"
    r"|[ \t]+(?:is|was)[ \t]+an?[ \t]+\d{1,3}[- ](?:year|yo\b|y/o)"
    # a header "Parker, Jordan — 29 — F", an age in apposition "Ada Brill, 96, lives ..."
    r"|[ \t]*[—–][ \t]*\d{1,3}\b|[ \t]+-[ \t]+\d{1,3}\b|,[ \t]?\d{1,3}[ \t]?[,;)])"
)
# A nickname in quotes inside a name ('Eleanor "Ellie" Vance') or introduced by a phrase
# ('goes by "Chuck"', "known as 'Bud'").
_NICK_INSIDE_RE = re.compile(
    rf"(?<![A-Za-z'’])({_TOKEN})[ \t]+[\"“‘'][A-Z][a-z]{{1,20}}[\"”’'][ \t]+({_TOKEN})(?![A-Za-z])"
)
_NICK_AFTER_RE = re.compile(
    r"\b(?i:goes[ \t]by|go(?:es)?[ \t]by[ \t]the[ \t]name|prefers[ \t]to[ \t]be[ \t]called|known[ \t]as|a\.?k\.?a\.?"
    r"|nicknamed)[ \t]+[\"“‘']([A-Z][a-z]{1,20})[.,!]?[\"”’']"
)
# Particles inside a family or given name: "Maria del Carmen", "Ana de la Cruz", "Pieter van der Berg".
_PARTICLE_RE = re.compile(
    rf"[ \t]+(?:(?:de[ \t]la|de[ \t]los|de[ \t]las|van[ \t]der|van[ \t]den|van[ \t]de|von[ \t]der"
    rf"|del|de|da|das|do|dos|di|du"
    rf"|van|von|der|den|la|le|bin|ibn|ben|al|el|y)[ \t]+)+{_TOKEN}(?![A-Za-z])"
)
# A capitalised word followed by one of these is an eponym or a scale, not a person
# ("Parkinson's disease", "Murphy's sign", "Bell palsy").
_EPONYM_AFTER_RE = re.compile(
    r"(?:'s|’s)?[ \t]+(?:disease|syndrome|sign|palsy|score|scale|coma|criteria|classification|test|reflex"
    r"|maneuver|manoeuvre|phenomenon|law|cells?|type|procedure|operation|repair|fracture|tumou?r|lymphoma"
    r"|sarcoma|ulcer|node|triad|catheter|tube|stockings?|position|rule|equation|formula)\b",
    re.I,
)
_ALLCAPS_RE = re.compile(
    r"(?<![A-Za-z'’])([A-Z][A-Z'’-]{1,30}),[ \t]?([A-Z][A-Z'’-]{1,30})(?:[ \t][A-Z]\.?(?![A-Za-z]))?"
)
_INITIALS_RE = re.compile(
    rf"(?=[A-Z]\.)(?<![A-Za-z.])(?:[A-Z]\.[ \t]?){{1,2}}{_TOKEN}(?![A-Za-z])|(?<![A-Za-z.])(?:[A-Z]\.){{2,3}}"
)
# Lower-case initials of a transcriptionist or scribe: "Transcribed by mlt", "dictated by: jkw".
_LOWER_INITIALS_RE = re.compile(
    r"(?<![A-Za-z])(?:[Tt]ranscribed|[Dd]ictated|[Tt]yped|[Ee]ntered|[Ss]cribed|[Ss]igned|[Kk]eyed)[ \t]by:?[ \t]{1,2}"
    r"([a-z]{2,4})(?![A-Za-z])"
)
_NOT_INITIALS = frozenset(
    [
        "the",
        "a",
        "an",
        "pt",
        "me",
        "us",
        "him",
        "her",
        "them",
        "my",
        "our",
        "his",
        "dr",
        "phone",
        "fax",
        "on",
        "at",
        "and",
        "per",
        "rn",
        "md",
        "np",
        "pa",
        "pt's",
        "self",
        "nurse",
        "mom",
        "dad",
        "son",
        "wife",
        "hand",
        "mail",
        "text",
        "voice",
        "both",
        "all",
        "staff",
    ]
)
# A street name after a house number ("48 Cherry Orchard Rd"): an address, not a person.
_STREET_AFTER_RE = re.compile(
    r"[ \t]+(?:St|Street|Rd|Road|Ave|Avenue|Blvd|Boulevard|Ln|Lane|Dr|Drive|Ct|Court|Way|Pl|Place|Ter|Terrace"
    r"|Cir|Circle|Pkwy|Parkway|Hwy|Highway|Trl|Trail)\b\.?"
)
_NUMBER_BEFORE_RE = re.compile(r"[0-9][A-Za-z]?[ \t]+$")
_MONTH_DAY_RE = re.compile(r"[ \t]+\d")
_MONTHS = frozenset(
    [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
)


def _strip_possessive(token: str) -> str:
    return token[:-2] if token.endswith(("'s", "’s")) else token.rstrip("'’")


def _run_shape(run_text: str) -> tuple[tuple[tuple[int, int, str], ...], bool]:
    """The tokens of a run (offsets into the run) and whether the run is *quiet*: with no cue
    before it or inside it, none of its words can start a name whatever follows the run (a
    credential, an eponym).

    Quiet: one word that is an ordinary word and not a given name, or that is neither ordinary nor
    in the name lists; or words that are all ordinary, none a given name nor a relation (a relation
    word is a cue for the next one). See _english_names: with strength 0 such a run yields nothing
    but a single unknown word right before an age phrase, which _english_names checks itself.
    Runs repeat ("Patient", "The", "BP"): _english_names keeps this per distinct run, for one text
    only (a process-wide cache would keep names from one request to the next)."""
    given, family, _, _, not_names = dictionaries()
    toks = []
    for m in _TOKEN_RE.finditer(run_text):
        tok = _strip_possessive(m.group())
        toks.append((m.start(), m.start() + len(tok), tok))

    def ordinary(tok: str) -> bool:
        return _is_word(tok, not_names) and tok not in given and tok not in _WORD_GIVEN

    if len(toks) == 1:
        tok = toks[0][2]
        quiet = ordinary(tok) or not (_is_word(tok, not_names) or tok in given or tok in family)
    else:
        quiet = all(ordinary(t) and t.lower() not in _RELATION_WORDS for _, _, t in toks)
    return tuple(toks), quiet


def _is_word(tok: str, not_names: frozenset[str]) -> bool:
    return tok in not_names or tok.isupper() or tok.lower() in not_names


def _cue_strengths(text: str) -> dict[int, int]:
    """Where a name may start, and how strongly the text before says so: 3 after a title ("Dr. "),
    2 after a label or a relation ("Patient: ", "signed by ", "daughter, "), 1 after a weak cue
    ("with ", "per "). One linear pass per cue pattern, looked up by position."""
    ends: dict[int, int] = {}
    for regex, strength in ((_WEAK_RE, 1), (_STRONG_RE, 2), (_ROLE_RE, 2), (_TITLE_RE, 3)):
        for m in regex.finditer(text):
            ends[m.end()] = max(strength, ends.get(m.end(), 0))
    return ends


def _english_names(text: str) -> Iterator[tuple[int, int]]:
    given, family, _, _, not_names = dictionaries()

    def surname_like(tok: str) -> bool:
        return tok in family or not _is_word(tok, not_names)

    cues = _cue_strengths(text)
    # per distinct run: (shape, quiet, offsets of its tokens after the first, whether a quiet run of
    # one word may still be a name before an age phrase: a word that is not an ordinary one)
    shapes: dict[str, tuple] = {}
    after_match = _AFTER_RE.match
    for run in _RUN_RE.finditer(text):
        offset = run.start()
        run_text = run.group()
        known = shapes.get(run_text)
        if known is None:
            shape, quiet = _run_shape(run_text)
            inner = tuple(s for s, _, _ in shape[1:])
            known = shapes[run_text] = (shape, quiet, inner, len(shape) == 1 and not _is_word(shape[0][2], not_names))
        shape, quiet, inner, lone_unknown = known
        # nothing in a quiet run can start a name (see _run_shape), except one unknown word before
        # an age phrase ("Garfield is a 12 yo M"); every cue strength is 1 or more
        if quiet and offset not in cues:
            if inner:
                for s in inner:
                    if offset + s in cues:
                        break
                else:
                    continue
            elif not lone_unknown or after_match(text, run.end()) is None:
                continue
        run_end = run.end()
        strength = cues.get(offset, 0)
        toks = [(offset + s, offset + e, tok) for s, e, tok in shape]
        after_age = _AFTER_RE.match(text, run_end) is not None
        credentials = after_age or _CREDENTIALS_RE.match(text, run_end) is not None
        i = 0
        while i < len(toks):
            tok = toks[i][2]
            word = _is_word(tok, not_names)
            nxt = toks[i + 1][2] if i + 1 < len(toks) else None
            eponym = strength < 3 and _EPONYM_AFTER_RE.match(text, toks[i][1]) is not None
            if nxt is not None and _EPONYM_AFTER_RE.match(text, toks[i + 1][1]) is not None:
                nxt = None  # "Positive Murphy's sign": the next word is an eponym, not a surname
                eponym = eponym or (strength < 2 and tok in given)  # "Lou Gehrig disease"
            # A given name that is also a word (Will, Grace, Hope, April) is a name after a label or
            # a relation ("husband Will"), or before a family name ("Hope Delgado"); not a month
            # followed by a number ("daughter May 3").
            given_word = (
                word
                and (tok in given or tok in _WORD_GIVEN)
                and not (tok in _MONTHS and _MONTH_DAY_RE.match(text, toks[i][1]))
                and (
                    strength >= 2
                    or (nxt is not None and nxt in family and not _is_word(nxt, not_names))
                    # "April Greenberg (pt's niece)", "Hunter is a 17 yo": a relation, age or
                    # credential after the run
                    or (credentials and (nxt is None or not _is_word(nxt, not_names)))
                )
            )
            starts = not eponym and (
                strength == 3  # after a title ("Dr. Addison"): any capitalised word
                or given_word
                or not word
                and (
                    strength >= 2
                    # "Garfield is a 12 yo M": any single unknown word before an age phrase
                    or (credentials and (len(toks) > 1 or tok in given or tok in family or after_age))
                    or tok in given
                    or (strength == 1 and tok in family)
                    or (nxt is not None and nxt in family and not _is_word(nxt, not_names))
                )
            )
            if not starts:
                # A cue inside the run ("Pt Rose ...", "NP Quinn ...", "Husband Will") counts for the next word.
                strength = max(2 if tok.lower() in _RELATION_WORDS else 0, cues.get(toks[i + 1][0], 0) if nxt else 0)
                i += 1
                continue
            j = i + 1
            while (
                j < len(toks)
                and j - i < 3
                and toks[j][0] - toks[j - 1][1] <= 5
                and surname_like(toks[j][2])
                and _EPONYM_AFTER_RE.match(text, toks[j][1]) is None
            ):
                j += 1
            if not (
                any(_STREET_AFTER_RE.match(text, toks[k][1]) for k in range(i, j))
                and _NUMBER_BEFORE_RE.search(text, max(0, toks[i][0] - 8), toks[i][0])
            ):
                yield toks[i][0], toks[j - 1][1]
            strength, i = 0, j
    yield from _english_special(text, cues, given, family, not_names)


def _english_special(text, cues, given, family, not_names) -> Iterator[tuple[int, int]]:
    """ALL-CAPS "LAST, FIRST M", initials ("K. Lindqvist, RN", "pt R.M."), nicknames."""
    quoted = any(q in text for q in (' "', " “", " '", " ‘"))  # both patterns need a quote after a space
    for m in _NICK_INSIDE_RE.finditer(text) if quoted else ():
        first = _strip_possessive(m.group(1))
        if cues.get(m.start(), 0) >= 2 or (first in given and not _is_word(first, not_names)):
            yield m.start(), m.end()
    for m in _NICK_AFTER_RE.finditer(text) if quoted else ():
        if m.group(1) in given or not _is_word(m.group(1), not_names):  # not 'prefers "Ensure"'
            yield m.start(1), m.end(1)
    for m in _LOWER_INITIALS_RE.finditer(text):
        if m.group(1) not in _NOT_INITIALS:
            yield m.start(1), m.end(1)
    for m in _ALLCAPS_RE.finditer(text):
        last, first = m.group(1).title(), m.group(2).title()
        if (
            cues.get(m.start(), 0) >= 2
            or _AFTER_RE.match(text, m.end()) is not None
            or _CREDENTIALS_RE.match(text, m.end()) is not None
            or (first in given and not _is_word(first, not_names) and last not in not_names)
        ):
            yield m.start(), m.end()
    for m in _INITIALS_RE.finditer(text):
        if (
            cues.get(m.start(), 0) >= 2
            or _CREDENTIALS_RE.match(text, m.end()) is not None
            or _PT_BEFORE_RE.search(text, max(0, m.start() - 10), m.start()) is not None
            or (m.group()[-1] != "." and _AFTER_RE.match(text, m.end()) is not None)
        ):
            if m.group()[-1] != "." and _is_word(m.group().split(".")[-1].strip(), not_names):
                continue
            yield m.start(), m.end()


# ---- Chinese ---------------------------------------------------------------------------------

_ZH_RELATIONS = (
    "配偶|丈夫|妻子|老伴|爱人|儿子|女儿|母亲|父亲|其子|其女|其妻|其夫|之子|之女|长子|次子|长女|次女|孙子|孙女|外孙"
    "|外孙女|女婿|儿媳|侄子|侄女|外甥|外甥女|哥哥|姐姐|弟弟|妹妹|兄长|朋友|同事|邻居|病友|室友|其母|其父"
    "|之孙|之孙女|之妻|之夫|之母|之父|之兄|之弟|之姐|之妹|之媳|之婿"
)
_ZH_ROLES = (
    "患者|病人|病患|患儿|姓名|医生|医师|主治医师|主治医生|经治医师|上级医师|住院医师|主任医师|副主任医师|护士|责任护士"
    "|家属|联系人|紧急联系人|签名|医师签名|记录人|记录者|陪同|陪护|监护人|报告人|审核人|会诊医师|主刀医生|麻醉医师|药师"
    "|患者家属|被保险人|投保人|持卡人|户主|代理人|开户人|户名|账户名|收款人|委托人|受托人|授权人|领取人|代签人|签字人"
    "|参加人员|工作人员|护工|保姆|社工|主诉人|知情人|检查者|操作者|送检医生|申请医生|记录医师|体检人|受检者"
    # the lexicon of person roles: 术者, 一助, 收件人, 参保人, 网格员, 房东, 交警 ... (data/roles_zh.txt)
    "|" + "|".join(_load("roles_zh.txt"))
)
_ZH_PREFIX = "|".join(sorted(set((_ZH_ROLES + "|" + _ZH_RELATIONS).split("|")), key=len, reverse=True))
_ZH_TITLES = "|".join(
    sorted(
        [
            "先生",
            "女士",
            "小姐",
            "医生",
            "医师",
            "大夫",
            "主任",
            "副主任",
            "主任医师",
            "副主任医师",
            "主治医师",
            "住院医师",
            "护士长",
            "护士",
            "护师",
            "主管护师",
            "教授",
            "副教授",
            "老师",
            "同志",
            "阿姨",
            "师傅",
            "药师",
            "院长",
            "科长",
            *_load("titles_zh.txt"),  # 警官, 师傅, 经理, 律师 ... (data/titles_zh.txt)
        ],
        key=len,
        reverse=True,
    )
)
# Cues may be chained: "联系人：孙女徐静", "其丈夫沈腾飞".
_ZH_PREFIX_WORDS = tuple(_ZH_PREFIX.split("|")) + (
    "病例",
    "主诉",
    "诊断",
    "性别",
    "年龄",
    "老人",
    "男孩",
    "女孩",
    "婴儿",
)
# The leading character class lets the scanner skip positions that cannot start a cue.
_ZH_FIRST = "".join(sorted({w[0] for w in _ZH_PREFIX.split("|")}))
# 其 ("his/her") may stand before any relation: 其女儿邱某, 其老伴.
_ZH_PREFIX_RE = re.compile(rf"(?=[{_ZH_FIRST}])(?:其?(?:{_ZH_PREFIX})[:：]?\s{{0,2}})+(?=[{_HAN}])")
# A name right after the title of a document and its colon, before a pause: "体检报告：韩立新，…",
# "诊断证明书：许某某 …" — surname and given-name characters from the lists only.
_ZH_HEADER_RE = re.compile(
    r"(?:报告|报告单|记录|小结|证明|证明书|病历|申请单|通知书|告知书|同意书|登记表|随访表)"
    rf"[:：][ \t　]{{0,2}}(?=[{_HAN}])"
)
_ZH_RELATION_RE = re.compile(rf"(?:{_ZH_RELATIONS})[:：]?\s{{0,2}}$")
_ZH_BEFORE_BARE_SURNAME = set("请和与向找给及、，。：:（( \n\t")
_ZH_TITLE_RE = re.compile(_ZH_TITLES)
# A surname and a placeholder for the given name: 卢××, 王某, 张某某, 李XX (not 某些, 某日 ...).
_ZH_MOU_RE = re.compile(
    "[" + "".join(sorted({w for w in _load("surnames_zh.txt") if len(w) == 1})) + "]"
    r"(?:某某|××|XX|xx|＊＊|\*\*|○○|某(?![些种日天次处地院时月年个位项类部样])|×|X(?![A-Za-z0-9]))"
)
# Two characters ending in a surname character that are ordinary words (每周, 其余, 任何): not a
# bare surname before a title ("每周医生查房").
_ZH_NOT_BARE = frozenset(
    [
        "每周",
        "上周",
        "下周",
        "本周",
        "这周",
        "一周",
        "两周",
        "几周",
        "数周",
        "当周",
        "其余",
        "多余",
        "剩余",
        "任何",
        "如何",
        "几何",
        "允许",
        "或许",
        "也许",
        "少许",
        "些许",
        "期许",
        "奇才",
        "为何",
        "责任",
        "处方",
        "蛋白",
        "结石",
        "黄金",
        "现金",
        "主任",
        "担任",
        "兼任",
        "前任",
        "现任",
        "信任",
    ]
)
# A name followed by its relation to someone: "李娜之子", "王芳的女儿".
_ZH_OF_RE = re.compile(r"(?:之|的)(?:子|女|夫|妻|母|父|孙|儿子|女儿|丈夫|妻子|母亲|父亲|孙子|孙女|家属)")
# A person-role label with a colon ("术者：", "一助：", "收件人：", "经办人：") before a full name.
_ZH_ROLE_COLON_RE = re.compile(rf"(?<=[人者员师助士长手警官生])[:：][ \t　]{{0,2}}(?=[{_HAN}])")
# A relative called by 小/阿 and a given-name character: 儿媳小芳, 老伴阿珍 (not 小时, 小腿).
_ZH_PET_RE = re.compile(rf"[小阿](?![时便腿肠儿孩学区些量型号便数说名])[{_HAN}]")
# 老王, 小李 read as words in these (小苏打, 老陈醋).
_ZH_OLD_YOUNG_WORDS = ("小苏打", "小程序", "老姜", "老汤", "老陈醋", "老黄历", "老白干", "老毛病", "小米", "老高")
# Words that follow a cue and start with a surname character but are not names (患者安静入睡).
_ZH_NOT_NAMES = frozenset(
    [
        "安静",
        "安全",
        "平静",
        "平稳",
        "平素",
        "明显",
        "来电",
        "来信",
        "来诊",
        "来院",
        "明确",
        "同意",
        "同时",
        "方便",
        "高热",
        "高烧",
        "常规",
        "于今",
        "于昨",
        "于当",
        "于入",
        "于本",
        "于外",
        "于我",
        "于家",
        "于门",
        "于急",
        "于院",
        "于术",
        "于晨",
        "于夜",
        "于下",
        "于上",
        "于次",
        "于近",
        "于半",
        "于1",
        "家中",
        "家人",
        "家属",
        "陪同",
        "其子",
        "其女",
        "自行",
        "自述",
        "诉",
        "神志",
        "精神",
        "意识",
        "本人",
        "情绪",
        "病情",
        "病史",
        "姓名",
        "男性",
        "女性",
        "双侧",
        "左侧",
        "右侧",
        "全身",
        "全麻",
        "周身",
        "周围",
        "钱包",
        "金属",
        "康复",
        "应答",
        "司机",
        "时间",
        "时有",
        "文化",
        "程度",
        # coming to or leaving hospital, after 陪同/护送 ("由其子陪同来院")
        "查房",
        "查体",
        "查看",
        "来院",
        "来诊",
        "来我",
        "到院",
        "返院",
        "送院",
        "出院",
        "回家",
    ]
)
# A name at the start of a record or line, followed by sex or age: "刘洋，男，67岁", "王芳 女 45岁",
# "阿依古丽，女，34岁" (no common surname: needs sex and age both).
_ZH_SEX_AGE_RE = re.compile(
    rf"(?<![^\n。；;：:])[ \t　]*([{_HAN}]{{2,4}})"
    rf"(?=(?:[（(][^）)\n]{{0,16}}[）)][，,、 \t　]*|[，,、 \t　]+)(?:[男女]性?(?=[，,、 \t　；;])|\d{{1,3}}岁))"
)
_ZH_SEX_THEN_AGE_RE = re.compile(r"[，,、 \t　]+[男女]性?[，,、 \t　]+(?:\d{1,3}|[一二三四五六七八九十百]{1,4})")
# 老王, 小李: a common surname after 老/小, followed by a pause or after a relation/role cue.
_ZH_COMMON_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余杜程魏苏吕丁任卢姚沈钟姜崔谭陆汪"
    "廖贾夏韦付邹熊孟秦阎薛尹雷黎陶贺顾郝龚邵钱严覃武戴莫汤"
    "范方石金叶白孔毛江史侯邱段乔赖"
)
_ZH_ELDER_RE = re.compile(r"(?:阿婆|老太太|老太|老爷子|老先生|大爷|大妈|大娘|奶奶|爷爷|阿伯|伯伯|婆婆)")
_ZH_OLD_YOUNG_RE = re.compile(r"[老小]([" + "".join(sorted(_ZH_COMMON_SURNAMES)) + r"])")
_ZH_OLD_YOUNG_CUE_RE = re.compile(rf"(?:{_ZH_PREFIX}|由|请|叫|找|和|与|同|陪|让)$")
# A name followed by its relation in brackets: "郝建（患者女婿）".
_ZH_BRACKET_REL_RE = re.compile(rf"[（(](?:患者|病人|患儿|其)?(?:{_ZH_RELATIONS}|家属|女婿|儿媳|护工|保姆)")
_ZH_FUNCTION_AFTER = set("签在于陪说称代是的为送来去他她已同因和与及等、，。；：:（(")

# ---- Chinese: the full surname list, person-role labels, minority names, bare surnames, pet names --
# Every surname: the common ones (surnames_zh.txt) and the rest of the Baijiaxing (surnames_zh_rare.txt,
# many of them ordinary characters: used only where the context already says a person is named).
_ZH_ALL_SURNAMES = frozenset(_load("surnames_zh.txt")) | frozenset(_load("surnames_zh_rare.txt"))
_ZH_ALL_SINGLE = "".join(sorted(w for w in _ZH_ALL_SURNAMES if len(w) == 1))
_ZH_ALL_COMPOUND = "|".join(sorted((w for w in _ZH_ALL_SURNAMES if len(w) > 1), key=len, reverse=True))
# A surname alone (鲍医师, 聂医生) whatever precedes it: the common ones and these (data file).
_ZH_DISTINCTIVE = _ZH_COMMON_SURNAMES | frozenset("".join(_load("surnames_zh_distinctive.txt")))
# Where a name's value ends: a space, a full-width space, a comma, a stop, a bracket, a table bar, a line end.
_ZH_DELIM = r"(?=[ \t　，,。；;、（(）)|｜\n\r:：/]|$)"
# Minority names: a run of syllables (data/minority_names_zh.txt), joined by · or not.
_ZH_MINORITY_SYL = "|".join(sorted(set(_load("minority_names_zh.txt")), key=len, reverse=True))
_ZH_MINORITY_RE = re.compile(rf"(?:{_ZH_MINORITY_SYL})(?:[·•・‧]?(?:{_ZH_MINORITY_SYL})){{0,5}}(?![{_HAN}])")
_ZH_MINORITY_ONE_RE = re.compile(rf"(?:{_ZH_MINORITY_SYL})")
# After a minority name: sex, age, an ethnicity or a relation in brackets ("，男，54岁", "（回族）", "（妻）").
_ZH_MINORITY_AFTER_RE = re.compile(
    rf"[，,、 \t　]*(?:[男女]性?(?![{_HAN}])|\d{{1,3}}岁)|[，,、 \t　]*[（(]?[{_HAN}]{{1,4}}族"
    rf"|[（(](?:{_ZH_RELATIONS}|妻|夫|子|女|母|父)"
)
# Person-role labels before a colon (data/labels_zh.txt; any label ending in 人/者/员/师/助/士/长/手/警/官/生 or
# 签字/签名 too) and, in a table, before a bar ("| 姓名 | 吴秀梅 |").
_ZH_LABEL_WORDS = sorted(set(_load("labels_zh.txt")), key=len, reverse=True)
_ZH_LABEL_RE = re.compile(
    rf"(?:(?P<lex>{'|'.join(map(re.escape, _ZH_LABEL_WORDS))})(?:[ \t　]*[|｜]|[ \t　]?[:：])"
    rf"|(?:[人者员师助士长手警官生]|签字|签名)[:：])[ \t　]{{0,2}}(?=[{_HAN}A-Z])"
)
# Labels whose value is a name whatever its characters ("姓名：", "签字：", "实名："): 1–3 characters after a surname.
_ZH_NAME_LABEL_RE = re.compile(r"(?:姓名|实名|本人|签字|签名|用户|名字)(?:（拼音）)?[ \t　]*[|｜:：]?[ \t　]*$")
_ZH_LABEL_VALUE_RE = re.compile(rf"[{_HAN}]{{1,4}}{_ZH_DELIM}")
_ZH_LABEL_PINYIN_RE = re.compile(
    rf"[A-Z][a-z]{{1,10}}(?:[ \t][A-Z][a-z]{{1,10}}){{1,2}}(?:[ \t　]+[{_HAN}]{{2,4}}{_ZH_DELIM})?"
)
_ZH_NOT_VALUES = frozenset(
    [
        "无",
        "略",
        "否",
        "是",
        "有",
        "男",
        "女",
        "同",
        "见",
        "空",
        "未",
        "已",
        "详",
        "同上",
        "不详",
        "本人",
        "家属",
        "患者",
        "自己",
        "暂无",
        "待定",
        "签名",
        "签字",
        "通过",
        "合格",
        "同意",
        "正常",
        "已签",
        "未签",
    ]
)
# An occupation right before a surname alone and a pause: "病区护士陶，", "随车医生楼。", "助手慕容，".
_ZH_OCCUPATION_SURNAME_RE = re.compile(
    r"(?:医生|医师|大夫|护士|护师|药师|技师|治疗师|助手|一助|二助|术者|主刀|护工|保姆|司机|社工|民警|交警|警官|律师|翻译|老师|村医|检验|审核)"
    rf"((?:{_ZH_ALL_COMPOUND})|[{_ZH_ALL_SINGLE}])(?=[，,。；;、 \t　）)|\n]|$)"
)
# A surname alone before a title that is not a common or distinctive surname (龙医生, 包医生, 陶护士) needs
# a pause or quote before it, or a person-role, department or request word.
_ZH_BARE_CUE_RE = re.compile(rf"(?:{_ZH_PREFIX}|科|室|病区|组|部|中心|请|由|找|和|与|同|叫|让|通知|联系|是|给)$")
_ZH_BARE_BEFORE = _ZH_BEFORE_BARE_SURNAME | set("“‘「『\"'　")
_ZH_SURNAME_TITLE_WORDS = ("班主任", "车主任", "区主任", "党主任", "全主任")
# A signature column in a table: a header row holding 签名/签字/护士/医生 …, the cells below it in that column.
_ZH_TABLE_HEADER_RE = re.compile(
    r"^[^\n|｜]{0,20}[|｜].*(?:签名|签字|护士|医生|医师|记录人|记录者|操作者|执行人|核对人|责任人).*$", re.M
)
_ZH_SIGN_HEADER_RE = re.compile(r"签名|签字|护士|医生|医师|记录人|记录者|操作者|执行人|核对人|责任人")
# A pet name after a person-role or relation word: 保姆小翠, 家属大强, 器械护士欢欢, 患儿小宝.
_ZH_NICK_RE = re.compile(
    rf"(?:[小阿](?![时便腿肠儿孩学区些量型号数说于心剂片结腹叶脑板组时名])[{_HAN}]|大[{_HAN}]|([{_HAN}])\1)"
)
_ZH_NOT_NICKS = frozenset(
    ["宝宝", "常常", "渐渐", "刚刚", "慢慢", "偏偏", "往往", "仅仅", "稍稍", "天天", "每每", "明明", "人人"]
) | frozenset(
    [
        "大小",
        "大笑",
        "大喜",
        "大同",
        "大庆",
        "大连",
        "大理",
        "大兴",
        "大为",
        "大力",
        "大学",
        "大家",
        "大山",
        "大海",
        "大雪",
    ]
)
# 大名/小名/乳名/实名 and a name: "小宝（大名许嘉乐）", "乳名叫豆豆".
_ZH_ALIAS_RE = re.compile(rf"(?:大名|小名|乳名|实名|本名|学名|曾用名|真名)(?:是|叫|为)?[:：]?[ \t　]?(?=[{_HAN}])")
# "本人罗建华，": a name right after 本人 (I, the undersigned) and before a pause.
_ZH_SELF_RE = re.compile(rf"本人(?:是|叫)?(?=[{_HAN}])")
# A bed number before a name: "17床孔德林", "加3床 王某".
_ZH_BED_RE = re.compile(rf"(?<![0-9])(?:加)?[0-9]{{1,3}}床[:：]?[ \t　]?(?=[{_HAN}])")


def _zh_value_name(text: str, pos: int, name_label: bool) -> int:
    """The length of a name right after a person-role label at pos (0 if none): a minority name, a surname
    alone, or a surname and given-name characters (any characters after a name label) up to a delimiter."""
    _, _, _, given_chars, _ = dictionaries()
    m = _ZH_MINORITY_RE.match(text, pos)
    if m and _ZH_DELIM_RE.match(text, m.end()):
        return m.end() - pos
    m = _ZH_LABEL_VALUE_RE.match(text, pos)
    if not m:
        return 0
    value = m.group()
    if value in _ZH_NOT_VALUES or value[:2] in _ZH_NOT_NAMES:
        return 0
    s = 2 if value[:2] in _ZH_ALL_SURNAMES else (1 if value[0] in _ZH_ALL_SURNAMES else 0)
    if not s or len(value) - s > (3 if name_label else 2):
        return 0
    if len(value) == s or name_label or all(c in given_chars for c in value[s:]):
        return len(value)
    return 0


_ZH_DELIM_RE = re.compile(_ZH_DELIM)


def _zh_more_names(text: str) -> Iterator[tuple[int, int]]:
    """The families added for text written by others: person-role labels, minority names, a surname alone
    after an occupation or in a signature column, pet names, 大名/本人/bed-number cues."""
    _, _, surnames, given_chars, _ = dictionaries()
    for m in _ZH_LABEL_RE.finditer(text):
        pos = m.end()
        name_label = _ZH_NAME_LABEL_RE.search(m.group()) is not None
        if name_label and "A" <= text[pos] <= "Z":
            p = _ZH_LABEL_PINYIN_RE.match(text, pos)
            if p:
                yield pos, p.end()
            continue
        n = _zh_value_name(text, pos, name_label)
        if n:
            yield pos, pos + n
    for m in _ZH_MINORITY_RE.finditer(text):
        syllables = len(_ZH_MINORITY_ONE_RE.findall(m.group()))
        if (syllables >= 2 or len(m.group()) >= 3) and _ZH_MINORITY_AFTER_RE.match(text, m.end()):
            yield m.start(), m.end()
    for m in _ZH_OCCUPATION_SURNAME_RE.finditer(text):
        yield m.start(1), m.end(1)
    for m in _ZH_TABLE_HEADER_RE.finditer(text):
        header = [c.strip() for c in re.split(r"[|｜]", m.group().strip())]
        columns = {i for i, c in enumerate(header) if _ZH_SIGN_HEADER_RE.search(c)}
        line_start = m.end() + 1
        while line_start < len(text):
            line_end = text.find("\n", line_start)
            line_end = len(text) if line_end < 0 else line_end
            line = text[line_start:line_end]
            if not line.lstrip().startswith(("|", "｜")):
                break
            offset = line_start
            for i, cell in enumerate(re.split(r"[|｜]", line)):
                value = cell.strip(" \t　")
                if i in columns and value:
                    start = offset + cell.index(value)
                    if _ZH_LABEL_VALUE_RE.fullmatch(value) and _zh_value_name(text, start, False) == len(value):
                        yield start, start + len(value)
                offset += len(cell) + 1
            line_start = line_end + 1
    for m in _ZH_PREFIX_RE.finditer(text):
        pos = m.end()
        n = _ZH_NICK_RE.match(text, pos)
        if n and n.group() not in _ZH_NOT_NICKS and text[pos : pos + 2] not in _ZH_NOT_NAMES:
            nxt = text[n.end() : n.end() + 1]
            known = n.group()[-1] in given_chars
            if known or (text[pos] != "大" and (not _is_han(nxt or "。") or nxt in _ZH_FUNCTION_AFTER)):
                yield pos, n.end()
                continue
        mm = _ZH_MINORITY_RE.match(text, pos)
        if mm and (mm.end() - pos >= 3 or len(_ZH_MINORITY_ONE_RE.findall(mm.group())) >= 2):
            yield pos, mm.end()
            continue
        # 姚老: a surname and 老 (an elder) after a cue, before a pause
        if (
            text[pos] in _ZH_COMMON_SURNAMES
            and text[pos + 1 : pos + 2] == "老"
            and not _is_han(text[pos + 2 : pos + 3] or "。")
        ):
            yield pos, pos + 2
    for regex in (_ZH_ALIAS_RE, _ZH_SELF_RE, _ZH_BED_RE):
        for m in regex.finditer(text):
            pos = m.end()
            n = _zh_value_name(text, pos, True) if regex is _ZH_ALIAS_RE else 0
            if n:
                yield pos, pos + n
                continue
            s = _zh_surname_at(text, pos, surnames)
            if s:
                g = _zh_given_len(text, pos + s, given_chars)
                if g and text[pos : pos + s + g] not in _ZH_NOT_VALUES and text[pos : pos + 2] not in _ZH_NOT_NAMES:
                    yield pos, pos + s + g
                    continue
            if regex is _ZH_ALIAS_RE:
                n = _ZH_NICK_RE.match(text, pos) or _ZH_LABEL_VALUE_RE.match(text, pos)
                if n and len(n.group()) <= 3 and _ZH_DELIM_RE.match(text, n.end()):
                    yield pos, n.end()


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
    if len(g) == 2 and all(_is_han(c) for c in g) and after(2) in _ZH_FUNCTION_AFTER:
        return 2
    return 0


def _chinese_names(text: str) -> Iterator[tuple[int, int]]:
    """Every name found by a cue, then the names listed after one: 家属姚建新、姚建军 (surname and given name)."""
    _, _, surnames, given_chars, _ = dictionaries()
    found = list(_chinese_cued(text))
    yield from found
    for _start, end in found:
        while text[end : end + 1] in ("、", "和", "及") and end + 1 < len(text):
            pos = end + 1
            s = _zh_surname_at(text, pos, surnames)
            g = _zh_given_len(text, pos + s, given_chars) if s else 0
            if not g or text[pos : pos + 2] in _ZH_NOT_NAMES:
                break
            end = pos + s + g
            yield pos, end


def _chinese_cued(text: str) -> Iterator[tuple[int, int]]:
    _, _, surnames, given_chars, _ = dictionaries()
    for m in _ZH_PREFIX_RE.finditer(text):
        pos = m.end()
        if text[pos : pos + 2] in _ZH_NOT_NAMES or text[pos] in "诉":
            continue
        s = _zh_surname_at(text, pos, surnames)
        if s:
            g = _zh_given_len(text, pos + s, given_chars)
            if g:
                yield pos, pos + s + g
                continue
        if _ZH_RELATION_RE.search(m.group()) and _ZH_PET_RE.match(text, pos):
            yield pos, pos + 2
            continue
        if _ZH_RELATION_RE.search(m.group()):
            # A relative called by the given name alone: "老伴素芬。"
            two = text[pos : pos + 2]
            if len(two) == 2 and all(c in given_chars for c in two) and not _is_han(text[pos + 2 : pos + 3] or "。"):
                yield pos, pos + 2
    for m in _ZH_HEADER_RE.finditer(text):
        pos = m.end()
        s = _zh_surname_at(text, pos, surnames)
        if not s:
            continue
        g = 0
        while g < 2 and text[pos + s + g : pos + s + g + 1] in given_chars:
            g += 1
        if g and text[pos + s + g : pos + s + g + 1] in "，,、 \t　（(":
            yield pos, pos + s + g
    for m in _ZH_MOU_RE.finditer(text):
        yield m.start(), m.end()
    for m in _ZH_ROLE_COLON_RE.finditer(text):
        pos = m.end()
        s = _zh_surname_at(text, pos, surnames)
        if s and text[pos : pos + 2] not in _ZH_NOT_NAMES:
            g = _zh_given_len(text, pos + s, given_chars)
            if g:
                yield pos, pos + s + g
    for m in _ZH_OF_RE.finditer(text):
        for k in (3, 2, 4):
            start = m.start() - k
            if start >= 0 and _zh_surname_at(text, start, surnames) and (start == 0 or not _is_han(text[start - 1])):
                yield start, m.start()
                break
    for m in _ZH_TITLE_RE.finditer(text):
        found = _zh_name_before(text, m.start(), surnames, given_chars)
        if found:
            yield found
    for m in _ZH_ELDER_RE.finditer(text):
        start = m.start() - 1
        if (
            start >= 0
            and text[start] in _ZH_COMMON_SURNAMES
            and (
                start == 0
                or not _is_han(text[start - 1])
                or _ZH_OLD_YOUNG_CUE_RE.search(text, max(0, start - 6), start)
            )
        ):
            yield start, m.end()
    for m in _ZH_OLD_YOUNG_RE.finditer(text):
        nxt = text[m.end() : m.end() + 1]
        if text.startswith(_ZH_OLD_YOUNG_WORDS, m.start()):
            continue
        if (
            not _is_han(nxt or "。")
            or m.start() == 0
            or not _is_han(text[m.start() - 1])  # at the start of a clause: "老王今天查房时诉…"
            or nxt in _ZH_FUNCTION_AFTER
            or _ZH_TITLE_RE.match(text, m.end())  # 小李护士
            or _ZH_OLD_YOUNG_CUE_RE.search(text, max(0, m.start() - 6), m.start())
        ):
            yield m.start(), m.end()
    for m in _ZH_SEX_AGE_RE.finditer(text):
        cand = m.group(1)
        if cand in _ZH_NOT_NAMES or cand[:2] in _ZH_NOT_NAMES or cand.startswith(_ZH_PREFIX_WORDS):
            continue
        s = _zh_surname_at(cand, 0, surnames)
        if (s and len(cand) - s in (1, 2)) or _ZH_SEX_THEN_AGE_RE.match(text, m.end()):
            yield m.start(1), m.end(1)
    yield from _zh_more_names(text)
    for m in _ZH_BRACKET_REL_RE.finditer(text):
        for k in (3, 2, 4):
            start = m.start() - k
            if start >= 0 and _zh_surname_at(text, start, surnames) and (start == 0 or not _is_han(text[start - 1])):
                yield start, m.start()
                break


def _zh_name_before(text: str, end: int, surnames, given_chars) -> tuple[int, int] | None:
    """The longest surname + given-name characters that ends right before a title (王建国医生, 李主任)."""
    if end and text.startswith(_ZH_SURNAME_TITLE_WORDS, end - 1):  # 班主任
        return None
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
        # A common surname alone before a title, whatever stands before it (放疗科曹医生, 交警罗警官).
        if text[start] in _ZH_COMMON_SURNAMES and text[start - 1 : start + 1] not in _ZH_NOT_BARE:
            return start, end
    # Any surname alone before a title: a distinctive one whatever precedes it (科聂医师); any other after a
    # pause, a quote, a role or department word (“龙医生, 患者伍女士, 心理科包医生); not 班主任, 楼医生办公室.
    for k in (2, 1):
        start = end - k
        if start < 0 or text[start:end] not in _ZH_ALL_SURNAMES:
            continue
        if (
            start == 0
            or text[start - 1] in _ZH_BARE_BEFORE
            or (k == 1 and text[start] in _ZH_DISTINCTIVE and text[start - 1 : start + 1] not in _ZH_NOT_BARE)
            or _ZH_BARE_CUE_RE.search(text, max(0, start - 8), start)
        ):
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
        # a token whose first three characters start no name cannot be one once stripped (a prefix)
        heads = {w[:3] for w in words}
        for m in _TOKEN_RE.finditer(text):
            token = m.group()
            if token[:3] in heads:
                tok = _strip_possessive(token)
                if tok in words:
                    yield m.start(), m.start() + len(tok)
    if phrases:
        for end, negative_length in _mentions(text, phrases):
            yield end + negative_length, end


# From this many characters on, a text's Chinese mentions are found from their first characters (below, one
# str.find scan per phrase costs less).
_MENTIONS_SCAN_FROM = 4096


def _mentions(text: str, phrases: set[str]) -> list[tuple[int, int]]:
    """(end, -length) of every occurrence of each phrase, each phrase's occurrences taken left to right
    without overlapping one another (as str.find finds them), ordered by end and the longer first. On a long
    text the positions where a phrase can start are found in C, by one character class of the phrases' first
    characters, and the phrases checked there; not one Aho-Corasick pass, whose root, with a child per first
    character, pyahocorasick scans edge by edge at every character of the text (four times slower on a MiB)."""
    found: list[tuple[int, int]] = []
    if not phrases:
        return found
    if len(text) < _MENTIONS_SCAN_FROM:
        for phrase in phrases:
            n = len(phrase)
            i = text.find(phrase)
            while i != -1:
                found.append((i + n, -n))
                i = text.find(phrase, i + n)
        found.sort()
        return found
    by_first: dict[str, list[str]] = {}
    for phrase in phrases:
        by_first.setdefault(phrase[0], []).append(phrase)
    every = []  # every occurrence, overlapping ones too
    startswith = text.startswith
    for m in re.finditer("[" + re.escape("".join(sorted(by_first))) + "]", text):
        i = m.start()
        for phrase in by_first[m.group()]:
            if startswith(phrase, i):
                every.append((i + len(phrase), -len(phrase), phrase))
    every.sort()
    free_from: dict[str, int] = {}
    for end, negative_length, phrase in every:
        if end + negative_length >= free_from.get(phrase, 0):
            free_from[phrase] = end
            found.append((end, negative_length))
    return found


def _with_particles(text: str, found: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    for start, end in found:
        m = _PARTICLE_RE.match(text, end) if not _is_han(text[start]) else None
        yield (start, m.end()) if m else (start, end)


# Every Chinese-name pattern searched over the whole text holds a Han character (each of _ZH_WHOLE_TEXT,
# checked on its parse tree by tests/gateway/test_deid_shortcuts.py), and every Chinese name starts at
# one of their matches: on a text without Han the Chinese pass finds nothing and is not run.
_HAS_HAN = re.compile("[\u4e00-\u9fff]")
_ZH_WHOLE_TEXT = [
    "_ZH_PREFIX_RE",
    "_ZH_HEADER_RE",
    "_ZH_MOU_RE",
    "_ZH_ROLE_COLON_RE",
    "_ZH_OF_RE",
    "_ZH_TITLE_RE",
    "_ZH_ELDER_RE",
    "_ZH_OLD_YOUNG_RE",
    "_ZH_SEX_AGE_RE",
    "_ZH_BRACKET_REL_RE",
    "_ZH_LABEL_RE",
    "_ZH_MINORITY_RE",
    "_ZH_OCCUPATION_SURNAME_RE",
    "_ZH_TABLE_HEADER_RE",
    "_ZH_ALIAS_RE",
    "_ZH_SELF_RE",
    "_ZH_BED_RE",
]


def find_names(text: str) -> Iterator[Span]:
    found = list(_with_particles(text, list(_english_names(text))))
    if _HAS_HAN.search(text):
        found.extend(_chinese_names(text))
    seen = set(found)
    for start, end in found:
        yield Span(start, end, NAME, 40)
    for start, end in _propagate(text, found):
        if (start, end) not in seen:
            yield Span(start, end, NAME, 30)
    # recall first: whatever is not a known word (safelist.py), below every other detector
    for start, end in safelist.english(text):
        yield Span(start, end, NAME, safelist.PRIORITY)
    if _HAS_HAN.search(text):
        for start, end in safelist.chinese(text):
            yield Span(start, end, NAME, safelist.PRIORITY)


fastre.accelerate(globals())  # after every pattern: see fastre.py
# The role colon is written for Hyperscan as any colon (its look-behind dropped): on Chinese text every colon
# is a start reported to Python, costing more than its own search with fastre's hint, which it keeps.
_ZH_ROLE_COLON_RE = getattr(_ZH_ROLE_COLON_RE, "regex", _ZH_ROLE_COLON_RE)
# Every strong cue starts with a word at the start of a word: a label written with its colon
# ("Patient:", "next of kin :", "Firstname："), "name" and its colon at most a name label and a space
# in ("first name:"), a verb, a relation. Searched only around those (cues.py): not around every
# colon, nor every "pt".
_STRONG_VERBS = [
    "signed",
    "dictated",
    "transcribed",
    "seen",
    "evaluated",
    "examined",
    "reviewed",
    "referred",
    "accompanied",
    "authored",
    "verified",
    "cosigned",
    "attested",
    "performed",
    "interpreted",
    "read",
]


# What \s? matches (re: str.isspace; the last such character is U+3000, tested).
_SPACES = ["", *(chr(c) for c in range(0x3001) if chr(c).isspace())]


def _with_colon(label: str) -> list[str]:
    return [label + space + colon for space in _SPACES for colon in ":："]


def _label_spellings(label: str) -> list[str]:
    """ "anesth?esiologist": with and without the h."""
    return [label.replace("h?", "h"), label.replace("h?", "")] if "h?" in label else [label]


_STRONG_RE = cues.gate(
    _STRONG_RE,
    {
        **{a: 0 for w in _LABELS.split("|") for s in _label_spellings(w) for a in _with_colon(s)},
        **{a: 0 for w in _NAME_LABELS.split("|") for a in _with_colon(w + "name")},
        **dict.fromkeys(_with_colon("name"), max(map(len, _NAME_LABELS.split("|"))) + 1),
        **dict.fromkeys(_STRONG_VERBS, 0),
        # a multi-word role ("case manager") on its first word, which its match always starts with
        **dict.fromkeys({w.split(" ")[0] for w in _RELATION_WORDS}, 0),
    },
    word_start=True,
)


# Titles, roles and nickname phrases start every match with their word, after a \b.
_TITLE_RE = cues.gate(_TITLE_RE, word_start=True)
_ROLE_RE = cues.gate(
    _ROLE_RE,
    ["pt", "np", "rn", "pa", "lpn", "nurse", "caseworker", "case worker", "social worker", "prescriber", "ordering"]
    + ["referring", "dictated by", "prescribed by"],
    word_start=True,
)
_NICK_AFTER_RE = cues.gate(_NICK_AFTER_RE, word_start=True)
# Every match starts with one of these verbs (either case of its first letter).
_LOWER_INITIALS_RE = cues.gate(
    _LOWER_INITIALS_RE, ("transcribed", "dictated", "typed", "entered", "scribed", "signed", "keyed")
)
