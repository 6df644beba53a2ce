"""Families read off what the other passes found, and a few cue families they lack (issue 14, corpus7 round).

The detectors before this one each look at the text alone. Some identifiers are only identifiable
by what stands next to them, and what stands next to them is another identifier:

- **a town after a street address** ("560 Pine St, Rm 8, Sandusky on 12/3", "12 Church St,
  Wheeling.") — the capitalised run after the address's comma (and an optional unit) is the town;
- **a town before a state abbreviation without the comma** ("Somerville MA 02143", "Minot ND 58701",
  "Pikeville KY.") — with a ZIP code after any abbreviation, or an unambiguous one before a pause;
- **every later mention of a place already found** ("from Bethlehem, PA … visited Bethlehem");
- **an age right after a person's name** ("Ambrose M 92 —", "Dubois-Lachance, 91 per triage"), an
  age in brackets after nonagenarian/centenarian, and a self-correction after an age over 89 ("91
  per triage — corrected to 90");
- **a quoted nickname between two names** (Terrell "T-Money" Bass) takes the family name after it;
- **a speaker introducing themself** ("Hi, it's Rosario, Lupe's sister", "This is Moose, …");
- **initials standing as a signature** ("Signed BJL WOCN", "initials only: D.M.K.", 交班护士LSH) and
  a title before one initial ("Ms. G., 99 y.o.");
- Chinese: a nickname or screen name before its gloss in brackets (石头（患儿小名）, 胖哥（网名）) or
  quoted after 小名/网名 (小名"糖糖"); a compound surname that is also a city after a person word
  (被保险人濮阳振华: the person, not 濮阳市) or before a title (钟离女士, 诸葛老太); any surname + 某
  after a pause or a person word (木某, 仉某某); a surname masked after 姓名 (姓名：宁*).

Each rule reads a few characters around a literal or a span already found: one scan per rule,
gated on its literal, so the pass costs little (see docs/deidentification.md, "Speed").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from . import cues, fastre, geo, names
from .spans import ADDRESS, AGE, GEO, NAME, Span

P_NAME = 41  # above the cue rules' names (40): these contexts are stronger than a guess
P_NAME_OVER_GEO = 46  # a compound surname that is also a city (濮阳), after a person word
P_GEO = 44  # below a place with a strong context (45), above the cue rules' names
P_GEO_REPEAT = 30  # a later mention: below the cue names (a title wins: "Dr. Lincoln")
P_AGE = 60

_HAN = "\u4e00-\u9fff"
_CAP_RUN = r"[A-Z][a-z]+(?:[ \t-][A-Z][a-z]+){0,2}"
_NOT_TOWN_FIRST = frozenset(
    [
        "The",
        "Dr",
        "Mr",
        "Mrs",
        "Ms",
        "Miss",
        "Pt",
        "Patient",
        "Apt",
        "Unit",
        "Suite",
        "Ste",
        "Rm",
        "Room",
        "Floor",
        "Fl",
        "Bldg",
        "Box",
        "Phone",
        "Tel",
        "Fax",
        "Call",
        "Seen",
        "Per",
        "Follow",
        "Home",
        "Lives",
        "He",
        "She",
        "They",
        "We",
        "His",
        "Her",
        "Our",
        "Their",
        "Then",
        "On",
        "At",
        "In",
        "Near",
        "Next",
        "Room",
        "Bed",
        "Zip",
        "Zipcode",
    ]
)
_STREET_WORDS = frozenset(
    [
        "St",
        "Street",
        "Rd",
        "Road",
        "Ave",
        "Avenue",
        "Blvd",
        "Boulevard",
        "Ln",
        "Lane",
        "Dr",
        "Drive",
        "Ct",
        "Court",
        "Way",
        "Pl",
        "Place",
        "Hwy",
        "Highway",
        "Pkwy",
        "Parkway",
        "Ter",
        "Terrace",
        "Cir",
        "Circle",
        "Trl",
        "Trail",
        "Pike",
        "Sq",
        "Square",
        "Loop",
        "Run",
        "Row",
    ]
)
_UNIT = r"(?:(?:Apt|APT|Unit|Rm|Room|Ste|Suite|Bldg|Fl|Floor|Lot|Box|#)\.?[ \t]*#?[ \t]*[0-9A-Za-z]{1,5},[ \t]*)"
_TOWN_AFTER_ADDRESS = re.compile(rf"[ \t]*,[ \t]*{_UNIT}?({_CAP_RUN})(?![A-Za-z0-9'’@.-]*[A-Za-z0-9])")
_TOWN_BEFORE_STATE = re.compile(
    rf"(?<![A-Za-z0-9'’.@/-])({_CAP_RUN})[ \t]+(?:(?:{geo._STATE_ABBR})[ \t]+\d{{5}}(?:-\d{{4}})?(?![0-9-])"
    rf"|(?:{geo._STATE_ABBR_CLEAR})(?=[ \t]*(?:[.,;)\n]|$)))"
)
_DIGIT = re.compile(r"[0-9]")
# A town naming a service of its own: "Greenville PD", "Westlake clinic", "Independence Family Medicine".
_FACILITY = (
    r"PD|P\.D\.|FD|Police|Fire|Sheriff|EMS|Rescue|Family Medicine|Family Practice|Metro|Transit|Citilink|"
    r"[Cc]linic|[Ll]ocation|[Oo]ffice|[Cc]ampus|[Bb]ranch|Urgent Care|Medical Center|Health Center|Jail|"
    r"Detention|Correctional|Dialysis|Pharmacy|Senior Center|Fire Department|Police Department|Regional|"
    r"[Hh]ospital|Associates|Counseling|Medical|[Ll]ab|[Rr]etirement|[Cc]ommunity|Memorial|General|Nursing|"
    r"Rehab|Rehabilitation|Hospice|Surgical|Imaging|Women's|Children's|VA|Veterans|Home Health|"
    r"Assisted Living|Care Center|"
    r"Health System|Healthcare|Behavioral"
)
# found from the service word (sparse), then the town read backwards from it
_FACILITY_AFTER_TOWN = re.compile(rf"(?<=[a-zà-ÿ])[ \t]{{1,3}}(?:{_FACILITY})\b")
_TOWN_RUN_END = re.compile(r"(?<![A-Za-z0-9'’.@/-])(?:(?:St|Ft|Mt)\.?[ \t])?[A-Z][a-zà-ÿ]+(?:[ \t][A-Z][a-zà-ÿ]+)?$")
# A town alone in brackets ("Dr. Marchetti (Scranton)") or after a unit ("Lot 31, Ocala").
_TOWN_BRACKETED = re.compile(r"\((?P<v>[A-Z][a-zà-ÿ]+(?:[ \t][A-Z][a-zà-ÿ]+)?)\)")
_TOWN_AFTER_UNIT = re.compile(
    r"\b(?:Lot|Apt|Unit|Suite|Ste|Rm|Room|Box|Space)\.?[ \t]*#?[ \t]*[0-9][0-9A-Za-z-]{0,4},[ \t]*"
    r"(?P<v>[A-Z][a-zà-ÿ]+(?:[ \t][A-Z][a-zà-ÿ]+)?)"
)
_FACILITY_MIN_POPULATION = 1000
_UNIT_WORDS = ("lot", "apt", "unit", "suite", "ste", "rm", "room", "box", "space")
_REPEAT_REACH = 2000  # characters either side of a place found in which its other mentions are looked for
_REPEAT_BEFORE_STOP = re.compile(r"[A-Za-z0-9'’.@/-]")
_REPEAT_AFTER_STOP = re.compile(r"[A-Za-z0-9'’@-]")
_CREDENTIAL_WORDS = frozenset(names._CRED.replace("\\", "").split("|")) | {"ED", "ICU", "OR", "ER", "EMS", "PRN"}

_NAME_AGE_AFTER = re.compile(
    r"(?:[ \t]*,[ \t]*|[ \t]+)(?:[MF][ \t]+)?(?P<v>9\d|1[01]\d)(?![0-9])"
    r"(?=[ \t]*(?:$|[,;.)\n—–]|-(?![0-9])|per\b|y\.?o\b|yo\b|y/o\b|years?\b|yrs?\b|\())"
)
_AGE_WORD_BRACKET = re.compile(r"\b(?:nonagenarian|centenarian|supercentenarian)[ \t]*\((?P<v>9\d|1[01]\d)\)", re.I)
_AGE_CORRECTED = re.compile(
    r"\b(?:corrected to|actually|in fact|really|make that|or|no[,—–-]*[ \t]*(?:she|he|pt)(?:'s|[ \t]+is))"
    r"[ \t]+(?P<v>9\d|1[01]\d)(?![0-9])(?![ \t]*(?:%|mg|kg|lb|min|mmHg|bpm|mL|units?)\b)",
    re.I,
)

_AGE_NUMBER = (
    r"(?P<v>9\d|1[01]\d|(?:ninety|one hundred)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine|and \w+))?)"
)
_NOT_AGE_AFTER = (
    r"(?![0-9/.,]?[0-9])(?![ \t]*(?:/|%|mg|mcg|kg|lbs?|min|mmHg|bpm|mL|units?|days?|weeks?|months?|miles?|minutes?|"
    r"hours?|percent|th\b|st\b|nd\b|rd\b|degrees?|°|F\b|cm|mm|beats))"
)
# "Age on card: 91", "age recorded as ninety-six", "aged about 93": an age word, no digit, then the number.
_AGE_LABEL_NUMBER = re.compile(rf"\b(?:[Aa]ge|AGE|[Aa]ged)\b[^.\n;0-9]{{0,20}}?\b{_AGE_NUMBER}{_NOT_AGE_AFTER}")
# "pt currently 95,", "she is now 93": a person, then currently/now and the number.
_AGE_CURRENTLY = re.compile(
    rf"\b(?:[Pp]t|[Pp]atient|[Ss]he|[Hh]e|[Mm]om|[Mm]other|[Dd]ad|[Ff]ather|[Gg]randmother|[Gg]randfather|[Ww]ife|"
    rf"[Hh]usband|[Ww]ho|[Ss]he's|[Hh]e's|[Ss]he is|[Hh]e is)[ \t]{{1,3}}(?:is[ \t]{{1,3}})?"
    rf"(?:currently|now|presently|today)[ \t]+"
    rf"{_AGE_NUMBER}{_NOT_AGE_AFTER}"
)
_ZH_AGE_NUM = r"(?P<v>九十[一二三四五六七八九]?|一百(?:零[一二三四五六七八九]|一十?[一二三四五六七八九]?)?|9\d|1[01]\d)"
# 女，九十一，…; 其父九十六了; 现年95，
_ZH_AGE_AFTER_SEX = re.compile(rf"[男女]性?[，,、 \t　]+{_ZH_AGE_NUM}(?=[，,。；;、 \t　]|$)")
_ZH_AGE_KIN = re.compile(
    rf"(?:其父|其母|父亲|母亲|老人|老人家|奶奶|爷爷|外婆|外公|姥姥|姥爷|老伴|患者|她|他)(?:今年|已经|已|都)?{_ZH_AGE_NUM}了"
)
_ZH_AGE_NOW = re.compile(
    rf"(?:现年|今年|年龄|年纪|年岁)[:：]?[ \t　]*{_ZH_AGE_NUM}(?![0-9.])(?![ \t]*(?:年|月|日|号|kg|%|次|分|元))"
)
_SELF_INTRO = re.compile(
    r"(?:\b[Ii]t'?s|\b[Ii]t is|\b[Tt]his is|\b[Tt]his's|\b[Mm]y name is|\b[Ii]'m)[ \t]+"
    r"(?P<v>[A-Z][a-z]+(?:-[A-Z][a-z]+)?)(?=[ \t]*,|[ \t]+(?:from|with|calling|here|again)\b)"
)
_QUOTED_NICK = re.compile(r"[ \t]+[\"“](?P<n>[A-Z][\w'’.-]*(?:[ \t][A-Z][\w'’.-]*)?)[\"”][ \t]+(?P<f>[A-Z][\w'’-]+)")
_TITLE_INITIAL = re.compile(
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?[ \t]+(?P<v>[A-Z]\.?)(?![A-Za-z])(?=[ \t]*[,;)]|[ \t]+[a-z0-9])"
)
_TITLE_PARTICLE = re.compile(
    r"\b(?:Dr|Mr|Mrs|Ms|Miss)\.?[ \t]+(?P<v>(?:van|von|de|del|della|di|da|du|le|la|ter|ten|dos|das)"
    r"(?:[ \t](?:der|den|de|la|los|las))?[ \t][A-Z][a-z]+)"
)
# "J. Park RN", "A. Nwosu RN": an initial and a family name before a credential, no comma needed
_INITIAL_CRED = re.compile(
    rf"(?<![A-Za-z.])(?P<v>[A-Z]\.[ \t]?[A-Z][a-z]+(?:-[A-Z][a-z]+)?)(?=[ \t]+(?:{names._CRED})\b)"
)
# "OYELOWO, FUNMILAYO — DOB", "SMITH, JOHN A (DOB": capitals LAST, FIRST before a birth date, MRN or age
_CAPS_LAST_FIRST = re.compile(
    r"(?<![A-Za-z])(?P<v>[A-Z]{2,}(?:[-'][A-Z]{2,})?,[ \t]*[A-Z]{2,}(?:[ \t][A-Z]\.?)?)"
    r"(?=[ \t]*[—–,-]?[ \t]*(?:DOB|D\.O\.B|MRN|\(|\d{1,3}[ \t]*(?:y|yo|M|F)\b))"
)
_SIGNED_INITIALS = re.compile(
    r"(?:\b[Ss]igned(?:[ \t]+by)?|\b[Cc]o-?signed|\b[Ii]nitials(?:[ \t]+only)?|\bTech|\b[Cc]alled[ \t]+by|"
    r"\b[Rr]ead[ \t]+back[ \t]+by|\b[Tt]ranscribed(?:[ \t]+by)?|\b[Dd]ictated(?:[ \t]+by)?|\b[Vv]erified[ \t]+by)"
    r"[ \t]*:?[ \t]*"
    r"(?P<v>[A-Z]\.?(?:[A-Z]\.?){1,3})(?![A-Za-z0-9])"
)
_LOWER_INITIALS = re.compile(
    r"\b(?:[Tt]ranscribed|[Tt]yped|[Dd]ictated)(?:[ \t]+by)?[ \t]*:[ \t]*(?P<v>[a-z]{2,4})(?![A-Za-z])"
)
_TITLE_SHORT = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx)\.?[ \t]+(?P<v>[A-Z][a-z])(?![A-Za-z])(?=[ \t]*[,;.)]|[ \t]+[a-z])")
_QUOTED_NAME = re.compile(
    r"\b(?:name|names|goes by|alias|a\.k\.a\.|aka|nickname)\b[^\"“\n.]{0,25}[\"“]"
    r"(?P<v>[A-Z][\w'’-]+(?:[ \t][A-Z][\w'’-]+)?)[\"”]"
)
_HEADER_LAST_FIRST = re.compile(
    r"(?m)^(?:To|Cc|CC|From|Attn|ATTN):[ \t]*(?P<v>[A-Z][a-z]+(?:-[A-Z][a-z]+)?,[ \t]*[A-Z][a-z]+)(?=[ \t]*(?:$|[;<(]))"
)
_LOWER_SELF_INTRO = re.compile(r"\b(?:this is|it's|my name is)[ \t]+(?P<v>[a-z]{3,12})(?=[ \t]+from\b)")
_ZH_LATIN_INITIALS = re.compile(
    r"(?:护士|医生|医师|签名|签字|记录人|交班|接班|责任护士|操作者|核对人)[:：]?[ \t]*(?P<v>[A-Z]{2,4})(?![A-Za-z0-9])"
)

_ZH_GLOSS = "小名|网名|乳名|昵称|本名|真名|外号|绰号|用户名|微信名|微信昵称|中文名|英文名|大名"
_ZH_NICK_BEFORE_GLOSS = re.compile(rf"(?P<v>[{_HAN}]{{2,6}})[（(](?:患儿|患者|病人|其|即)?(?:{_ZH_GLOSS})")
_ZH_QUOTE_CUES = (
    _ZH_GLOSS + "|叫他|叫她|叫作|称他|称她|人称|前夫|前妻|丈夫|妻子|爱人|邻居|同桌|朋友|同事|病友|室友|村|姓"
)
_ZH_QUOTED_AFTER_GLOSS = re.compile(
    rf"(?:{_ZH_QUOTE_CUES})(?:是|叫|为)?[:：]?[ \t]*[\"“”「『'‘](?P<v>[^\"“”」』'’\s，。]{{1,6}})[\"“”」』'’]"
)
_ZH_SCREEN_NAME = re.compile(
    rf"(?:用户名|网名|昵称|中文名|微信名)[:：]?[ \t]*(?P<v>[{_HAN}]{{2,6}})(?=[，,。；;（(\s]|$)"
)
_ZH_PAUSE = set("：:，,。；;、 \t\n　（(）)|｜“”\"'")
_ZH_SURNAME_MOU = re.compile(rf"(?P<v>[{names._ZH_ALL_SINGLE}](?:某某|某)(?![些种日天次处地院时月年个位项类部样]))")
_ZH_MASKED = re.compile(rf"(?:姓名|患者|名字)[ \t]*[:：|｜]?[ \t]*(?P<v>[{names._ZH_ALL_SINGLE}][*＊×xX]+)")
_ZH_COMPOUND_TITLE = re.compile(
    rf"(?P<v>(?:{names._ZH_ALL_COMPOUND})[{_HAN}]{{0,2}}?)(?=女士|先生|老太太|老太|老先生|老爷子|阿姨|大爷|奶奶|爷爷|"
    r"医生|医师|主任|护士|老师|同志)"
)
# after a person word (checked backwards from the surname: _prefix_ends_at), a given name of one or two, a pause
_ZH_COMPOUND_GIVEN = re.compile(rf"[{_HAN}]{{1,2}}(?=[，,。；;、 \t\n（(|｜]|$)")
_ZH_LABEL_GAP = re.compile(r"[:：]?[ \t]*$")
_ZH_COMPOUND_ANY = re.compile(names._ZH_ALL_COMPOUND)
_ZH_ELDER_ANY = re.compile(
    rf"(?<=[是叫的：:，,。（( \n者人])(?P<v>[{names._ZH_ALL_SINGLE}])"
    r"(?=老太太|老太|阿婆|老爷子|老先生|大爷|大妈|奶奶|爷爷|阿姨|老(?=[^\u4e00-\u9fff]|$|今|昨|诉|说|称|夜|已|在|的|因|于|自|血|要))"
)
_ZH_OLD_AFTER_PERSON = re.compile(
    rf"(?:家属|其子|其女|其夫|其妻|老伴|患者|病人|联系人|陪护|护工)(?P<v>老[{names._ZH_ALL_SINGLE}])(?![{_HAN}]?(?:年|人|伴|家|师|公|婆|乡|板|总|友))"
)
_ZH_SURNAME_DOCTOR = re.compile(
    rf"(?:主治|主管|管床|接诊|首诊|值班|经治|找|请)(?P<v>[{names._ZH_ALL_SINGLE}])(?=医生|医师|大夫|主任|护士)"
)
_DOTS = "·•・‧"
_DOT_RE = re.compile(f"[{_DOTS}]")
_HAN_AFTER_DOT = re.compile(rf"[{_HAN}]{{1,8}}(?![{_HAN}])")
_ZH_DOTTED = re.compile(rf"(?P<v>[{_HAN}]{{1,12}}[·•・‧][{_HAN}]{{1,8}})(?=[^{_HAN}]|$)")
# "小芳是患儿的小名", "何仙姑是患者在村里的外号": a name opening a clause, then 是 … its gloss.
_ZH_NAME_IS_GLOSS = re.compile(
    rf"(?:^|(?<=[\n。；;，,]))(?P<v>[{_HAN}]{{2,4}})是(?:患者|患儿|病人|他|她|其)?(?:的|在[{_HAN}]{{1,6}}的)?(?:{_ZH_GLOSS})"
)
# A full name in brackets after a nickname, an elder's title or a quote:
# 官大爷（官德胜）, 乐乐（乐天宇）, "大刘"（刘强）.
_ZH_BRACKET_FULL = re.compile(rf"[（(](?P<v>[{names._ZH_ALL_SINGLE}][{_HAN}]{{1,2}})[）)]")
_ZH_BRACKET_AFTER = re.compile(r"(?:大爷|大妈|奶奶|爷爷|阿姨|老太|阿婆|老汉|[\"”」』])$")
# Kin or a person word, then a full name followed by anything (其妻梁月娥学习, 配偶孔令仪体健, 由其曾孙拓跋小宇).
_ZH_KIN_WORDS = (
    "其妻|其夫|其子|其女|其孙|其孙女|其曾孙|其母|其父|其兄|其弟|其姐|其妹|其侄|配偶|妻子|丈夫|爱人|老伴|儿子|女儿|"
    "孙子|孙女|曾孙|外孙|母亲|父亲|我爸|我妈|男友|女友|前夫|前妻|新生儿|伤者|同行|随访对象|接听人|即|真名|中文名|大名|"
    "由爷爷|由奶奶|爷爷|奶奶|外婆|外公|侄子|侄女|妻|夫|村民|居民|翻译|主人|教授|原名|后者为|前者为|孩子爸爸|孩子妈妈|"
    "我爸叫|我妈叫|叫|同桌|邻居|同病房|名|户名|上报人|报告人"
)
_ZH_KIN_NAME = re.compile(rf"(?:{_ZH_KIN_WORDS})[:：]?(?=[{_HAN}])")
# A surname alone before a trade or family title: 卓助产士, 米收费员, 满工程师, 卢工, 扁大夫, 俞爸爸, 桂治疗师.
_ZH_TRADE_TITLE = (
    "助产士|收费员|工程师|技师|治疗师|药师|营养师|康复师|大夫|爸爸|妈妈|"
    "师傅|老师|护士|医生|医师|主任|工(?![作程人资具厂])"
)
_ZH_SURNAME_TRADE = re.compile(
    rf"(?:^|(?<=[：:，,、（(\s\n]|科|由|与|是|请|找|和))(?P<v>[{names._ZH_ALL_SINGLE}])(?={_ZH_TRADE_TITLE})"
)
# 护士长邱、: a surname alone after a role, before an enumeration pause
_ZH_ROLE_SURNAME_PAUSE = re.compile(
    rf"(?:护士长|主任|医生|医师|药师|护士|科长|院长)(?P<v>[{names._ZH_ALL_SINGLE}])(?=[、，,；;])"
)
# 院感科韦春花: a department, then a full name before a pause
_ZH_DEPT_NAME = re.compile(rf"科(?P<v>[{names._ZH_ALL_SINGLE}][{_HAN}]{{1,2}})(?=[，,。；;、\s|｜）)]|$)")
_ZH_PARTICLES = frozenset("的了是在和与及或也都就又还把被给向对从于说称")
_ZH_NICK_STOP = frozenset(("患者", "患儿", "病人", "家属", "本人"))


_PREFIX_AT_END = re.compile(
    "(?:" + "|".join(re.escape(w) for w in sorted(set(names._ZH_PREFIX_WORDS), key=len, reverse=True)) + ")$"
)
_PREFIX_LONGEST = max(len(w) for w in names._ZH_PREFIX_WORDS)


def _prefix_ends_at(text: str, pos: int, lo: int = 0) -> bool:
    """Whether a person word of names.py (患者, 户名, 其女 …) ends at `pos` (starting at or after `lo`)."""
    return _PREFIX_AT_END.search(text, max(lo, pos - _PREFIX_LONGEST), pos) is not None


def _person_prefix_end(run: str) -> int:
    """Length of a person word (患者, 来访者, 产妇 …) at the start of a Han run, 0 if none."""
    best = 0
    for word in names._ZH_PREFIX_WORDS:
        if len(word) > best and run.startswith(word):
            best = len(word)
    return best


def find_late(text: str, spans: Iterable[Span], kinds: frozenset[str]) -> Iterator[Span]:
    """Spans of these families; `spans` are the other detectors' candidates (before overlaps are resolved)."""
    by_type: dict[str, list[Span]] = {ADDRESS: [], GEO: [], NAME: [], AGE: []}
    for s in spans:
        bucket = by_type.get(s.type)
        if bucket is not None:
            bucket.append(s)
    han = bool(_HAS_HAN.search(text))
    low = cues.fold(text)  # shared with the anchors pass of cues.py (cached per text)
    if GEO in kinds:
        yield from _geo(text, low, by_type[ADDRESS], by_type[GEO])
    if AGE in kinds:
        yield from _ages(text, low, by_type[NAME], by_type[AGE], han)
    if NAME in kinds:
        yield from _names_en(text, low, by_type[NAME])
        if han:
            yield from _names_zh(text)


