"""Dates: every element except the year alone (Safe Harbor (C)).

ISO (2024-03-05, 2024/3/5), US (03/05/2024, 3-5-24), European dotted (05.03.2024), written
(March 5, 2024; 5th of March 2024; Mar. 5; March 2024), and Chinese (2024年3月5日, 3月5日,
二〇二四年三月五日). A year alone ("in 2019") is not an identifier and is left alone, as are
fractions, ratios and blood pressures ("1/2", "120/80") which have no year. A bare month/day
("3/14") counts only after a cue such as "on", "since" or "DOB".
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from . import cues, fastre
from .spans import DATE, Span

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)"
)
_WEEKDAY = (
    r"(?:(?:Mon|Tues|Tue|Wednes|Wed|Thurs|Thu|Fri|Satur|Sat|Sun)(?:day)?\.?"
    r"(?:\s(?:night|morning|afternoon|evening))?,?\s)?"
)
_DAY = r"(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?"
_YEAR4 = r"(?:1[89]|20)\d{2}"

_WRITTEN_RES = (
    # March 5, 2024 / Mar. 5th 2024 / Tuesday, March 5 / May 2-16, May 2 to 16 (a range is one span)
    re.compile(
        rf"(?<![A-Za-z]){_WEEKDAY}{_MONTH}\.?\s{{1,2}}{_DAY}(?:\s?[-–]\s?{_DAY}|\s(?:to|through|thru|and)\s{_DAY})?"
        rf"(?![0-9A-Za-z])(?:,?\s{{1,2}}{_YEAR4}(?!\d))?"
    ),
    # Jun-03-2022, Jun/03/2022, Jun 03 2022 (month, day and year with one separator)
    re.compile(rf"(?<![A-Za-z]){_MONTH}\.?([-/ ])(?:3[01]|[12]\d|0?[1-9])\1{_YEAR4}(?!\d)"),
    # 5 March 2024 / 5th of March, 2024 / 5-Mar-2024
    re.compile(
        rf"(?<![0-9A-Za-z]){_WEEKDAY}{_DAY}(?:\s(?:of\s)?|-){_MONTH}\.?(?![A-Za-z])(?:(?:,?\s|-){_YEAR4}(?!\d))?"
    ),
    # March 2024 / Mar. '24 is too ambiguous; month and four-digit year only
    re.compile(rf"(?<![A-Za-z]){_MONTH}\.?,?\s(?:of\s)?{_YEAR4}(?!\d)"),
    # a part of a named month, which dates an event without its day: "early May", "mid-June",
    # "late February", "the end of March" (a full month name only: "mid-Mar" is rare, "late Jan" a name)
    re.compile(
        r"(?<![A-Za-z])(?i:early|mid|late|the\s(?:beginning|start|middle|end)\sof)[\s-]"
        r"(?:January|February|March|April|May|June|July|August|September|October|November|December)(?![A-Za-z])"
    ),
)
_N = r"(\d{1,4})"
# An ISO timestamp's date part ("2024-03-02T08:15:03Z") ends before its T.
_NUMERIC_RE = re.compile(rf"(?<![0-9A-Za-z./-]){_N}([-/.])(\d{{1,2}})\2{_N}(?!(?!T\d)[0-9A-Za-z]|[./-]\d)", re.A)
_MONTH_YEAR_RE = re.compile(r"(?<![0-9A-Za-z./-])(1[0-2]|0?[1-9])/((?:19|20)\d{2})(?![0-9A-Za-z]|[./-]\d)", re.A)
_CUED_MD_RE = re.compile(
    r"(?<![A-Za-z])(?:on|since|from|until|till|by|dated|DOB|DOS|d\.o\.b\.|born|admitted|discharged|seen)"
    r"[:\s]{1,3}(?P<v>(?:1[0-2]|0?[1-9])/(?:3[01]|[12]\d|0?[1-9]))(?![0-9A-Za-z]|[./-]\d)",
    re.A | re.I,
)
# A month/day after a word that names an event in time ("Last infusion 3/3", "Next visit 9/25",
# "Addendum 10/3", "f/u 4/12"), at the start of a line before a colon ("9/11: seen in clinic"),
# or before a clock time ("10/3 22:10"); not a score, a fraction or a count ("strength 4/5",
# "pain 3/10", "cycle 2/6", "1/2 tab", "3/4 of").
_EVENT_WORDS = (
    r"visit|appt|appointment|f/u|follow[- ]?up|infusion|injection|dose\sgiven|vaccine|vaccination|transfusion"
    r"|addendum|note|surgery|procedure|operation|scan|CT|MRI|x-?ray|echo|labs?|biopsy|call(?:ed)?|phone\scall"
    r"|returned|started|stopped|restarted|held|resumed|due|through|thru|before|after|as\sof|week\sof|effective"
    r"|expires?|expired|last|next|onset|began|begins|starting|ending|today|tomorrow|yesterday|ED|ER|clinic"
    r"|admission|discharge|delivery|dialysis|session|consult|review(?:ed)?|updated|signed|received|sent|faxed"
    # verbs that date what was done ("pump downloaded 5/21", "missed 6/3", "rescheduled 7/9")
    r"|downloaded|uploaded|performed|done|completed|placed|inserted|removed|implanted|explanted|extubated"
    r"|intubated|drawn|collected|obtained|missed|cancell?ed|rescheduled|scheduled|moved?|arrived|transferred"
    r"|died|expired|delivered|operated|fell|injured|admitted|discharged|seen|evaluated|vaccinated|booked"
)
# The m/d is found first (the scanner starts on a digit); the words around it are checked after.
_MD_RE = re.compile(r"(?<![0-9A-Za-z./-])(?:1[0-2]|0?[1-9])/(?:3[01]|[12]\d|0?[1-9])(?![0-9A-Za-z]|[./-]\d)", re.A)
_EVENT_BEFORE_RE = re.compile(
    rf"(?<![A-Za-z])(?:{_EVENT_WORDS})[:,]?\s{{1,2}}(?:(?:on|of|was|is|at|her|his|their|the|my|your)\s)?$"
    # status post a procedure: "s/p R TKA 2/14", "s/p lap chole 6/30"
    r"|(?<![A-Za-z])s/p(?:\s[A-Za-z][\w-]{0,14}){1,3}\s$",
    re.A | re.I,
)
# A month/day before the event it dates ("her 4/22 appt", "the 6/3 visit").
_EVENT_AFTER_RE = re.compile(
    r"\s(?:appt|appointment|visit|f/u|follow[- ]?up|surgery|procedure|infusion|injection|labs?|scan|call|session"
    r"|consult|admission|discharge)\b",
    re.I,
)
# A month/day that continues a list of dates ("on 5/1 and 5/8", "since 3/2, 3/9 and 3/16").
_LIST_BEFORE_RE = re.compile(
    rf"(?<![A-Za-z])(?:on|since|from|until|by|dated|{_EVENT_WORDS})[:,]?\s{{1,2}}"
    r"(?:(?:1[0-2]|0?[1-9])/(?:3[01]|[12]\d|0?[1-9])(?:,\s?(?:and\s|or\s)?|\s(?:and|or|&|to|through|thru)\s|\s?[-–]\s?)){1,4}$",
    re.A | re.I,
)
_MD_NOT_AFTER_RE = re.compile(r"\s(?:of|tabs?|strength|pain)\b", re.I)
_LINE_START_RE = re.compile(r"(?:^|(?<=[.;!?] ))[ \t]*$", re.M)
_COLON_AFTER_RE = re.compile(r"[ \t]*[:\-–—]")
_TIME_AFTER_RE = re.compile(r",?\s(?:[01]?\d|2[0-3]):[0-5]\d")
# MM-DD (two digits each) before a clock time: a row of a chart or a log ("03-22 08:00").
# Also after a label's colon ("护理记录：11-03 22:00") and in a table row ("| 7-14 | 08:00 |"), where a
# single-digit month or day is usual; never inside a clock time ("22:10-11") or a longer number.
_MD_DASH_TIME_RE = re.compile(
    r"(?<![0-9A-Za-z./-])(?<!\d:)(?:(?:1[0-2]|0[1-9])-(?:3[01]|[12]\d|0[1-9])(?=[ T](?:[01]\d|2[0-3]):[0-5]\d)"
    r"|(?<=\| )(?:1[0-2]|0?[1-9])-(?:3[01]|[12]\d|0?[1-9])(?= \| (?:[01]?\d|2[0-3]):[0-5]\d))",
    re.A,
)
# A compact date YYYYMMDD after a date label (入院日期：20250106, DOS 20240817); checked for validity.
_COMPACT_RE = re.compile(r"(?<![0-9A-Za-z])((?:19|20)\d{2})(1[0-2]|0[1-9])(3[01]|[12]\d|0[1-9])(?![0-9A-Za-z])", re.A)
_COMPACT_LABEL_RE = re.compile(
    r"(?:日期|时间|(?<![A-Za-z])(?:date|DOS|DOB|D\.O\.B\.|dated|admitted|discharged|on))[:：\s]{0,3}$", re.I
)
# ... or a birth-date label earlier in the same line ("DOB entered as 19540612, should be 19540621",
# "出生日期录入为19540612"): a birth date is what an eight-digit date after it is.
_COMPACT_BIRTH_LINE_RE = re.compile(
    r"(?:(?<![A-Za-z])(?:DOB|D\.O\.B\.|date\sof\sbirth|birth\s?date|born)|出生)[^\n]*$", re.I
)
# Spanish and Portuguese written dates: "2 de marzo", "15 de agosto de 2024", "3 de março".
_SPANISH_RE = re.compile(
    r"(?<![0-9A-Za-z])(?:3[01]|[12]\d|0?[1-9])\s(?:de\s)?(?i:enero|febrero|fevereiro|marzo|março|abril|mayo|maio"
    r"|junio|junho|julio|julho|agosto|septiembre|setiembre|setembro|octubre|outubro|noviembre|novembro|diciembre"
    r"|dezembro|janeiro)(?![A-Za-z])(?:\s(?:de\s)?(?:1[89]|20)\d{2}(?!\d))?"
)
# A holiday with a year: "Thanksgiving Day 2022", "Christmas 2021", "2023年中秋节"; lunar dates
# (农历八月十五, 正月初三, 腊月廿三), Chinese-numeral month and day without a year (三月五日), and parts of a
# month (5月初, 3月中旬, 十月底).
_HOLIDAYS = (
    r"(?:Thanksgiving(?:\sDay)?|Christmas(?:\s(?:Day|Eve))?|New\sYear'?s(?:\s(?:Day|Eve))?|Easter(?:\sSunday)?"
    r"|Independence\sDay|Fourth\sof\sJuly|Memorial\sDay|Labor\sDay|Veterans\sDay|Halloween|Valentine'?s\sDay"
    r"|Mother'?s\sDay|Father'?s\sDay|Martin\sLuther\sKing(?:\sJr\.?)?\sDay|MLK\sDay|Presidents'?\sDay"
    r"|Good\sFriday|Boxing\sDay|Canada\sDay|Juneteenth|Diwali|Eid(?:\sal-\w+)?|Rosh\sHashanah|Yom\sKippur"
    r"|Hanukkah|Passover|Lunar\sNew\sYear|Chinese\sNew\sYear|Ramadan)"
)
_HOLIDAY_RE = re.compile(rf"(?<![A-Za-z]){_HOLIDAYS},?\s(?:of\s)?{_YEAR4}(?!\d)")
# A holiday without a year when it dates something that happened: after a preposition of time
# ("since Thanksgiving", "on New Year's Eve", "the week after Easter"); not "Christmas tree".
# The holiday is found first (the scanner starts on its capital); the preposition before it is checked after.
_HOLIDAY_ALONE_RE = re.compile(
    rf"(?<![A-Za-z]){_HOLIDAYS}(?![A-Za-z])(?!\s(?:tree|card|dinner\smenu|lights|music|party\sfavou?rs))"
)
# A holiday named with Day, Eve or Sunday ("Easter Sunday", "Valentine's Day", "Christmas Eve") is a date
# wherever it stands; so is one in apposition to a date ("Easter, March 31", "Feb 14 (Valentine's Day)").
_HOLIDAY_DAY_NAME = re.compile(r"(?:Day|Eve|Sunday|Friday)$")
_HOLIDAY_NEXT_TO_DATE = re.compile(rf",?\s(?:\(\s?)?{_MONTH}\.?\s\d")
_DATE_THEN_HOLIDAY = re.compile(r"\d(?:st|nd|rd|th)?(?:,\s|\s?\(\s?)$")
_HOLIDAY_PREP_BEFORE = re.compile(
    r"(?<![A-Za-z])(?:since|on|before|after|around|over|during|until|till|by|from|through|at|last|this|past|of)"
    r"\s(?:the\s)?$",
    re.I,
)
_CN_HOLIDAYS = (
    "春节|除夕|元宵节|元宵|清明节|清明|端午节|端午|中秋节|中秋|国庆节|国庆|元旦|重阳节|七夕|劳动节|五一|冬至|小年"
    "|妇女节|三八节|儿童节|六一|青年节|建军节|教师节|护士节|植树节|腊八节|腊八|圣诞节|圣诞|平安夜|情人节|母亲节"
    "|父亲节|感恩节|万圣节|复活节|寒食节|中元节|下元节"
)
_CN_LUNAR_DAY = (
    "初[一二三四五六七八九十]|十[一二三四五六七八九]?|二十[一二三四五六七八九]?|廿[一二三四五六七八九]?|三十"
)
# A Chinese holiday without a year when it dates an event: after 于/在/自/从/至/到 or a bracket that glosses
# a date (正月十五（元宵节）), or before 前后/前/后/期间/假期/当天/时/以来/左右; not a street or square
# (五一路, 国庆广场, 中秋月饼 is not dated either way).
_CN_HOLIDAY_CUED_RE = re.compile(
    rf"(?:(?<=[于在自从至到（(])|(?<=[于在]农历))(?:{_CN_HOLIDAYS})(?![路街道巷里村镇桥广场大厦小区])"
    rf"|(?:{_CN_HOLIDAYS})(?=前后|前|后|期间|假期|当天|那天|时|以来|左右|节后|过后|当晚|当日|那晚|晚上|夜里|上午|下午|早上|凌晨)"
    # at the head of an entry: "病程记录：中秋节当晚" is covered above; "：圣诞节，" after a label's colon
    rf"|(?<=[:：])(?:{_CN_HOLIDAYS})(?=[，,。（(\s])"
)
# Parts of a month without its number: 月初, 月中, 上月底, 本月中旬 (not 三个月中, 每月底, 岁月中).
_CN_MONTH_PART_RE = re.compile(
    "(?<![0-9〇零一二三四五六七八九十个几两半每岁年])(?:本|上|下|这个|上个|下个|当)?月(?:初|中旬|上旬|下旬|中|底|末)"
    "(?![0-9A-Za-z〇零一二三四五六七八九十])"
)
# A weekday with its date in brackets: 周五（6月20日）, 星期二(3月4日).
_CN_WEEKDAY_DATE_RE = re.compile(
    r"(?:[上下本这]个?)?(?:周|星期|礼拜)[一二三四五六日天]\s?[（(]\s?(?:1[0-2]|0?[1-9])\s?月\s?(?:3[01]|[12]\d|0?[1-9])\s?[日号]\s?[）)]"
)
_CN_EXTRA_RES = (
    re.compile(rf"(?<!\d)(?:1[89]|20)\d{{2}}\s?年\s?(?:{_CN_HOLIDAYS})", re.A),
    re.compile(
        r"(?:农历\s?)?(?:[甲乙丙丁戊己庚辛壬癸][子丑寅卯辰巳午未申酉戌亥]年\s?)"
        rf"(?:[正一二三四五六七八九十冬腊]|十[一二])月(?:{_CN_LUNAR_DAY}|[一二三四五六七八九])?"
        rf"|农历\s?(?:[正一二三四五六七八九十冬腊]|十[一二])月(?:{_CN_LUNAR_DAY}|[一二三四五六七八九])?"
        rf"|(?:正|腊|冬)月(?:{_CN_LUNAR_DAY})"
        rf"|(?<![〇零一二三四五六七八九十])(?:十[一二]?|[一二三四五六七八九])月(?:初[一二三四五六七八九十]|[一二三四五六七八九十]{{1,3}}[日号])"
    ),
    re.compile(
        r"(?<![0-9])(?:(?:1[89]|20)\d{2}\s?年\s?)?(?:1[0-2]|0?[1-9])\s?月(?:初|中旬|上旬|下旬|中|底|末|份)", re.A
    ),
    re.compile(r"(?<![〇零一二三四五六七八九十])(?:十[一二]?|[一二三四五六七八九])月(?:初|中旬|上旬|下旬|中|底|末|份)"),
)
# A weekday and a month/day: "Mon 10/17", "Thursday, 3/14" (the weekday is part of the date).
_WEEKDAY_MD_RE = re.compile(
    # any case ("Tues 11/12/24", "sat 3/15"); "Sat"/"Sun" alone are words ("Sat 3/4 of the time"): then not
    # before "of" or a dose word
    r"(?<![A-Za-z])(?i:(?:Mon|Tues?|Wed(?:nes)?|Thu(?:rs)?|Fri)(?:day)?\.?,?|(?:Satur|Sun)day,?|(?:Sat|Sun)[.,]?)"
    r"\s{1,2}(?:1[0-2]|0?[1-9])/(?:3[01]|[12]\d|0?[1-9])(?:/(?:\d{4}|\d{2}))?(?![0-9A-Za-z]|[./-]\d)"
    r"(?!\s(?:of|tabs?|caps?|pills?|doses?)\b)",
    re.A,
)
# A weekday with "the" and a day ("tuesday the 8th", "Friday the 13th").
_WEEKDAY_DAY_RE = re.compile(
    r"(?<![A-Za-z])(?i:(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day)\s(?:the\s)?(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)"
    r"(?![A-Za-z0-9])",
    re.A,
)
# A date written with spaces ("DOB: 08 19 1933") only after a birth or date label (checked on the
# text before it, so the scanner looks for the digits first).
_SPACED_RE = re.compile(r"(?<![0-9A-Za-z])(\d{1,2}) (\d{1,2}) ((?:1[89]|20)\d{2})(?![0-9A-Za-z])", re.A)
_SPACED_LABEL_RE = re.compile(
    r"(?<![A-Za-z])(?:DOB|D\.O\.B\.|date\sof\sbirth|birth\s?date|born(?:\son)?|dated|date)[:\s]{1,3}$", re.A | re.I
)
# A day of the month alone ("on the 4th", "since the 21st."): after a preposition, and followed by
# the end of the clause or a word that cannot be a noun it counts ("the 4th rib", "the 3rd day").
# The scanner looks for "the <ordinal>" first; the preposition before it is checked after.
_DAY_ALONE_RE = re.compile(
    r"[Tt]he\s(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)"
    r"(?=\s?[,.;:)!?]|\s?$|\s(?:of\s(?:this|last|next|the)\smonth|and(?!\s(?:the\s)?\d)|but|after|before|at|when"
    r"|in\sthe\s(?:morning|afternoon|evening)|to|through|thru|until|while|around)\b)",
    re.I,
)
_DAY_ALONE_BEFORE_RE = re.compile(
    r"(?<![A-Za-z])(?:on|since|from|until|till|by|before|after|to|through|thru|dated|starting|beginning)\s$"
    r"|(?<!\d)(?:[01]?\d|2[0-3]):[0-5]\d(?:\s?[ap]\.?m\.?)?,?\s$",  # after a clock time: "at 16:00, the 22nd:"
    re.I,
)
_CN_RES = (
    re.compile(
        r"(?<!\d)(?:1[89]|20)\d{2}\s?年\s?(?:1[0-2]|0?[1-9])\s?月(?:\s?(?:3[01]|[12]\d|0?[1-9])\s?[日号])?", re.A
    ),
    # 6月2日, 6月2日周日, 6月2日（星期日）, 今年5月3日, 去年12月
    re.compile(
        r"(?:(?:今年|去年|前年|明年|当年|同年|本年)\s?)?(?<!\d)(?:1[0-2]|0?[1-9])\s?月\s?(?:3[01]|[12]\d|0?[1-9])\s?[日号]"
        r"(?:\s?(?:[（(](?:周|星期|礼拜)[一二三四五六日天][)）]|(?:周|星期|礼拜)[一二三四五六日天]))?",
        re.A,
    ),
    # a month of this, last or next year, without its day: 今年5月, 去年十月 (a month alone, "5月", may be a count)
    re.compile(
        r"(?:今年|去年|前年|明年|当年|同年|本年)\s?(?:(?:1[0-2]|0?[1-9])|十[一二]?|[一二三四五六七八九])\s?月(?!龄|份?\d)"
    ),
    # a day of this, last or next month: 本月28日, 下月3号
    re.compile(
        r"(?:本月|上月|下月|当月|同月|次月)\s?(?:3[01]|[12]\d|0?[1-9])\s?[日号](?![床楼室房病线门窗柜机台车位院区栋座层单元])"
    ),
    re.compile("[〇零一二三四五六七八九]{4}年[一二三四五六七八九十]{1,2}月(?:[一二三四五六七八九十]{1,3}[日号])?"),
)


# Chinese, checked on the text around them (so the scanner starts on a digit): a two-digit year with
# month and day (23年3月5日); a day alone after a time cue (于18日, 至25日, 本月3日) or before a part of
# the day (18日晚, 3日上午), not an ordinal or a count (第3日, 术后5日, 共7日).
_CN_YY_RE = re.compile(r"[0-9]{2}年(?:1[0-2]|0?[1-9])月(?:3[01]|[12][0-9]|0?[1-9])[日号]")
_CN_DAY_RE = re.compile(r"[0-9]{1,2}[日号]")
_CN_DAY_CUE_BEFORE = ("于", "至", "到", "从", "自", "在", "截至", "本月", "上月", "下月", "当月", "同月")
_CN_NUMBERED_THINGS = frozenset("床楼室房病线门窗柜机台车位院区栋座层单元")
_CN_DAY_PART_AFTER = re.compile(r"凌晨|清晨|早晨|上午|中午|下午|傍晚|晚上|晚间|夜间|晨|晚|夜|起")


def _cn_day_alone(text: str, m: re.Match) -> bool:
    day = int(m.group()[:-1])
    before = text[max(0, m.start() - 2) : m.start()]
    if 1 <= day <= 31 and before.endswith(("本月", "上月", "下月", "当月", "同月")):
        return m.group()[-1] != "号" or text[m.end() : m.end() + 1] not in _CN_NUMBERED_THINGS
    if not 1 <= day <= 31 or (before and (before[-1].isdigit() or before[-1] in "月年.")):
        return False
    if m.group()[-1] == "号" and text[m.end() : m.end() + 1] in _CN_NUMBERED_THINGS:
        return False  # 在3号床, 至5号楼: a number, not a day
    if before.endswith(_CN_DAY_CUE_BEFORE):
        return True
    return m.group()[-1] == "日" and not before.endswith(("第", "后")) and bool(_CN_DAY_PART_AFTER.match(text, m.end()))


def _valid_ymd(y: int, m: int, d: int) -> bool:
    return 1800 <= y <= 2099 and 1 <= m <= 12 and 1 <= d <= 31


def numeric_date_ok(a: str, b: str, c: str, sep: str) -> bool:
    x, y, z = int(a), int(b), int(c)
    if len(a) == 4:  # ISO: year first
        return _valid_ymd(x, y, z)
    if len(a) > 2 or len(c) not in (2, 4):
        return False
    year = z if len(c) == 4 else 2000 + z
    if sep == "." and len(c) == 2:
        return False  # 1.5.10 is a version or a list number more often than a date
    return _valid_ymd(year, x, y) or _valid_ymd(year, y, x)


# Every Chinese pattern holds a Han character (年, 月, 日, 号, 周, a holiday's name): on a text without
# one they are not run (tests/gateway/test_deid_shortcuts.py checks each pattern's parse tree).
_HAS_HAN = re.compile("[\u4e00-\u9fff]")
_HAN_RES = (
    *_CN_RES, _CN_WEEKDAY_DATE_RE, _CN_HOLIDAY_CUED_RE, _CN_MONTH_PART_RE, _CN_YY_RE, _CN_DAY_RE, *_CN_EXTRA_RES
)  # fmt: skip


def _cn_dates(text: str) -> Iterator[Span]:
    for regex in (_CN_HOLIDAY_CUED_RE, _CN_MONTH_PART_RE):
        for m in regex.finditer(text):
            yield Span(m.start(), m.end(), DATE, 50)
    for m in _CN_YY_RE.finditer(text):
        if m.start() == 0 or not (text[m.start() - 1].isdigit() or text[m.start() - 1] == "年"):
            yield Span(m.start(), m.end(), DATE, 50)
    for m in _CN_DAY_RE.finditer(text):
        if _cn_day_alone(text, m):
            yield Span(m.start(), m.end(), DATE, 50)


def find_dates(text: str) -> Iterator[Span]:
    han = _HAS_HAN.search(text) is not None
    for regex in _WRITTEN_RES + _CN_RES if han else _WRITTEN_RES:
        for m in regex.finditer(text):
            yield Span(m.start(), m.end(), DATE, 50)
    for m in _NUMERIC_RE.finditer(text):
        if numeric_date_ok(m.group(1), m.group(3), m.group(4), m.group(2)):
            yield Span(m.start(), m.end(), DATE, 52)
    for m in _MONTH_YEAR_RE.finditer(text):
        yield Span(m.start(), m.end(), DATE, 50)
    for m in _WEEKDAY_MD_RE.finditer(text):
        yield Span(m.start(), m.end(), DATE, 53)  # the weekday with the date, over the date alone
    for regex in (_WEEKDAY_DAY_RE, _MD_DASH_TIME_RE, _SPANISH_RE, _CN_WEEKDAY_DATE_RE)[: 4 if han else 3]:
        for m in regex.finditer(text):
            yield Span(m.start(), m.end(), DATE, 53)
    for m in _COMPACT_RE.finditer(text):
        if _COMPACT_LABEL_RE.search(text, max(0, m.start() - 12), m.start()) or _COMPACT_BIRTH_LINE_RE.search(
            text, max(0, m.start() - 48), m.start()
        ):
            yield Span(m.start(), m.end(), DATE, 52)
    for m in _HOLIDAY_ALONE_RE.finditer(text):
        if (
            _HOLIDAY_PREP_BEFORE.search(text, max(0, m.start() - 12), m.start())
            or _HOLIDAY_DAY_NAME.search(m.group())
            or _HOLIDAY_NEXT_TO_DATE.match(text, m.end())
            or _DATE_THEN_HOLIDAY.search(text, max(0, m.start() - 6), m.start())
        ):
            # "Easter Sunday, March 31": the holiday and the date it shares a weekday with, one span
            w = _WRITTEN_RES[0].search(text, m.start() + 1, m.end() + 40)
            end = w.end() if w is not None and w.start() <= m.end() + 2 else m.end()
            yield Span(m.start(), end, DATE, 51 if end > m.end() else 50)
    if han:
        yield from _cn_dates(text)
    for m in _MD_RE.finditer(text):
        st, en = m.start(), m.end()
        if (
            (_EVENT_BEFORE_RE.search(text, max(0, st - 32), st) and not _MD_NOT_AFTER_RE.match(text, en))
            or _EVENT_AFTER_RE.match(text, en)
            or _LIST_BEFORE_RE.search(text, max(0, st - 60), st)
            or (_LINE_START_RE.search(text, max(0, st - 4), st) and _COLON_AFTER_RE.match(text, en))
            or _TIME_AFTER_RE.match(text, en)
        ):
            yield Span(st, en, DATE, 50)
    for m in _HOLIDAY_RE.finditer(text):
        yield Span(m.start(), m.end(), DATE, 50)
    for regex in _CN_EXTRA_RES if han else ():
        for m in regex.finditer(text):
            yield Span(m.start(), m.end(), DATE, 50)
    for m in _CUED_MD_RE.finditer(text):
        yield Span(m.start("v"), m.end("v"), DATE, 50)
    for m in _DAY_ALONE_RE.finditer(text):
        if _DAY_ALONE_BEFORE_RE.search(text, max(0, m.start() - 12), m.start()):
            yield Span(m.start(), m.end(), DATE, 50)
    for m in _SPACED_RE.finditer(text):
        a, b, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if (_valid_ymd(y, a, b) or _valid_ymd(y, b, a)) and _SPACED_LABEL_RE.search(
            text, max(0, m.start() - 20), m.start()
        ):
            yield Span(m.start(), m.end(), DATE, 52)


fastre.accelerate(globals())  # after every pattern: see fastre.py
# Every match starts with a weekday's full name: tried only where one stands (cues.py).
_WEEKDAY_DAY_RE = cues.gate(_WEEKDAY_DAY_RE)
# Every match holds a Spanish or Portuguese month name at most 6 characters after its start ("31 de ").
_SPANISH_MONTHS = "enero febrero fevereiro marzo março abril mayo maio junio junho julio julho agosto septiembre"
_SPANISH_MONTHS += " setiembre setembro octubre outubro noviembre novembro diciembre dezembro janeiro"
_SPANISH_RE = cues.gate(_SPANISH_RE, dict.fromkeys(_SPANISH_MONTHS.split(), 6))