_HAS_HAN = re.compile(f"[{_HAN}]")


def _geo(text: str, low: str, addresses: list[Span], places: list[Span]) -> Iterator[Span]:
    for s in addresses:
        if not _DIGIT.search(text, s.start, s.end) or not text[s.start : s.end].isascii():
            continue
        m = _TOWN_AFTER_ADDRESS.match(text, s.end)
        if not m:
            continue
        town = m.group(1)
        words = town.replace("-", " ").split()
        if words[0] in _NOT_TOWN_FIRST or words[-1] in _STREET_WORDS:
            continue
        yield Span(m.start(1), m.end(1), GEO, P_GEO)
    if "\n" in text or " " in text:
        for m in _TOWN_BEFORE_STATE.finditer(text):
            town = m.group(1)
            words = town.replace("-", " ").split()
            if words[0] in _NOT_TOWN_FIRST:
                continue
            yield Span(m.start(1), m.end(1), GEO, P_GEO)
    for f in _FACILITY_AFTER_TOWN.finditer(text):
        m = _TOWN_RUN_END.search(text, max(0, f.start() - 48), f.start())
        if not m:
            continue
        words = m.group().split()
        if words[0] in _NOT_TOWN_FIRST:
            continue
        # the run or its last word(s): "pickup from Eastgate location", "Transport by Fort Wayne Citilink"
        for k in range(len(words)):
            place = " ".join(words[k:])
            hit = _gazetteer(place)
            if hit:
                start = m.end() - len(place)
                yield Span(start, m.end(), GEO, P_GEO)
                break
    ordinary = geo._ambiguous_en()[0]
    regexes = ((_TOWN_BRACKETED,) if "(" in text else ()) + (
        (_TOWN_AFTER_UNIT,) if "," in text and _any(low, _UNIT_WORDS) else ()
    )
    for regex in regexes:
        for m in regex.finditer(text):
            place = m.group("v")
            if place not in ordinary and not _clinical(place) and _gazetteer(place):
                yield Span(m.start("v"), m.end("v"), GEO, P_GEO)
    # other mentions, within a note's reach, of an English place found with a strong or cued context
    found = {s.start for s in places}
    done: set[tuple[str, int]] = set()
    searched: dict[str, int] = {}  # per name, how far the text has been searched
    for s in places:
        if s.priority < geo.P_GEO_CUE:
            continue
        value = text[s.start : s.end]
        if len(value) < 4 or not value.isascii() or not value[0].isupper():
            continue
        lo, hi = max(0, s.start - _REPEAT_REACH, searched.get(value, 0)), min(len(text), s.end + _REPEAT_REACH)
        searched[value] = max(hi - len(value), lo)
        i = text.find(value, lo, hi)
        while i != -1:
            j = i + len(value)
            if (
                i not in found
                and (value, i) not in done
                and (i == 0 or not _REPEAT_BEFORE_STOP.match(text[i - 1]))
                and (j == len(text) or not _REPEAT_AFTER_STOP.match(text[j]))
            ):
                done.add((value, i))
                yield Span(i, j, GEO, P_GEO_REPEAT)
            i = text.find(value, j, hi)


def _gazetteer(place: str) -> bool:
    """An English town of the gazetteer (GeoNames via geo.py) with at least a thousand people."""
    hit = geo._automaton().get(place, None)
    return bool(hit) and hit[0] == "en" and hit[2] >= _FACILITY_MIN_POPULATION


_AGE_POSSIBLE = re.compile(r"9\d|1[01]\d|[Nn]inety|NINETY|[Hh]undred|HUNDRED|九十|一百|nari|NARI")


def _ages(text: str, low: str, found_names: list[Span], found_ages: list[Span], han: bool) -> Iterator[Span]:
    if not _AGE_POSSIBLE.search(text):
        return
    ages = list(found_ages)
    # not after a vital sign or lab taken for a name ("Pulse Rate, 96", "Plt, 95"): words of the clinical list
    safe = _safe_words()
    # the few numbers 90-119 first, then: does a name end right before? (a name's last word is read only for
    # the names that end where such a number starts, not for every name of the text)
    numbers = list(_NAME_AGE_AFTER.finditer(text))
    if numbers:
        starts = {m.start() for m in numbers}
        name_ends = {
            s.end
            for s in found_names
            if s.end in starts and text[s.start : s.end].split()[-1].strip(",.:").lower() not in safe
        }
        for m in numbers:
            if m.start() in name_ends:
                ages.append(Span(m.start("v"), m.end("v"), AGE, P_AGE))
    if "nari" in text or "NARI" in text:
        for m in _AGE_WORD_BRACKET.finditer(text):
            ages.append(Span(m.start("v"), m.end("v"), AGE, P_AGE))
    regexes = ((_AGE_LABEL_NUMBER,) if "age" in low else ()) + (
        (_AGE_CURRENTLY,) if _any(low, ("currently", "now", "presently", "today")) else ()
    )
    for regex in regexes:
        for m in regex.finditer(text):
            ages.append(Span(m.start("v"), m.end("v"), AGE, P_AGE))
    if han:
        for regex in (_ZH_AGE_AFTER_SEX, _ZH_AGE_KIN, _ZH_AGE_NOW):
            for m in regex.finditer(text):
                ages.append(Span(m.start("v"), m.end("v"), AGE, P_AGE))
    yield from ages
    if not ages:
        return
    for m in _AGE_CORRECTED.finditer(text):
        if any(0 <= m.start() - a.end <= 80 for a in ages):
            yield Span(m.start("v"), m.end("v"), AGE, P_AGE)


def _covered(spans: list[Span], length: int) -> bytearray:
    """One mark per character inside a span of `spans`."""
    marks = bytearray(length)
    for s in spans:
        marks[s.start : s.end] = b"\x01" * (s.end - s.start)
    return marks


def _any(text: str, words: tuple[str, ...]) -> bool:
    """Whether one of `words` occurs in `text`: substring tests in C, so that a family whose literal is
    absent costs no pattern search (a short note pays per search, not per character)."""
    return any(w in text for w in words)


_SELF_WORDS = ("it's", "it is", "this is", "this's", "my name", "i'm", "its ")
_TITLE_WORDS = ("mr", "ms", "mx", "miss", "dr")
_SIGNED_WORDS = ("signed", "initials", "tech", "called", "read back", "transcribed", "dictated", "verified", "typed")
_QUOTES = ('"', "“")
_HEADER_WORDS = ("to:", "cc:", "from:", "attn:")


def _names_en(text: str, low: str, found_names: list[Span]) -> Iterator[Span]:
    _given, _family, _s, _g, not_names = names.dictionaries()
    quoted = _any(text, _QUOTES)
    marks = None
    for s in found_names if quoted else ():
        m = _QUOTED_NICK.match(text, s.end)
        if not m or m.group("f") in not_names:
            continue
        if marks is None:
            marks = _covered(found_names, len(text))
        # only where no name found already holds the nickname (Margaret "Peggy" Holloway is one span)
        if marks.find(1, m.start("n"), m.end("n")) == -1:
            yield Span(m.start("n"), m.end("n"), NAME, P_NAME)
            yield Span(m.start("f"), m.end("f"), NAME, P_NAME)
    self_intro = _any(low, _SELF_WORDS)
    if self_intro:
        for m in _SELF_INTRO.finditer(text):
            word = m.group("v")
            if word in not_names or word in names._MONTHS or _clinical(word):
                continue
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    titles = _any(low, _TITLE_WORDS)
    for regex in (_TITLE_INITIAL, _TITLE_PARTICLE) if titles else ():
        for m in regex.finditer(text):
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    if "." in text:
        for m in _INITIAL_CRED.finditer(text):
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    if "," in text:
        for m in _CAPS_LAST_FIRST.finditer(text):
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    yield from _name_columns(text)
    signed = _any(low, _SIGNED_WORDS)
    for m in _LOWER_INITIALS.finditer(text) if signed else ():
        yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for regex in ((_TITLE_SHORT,) if titles else ()) + ((_QUOTED_NAME,) if quoted else ()):
        for m in regex.finditer(text):
            if not _clinical(m.group("v")):
                yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for m in _HEADER_LAST_FIRST.finditer(text) if _any(low, _HEADER_WORDS) else ():
        yield Span(m.start("v"), m.end("v"), NAME, P_NAME_OVER_GEO)
    given = names.dictionaries()[0]
    for m in _LOWER_SELF_INTRO.finditer(text) if self_intro else ():
        if m.group("v").capitalize() in given:
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for m in _SIGNED_INITIALS.finditer(text) if signed else ():
        letters = m.group("v").replace(".", "")
        if letters in _CREDENTIAL_WORDS:
            continue
        yield Span(m.start("v"), m.end("v"), NAME, P_NAME)


def _safe_words() -> frozenset[str]:
    from . import safelist

    return safelist.safe_words()  # lower-case English words, clinical terms, places (cached there)


@lru_cache(maxsize=1)
def _clinical_terms() -> frozenset[str]:
    from . import safelist

    return frozenset(w.lower() for w in safelist._load("clinical_terms_en.txt"))


_NAME_HEADER = re.compile(
    r"^(?:姓名|姓名缩写|受试者|患者|病人|Name|Patient|Pt|Initials|Patient name|Subject initials|Pt initials)$", re.I
)
_CELL_NAME = re.compile(
    rf"^(?:[A-Z](?:\.?-?[A-Z]){{1,3}}\.?|[{_HAN}·]{{2,8}}|[A-Z][a-z]+(?:[ ,]+[A-Z][a-z.]+){{0,2}})$"
)


def _name_columns(text: str) -> Iterator[Span]:
    """Cells of a table column headed 姓名 / Name / Initials: the rows below the header until the table ends."""
    if "|" not in text:
        return
    lines = text.split("\n")
    offset = 0
    column = None
    for line in lines:
        if "|" in line:
            cells = line.split("|")
            if column is None and not _DIGIT.search(
                line
            ):  # a header row holds no value: "| 姓名 | 葛秀兰 | 年龄 | 92 |" is not one
                for i, cell in enumerate(cells):
                    if _NAME_HEADER.match(cell.strip()):
                        column = i
                        break
            elif column is not None and column < len(cells) and not set(line) <= set("|-: \t"):
                pos = offset + sum(len(c) + 1 for c in cells[:column])
                cell = cells[column]
                value = cell.strip()
                if value and _CELL_NAME.match(value) and not _clinical(value):
                    start = pos + cell.index(value)
                    yield Span(start, start + len(value), NAME, P_NAME)
        else:
            column = None
        offset += len(line) + 1


def _clinical(word: str) -> bool:
    """A drug, payer, specialty, day or month (data/clinical_terms_en.txt): not a speaker's name."""
    return word.lower() in _clinical_terms()


@lru_cache(maxsize=1)
def _zh_frequent() -> frozenset[str]:
    """Surname characters too frequent as words to stand alone (和, 于, 从 …): safelist's jieba table."""
    return _zh_jieba()[1]


def _zh_jieba():
    from . import safelist

    return safelist.zh_words()


def _is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def _bracket_after_name(text: str, pos: int) -> bool:
    """A bracket right after a doubled nickname (乐乐（…）) or a 老X/小X/阿X name."""
    return pos >= 2 and (text[pos - 1] == text[pos - 2] or text[pos - 2] in "老小阿") and _is_han(text[pos - 1])


def _zh_kin_names(text: str) -> Iterator[Span]:
    """A full name after a kin or person word, whatever follows it: a minority name (其孙次仁, 丈夫努尔兰),
    or a surname (compound first) and one or two given-name characters that start no dictionary word."""
    given_chars = names.dictionaries()[3]
    words, frequent = _zh_jieba()
    for m in _ZH_KIN_NAME.finditer(text):
        pos = m.end()
        end = pos
        while True:  # minority name syllables (艾合买提, 泽仁拉姆, 法蒂玛), whatever follows them
            mm = names._ZH_MINORITY_ONE_RE.match(text, end)
            if not mm:
                break
            end = mm.end()
        if end - pos >= 3 or (end - pos == 2 and not _is_han(text[end : end + 1] or "x")):
            yield Span(pos, end, NAME, P_NAME)
            continue
        sur = 0
        for k in (2, 1):
            if text[pos : pos + k] in names._ZH_ALL_SURNAMES:
                sur = k
                break
        if not sur or (sur == 1 and (text[pos] in frequent or text[pos] not in names._ZH_DISTINCTIVE)):
            continue
        if any(text[pos : pos + n] in words for n in (2, 3, 4)) or text[pos : pos + 2] in names._ZH_NOT_NAMES:
            continue
        g = pos + sur
        first, second = text[g : g + 1], text[g + 1 : g + 2]
        if second in given_chars and first and _is_han(first) and first not in _ZH_PARTICLES:
            n = 2  # 梁月娥: the second character is a given-name one, the first any but a particle
        else:
            n = 1 if first in given_chars else 0
        if n:
            yield Span(pos, pos + sur + n, NAME, P_NAME)


def _dotted(text: str) -> Iterator[tuple[int, int, int]]:
    """(start, end, offset of the dot) of each run of up to 12 Han characters, a middle dot and up to 8 more
    Han characters before a non-Han one (阿不都热合曼·买买提明): found from the dots, not by a whole-text search."""
    last = 0
    for d in _DOT_RE.finditer(text):
        i = d.start()
        if i < last:
            continue
        start = i
        while start > max(last, i - 12) and _is_han(text[start - 1]):
            start -= 1
        m = _HAN_AFTER_DOT.match(text, i + 1)
        if start < i and m:
            last = m.end()
            yield start, m.end(), i - start


def _names_zh(text: str) -> Iterator[Span]:
    for m in _ZH_LATIN_INITIALS.finditer(text) if _LATIN_CAPS.search(text) else ():
        yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    brackets = "（" in text or "(" in text
    glossed = _any(text, ("名", "号", "称"))
    for m in _ZH_NICK_BEFORE_GLOSS.finditer(text) if brackets and glossed else ():
        run, start = m.group("v"), m.start("v")
        cut = _person_prefix_end(run)
        if cut:
            run, start = run[cut:], start + cut
        elif len(run) > 4:
            run, start = run[-2:], start + len(run) - 2  # "孩子爸爸黑子（绰号）": the nickname is the last two
        if len(run) < 2 or run in _ZH_NICK_STOP:
            continue
        yield Span(start, start + len(run), NAME, P_NAME)
    quoted = _any(text, ('"', "“", "”", "「", "『", "'", "‘"))
    for regex in ((_ZH_QUOTED_AFTER_GLOSS,) if quoted else ()) + ((_ZH_SCREEN_NAME,) if glossed else ()):
        for m in regex.finditer(text):
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for m in _ZH_SURNAME_MOU.finditer(text) if "某" in text else ():
        before = text[m.start() - 1] if m.start() else "\n"
        if before in _ZH_PAUSE or _prefix_ends_at(text, m.start()):
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for m in _ZH_MASKED.finditer(text) if _any(text, ("*", "＊", "×", "x", "X")) else ():
        yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for m in _ZH_NAME_IS_GLOSS.finditer(text) if glossed and "是" in text else ():
        if m.group("v") not in _ZH_NICK_STOP:
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for m in _ZH_DEPT_NAME.finditer(text) if "科" in text else ():
        if m.group("v")[0] in names._ZH_DISTINCTIVE and m.group("v")[:2] not in _zh_jieba()[0]:
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    for m in _ZH_BRACKET_FULL.finditer(text) if brackets else ():
        if _ZH_BRACKET_AFTER.search(text, max(0, m.start() - 3), m.start()) or _bracket_after_name(text, m.start()):
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    yield from _zh_kin_names(text)
    frequent = _zh_frequent()
    for regex in (_ZH_SURNAME_TRADE, _ZH_ROLE_SURNAME_PAUSE):
        for m in regex.finditer(text):
            if m.group("v") not in frequent:
                yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    elder = _any(text, ("老", "婆", "爷", "妈", "奶", "姨"))
    regexes = ((_ZH_ELDER_ANY,) if elder else ()) + ((_ZH_OLD_AFTER_PERSON,) if "老" in text else ())
    if _any(text, ("医", "大夫", "主任", "护士")):
        regexes += (_ZH_SURNAME_DOCTOR,)
    for regex in regexes:
        for m in regex.finditer(text):
            yield Span(m.start("v"), m.end("v"), NAME, P_NAME)
    if "·" in text or "•" in text or "・" in text or "‧" in text:
        for start, end, dot in _dotted(text):
            run = text[start:end]
            cut = 0
            for i in range(dot - 1, 0, -1):  # the rightmost person word before the dot: 户名木合塔尔·艾山
                if _prefix_ends_at(text, start + i, start):
                    cut = i
                    break
            before = text[start - 1] if start else "\n"
            if dot - cut > 8:
                continue
            if cut or before in _ZH_PAUSE or _prefix_ends_at(text, start):
                yield Span(start + cut, end, NAME, P_NAME)
    compounds = list(_ZH_COMPOUND_ANY.finditer(text))
    if not compounds:
        return
    for m in _ZH_COMPOUND_TITLE.finditer(text):
        yield Span(m.start("v"), m.end("v"), NAME, P_NAME_OVER_GEO)
    for c in compounds:  # 被保险人濮阳振华: the person, not the city
        gap = _ZH_LABEL_GAP.search(text, max(0, c.start() - 3), c.start())
        given = _ZH_COMPOUND_GIVEN.match(text, c.end())
        if given and _prefix_ends_at(text, gap.start() if gap else c.start()):
            yield Span(c.start(), given.end(), NAME, P_NAME_OVER_GEO)


fastre.accelerate(globals())  # after every pattern: see fastre.py (and prefilter.py on long texts)
# Every capitalised run before two capitals is a start of this one in the Hyperscan pass (its state codes fall
# beyond the part written): dense on clinical prose, so it is searched whole anyway, and its reports cost
# as much again. Searched whole with fastre's hint only.
_TOWN_BEFORE_STATE = getattr(_TOWN_BEFORE_STATE, "regex", _TOWN_BEFORE_STATE)
# A gate searched with `search` (its first match, found at once in C): kept out of the Hyperscan pass, in which
# it would report every pair of capitals of a long text for nothing.
_LATIN_CAPS = re.compile("[A-Z]{2}")
