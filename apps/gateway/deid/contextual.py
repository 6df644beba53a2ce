"""Identifiers that are just numbers or codes until a cue says what they are.

"MRN: 00482913", "member ID W123456789", "病历号：A2024-00317". A cue (a label in English or
Chinese) is followed, after a little punctuation or a filler word ("number", "is", "#"), by a
value of a plausible shape. Without the cue the same digits are left alone: "500 mg", "room 412".
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from . import cues, dates, fastre
from .ages import find_ages
from .checksums import luhn_ok, ssn_ok
from .spans import ACCOUNT, DEVICE, HEALTH_PLAN, LICENSE, MRN, SSN, VEHICLE, ZIP, Span

_NUM = r"(?:\s{0,3}(?:number|numbers|num|no|nos|id|ids|#|code|is|was|of|on file|identifier|card)\b\.?){0,3}"
_SEP = r"[\s:#：=.()|｜\-]{0,6}(?:为|是|码|号码)?"
# A code: letters, digits and inner hyphens or slashes; checked for enough digits afterwards.
# Inside, hyphens, slashes and dots between characters, and a space between digit groups when the
# next group has at least two digits and no letter right after it ("0048 2913", not "12 5mg"): a
# look-ahead of three digits, or two and no letter.
_CODE = (
    r"(?=[A-Za-z/-]{0,24}\d)(?P<v>[A-Za-z0-9](?:[A-Za-z0-9]|[-/.](?=[A-Za-z0-9])|(?<=\d) (?=\d\d(?:\d|(?![A-Za-z]))))"
    r"{3,30})(?![A-Za-z0-9])"
)

_CUES = {
    MRN: r"MRN|MR\s?#|MR\s?no\.?|medical record|med(?:ical)?\.?\s?rec(?:ord)?\.?|chart|hospital\s(?:number|no\.?|id)"
    r"|unit number|patient id|病历号|病历编号|病案号|住院号|门诊号|就诊卡号|登记号|患者ID|患者编号|病人ID|ID号"
    # numbers under which a Chinese hospital's imaging or exam system files the patient (影像号, 检查号):
    # record numbers; an English "accession number" names one order, like an encounter (ACCOUNT below)
    r"|影像号|放射号|PACS号|检查号|检查单号"
    # numbers a hospital files a patient's specimens, exams and records under: pathology and specimen
    # numbers, lab barcodes, check-up numbers, health-record (档案) numbers, a chart exported by number
    r"|病理号|病理编号|标本号|标本编号|条码号|条形码|检验号|检验编号|体检编号|体检号|健康档案号|档案编号|档案号"
    r"|门诊卡号|就诊号|就诊编号|申请单号|病历(?!本|夹|书写|讨论)"
    r"|(?:surgical\s)?pathology\s(?:case|accession|no\.?|number|#)|path\s(?:case|no\.?|#)|specimen(?:\sid)?"
    # a case number only when written as one: "case #", "case no.", "Case: …", or "Case" + a lettered code
    r"|case\s?(?:#|no\.?|number|:)|(?-i:Case)(?=\s[A-Z]{1,4}-?\d)"
    r"|lab\saccession|barcode|bar\scode",
    HEALTH_PLAN: r"health\splan(?:\sbeneficiary)?|health\s(?:card|insurance)|beneficiary|member(?:ship)?|subscriber"
    r"|insurance|insurer|insured(?:'s)?\s(?:id|no\.?|number|#)|(?-i:OHIP|PHN)"
    r"|policy|medicare(?:\sbeneficiary\sidentifier)?|MBI|medicaid|plan\sid|group\s(?:number|no\.?|#|id)|医保卡号|医保号|医保编号|医保卡"
    r"|社保卡号|社保号|医疗保险号|参保号|保单号|保险合同号|合同号|个人编号|参保人编号|个人识别号"
    r"|(?-i:VA)\s(?:ID|id|number|no\.?|#)|veterans?\s(?:affairs\s)?(?:ID|number)"
    # payers by name, and every Chinese insurance scheme + 证/卡/本 + 号: 新农合证号, 医疗证号, 参合号 ...
    r"|medi-cal|masshealth|tricare|champva|(?-i:CHIP|BCBS)|blue\scross(?:\sblue\sshield)?|aetna|cigna|humana|anthem"
    r"|united\s?healthcare|(?-i:UHC|HMO|PPO)|kaiser|payer|payor|carrier|coverage"
    r"|"
    + "|".join(
        a + b + c
        for a in (
            "新农合",
            "农合",
            "合作医疗",
            "医疗",
            "医保",
            "社保",
            "参保",
            "参合",
            "保险",
            "商保",
            "公费医疗",
            "居民医保",
            "职工医保",
        )
        for b in ("", "卡", "证", "本")
        for c in ("号码", "号", "编号", "卡号", "证号")
        if not (a in ("医保", "社保") and b + c in ("卡号", "号", "编号", "卡"))
    ),
    ACCOUNT: r"account|acct\.?|a/c|billing|invoice|encounter|visit|claim|(?-i:FIN|CSN|HAR)"
    # an accession number names one study or order (like an encounter), not the patient: ACCOUNT
    r"|accession|(?-i:ACC)\s?#|(?-i:ACC)\s?(?:no\.?|num)"
    r"|账号|账户|帐号|帐户|结算号|发票号|流水号"
    # an insurance claim's number (理赔案号, 赔案号), an EHR session or log-in session
    r"|理赔案号|赔案号|理赔号|报案号|(?:EHR|login|portal|web|VPN)\ssession(?:\sid)?|session\s?(?:id|#|no\.?)",
    LICENSE: r"(?:driver'?s\s)?licen[cs]e(?!\s*plate)|(?-i:DL|DEA|NPI)|certificate|cert\.?|certification|registration"
    r"|state\s(?:ID|identification)|(?:photo\s)?ID\scard|identification\scard|passport|permit"
    r"|护照号码|护照号|护照|军官证号|通行证号|居住证号|驾驶证|行驶证号"
    r"|执业证书编码|执业证书编号|执业证号|资格证书编号|驾驶证号|驾照号|证书编号|执业编号"
    # any practising, qualification or registration certificate (医师资格证书编码, 护士执业证号, 注册证号)
    r"|(?:资格|执业|注册)证(?:书)?(?:编码|编号|号码|号)"
    # a licence followed by the credential it licenses: "State license RN RN-224819", "licence MD 48812"
    r"|licen[cs]e\s(?-i:RN|LPN|LVN|MD|DO|NP|PA|APRN|CRNA|RPh|PT|OT|DDS|DMD)",
    DEVICE: r"serial|(?-i:S/N|SN)|device(?:\sid|\sidentifier)?|UDI|IMEI|implant\s(?:id|serial)|pacemaker|pump|(?-i:ICD)"
    r"|transmitter|(?:CGM|glucose)\ssensor|generator\s(?:id|serial)"
    r"|序列号|设备编号|设备号|器械编号|出厂编号|植入物编号|仪器编号|仪编号"
    # an implanted or worn device's own number: 泵编号 (胰岛素泵编号), 起搏器编号, 除颤器序列号
    r"|(?:泵|起搏器|除颤器|植入物|监测仪|传感器)(?:编号|号码|序列号|号)",
    VEHICLE: r"(?:license|licence|registration)\splate|plate|tag|车牌号码|车牌号|车牌",
}
_MIN_DIGITS = {MRN: 4, HEALTH_PLAN: 4, ACCOUNT: 4, LICENSE: 4, DEVICE: 3, VEHICLE: 2}
_PRIORITY = {MRN: 66, HEALTH_PLAN: 65, ACCOUNT: 64, LICENSE: 65, DEVICE: 65, VEHICLE: 66}

_CUE_RES = {
    kind: re.compile(
        rf"(?<![A-Za-z])(?:{cues})(?:(?<=[^\x00-\x7f])|(?![a-z]))(?:'s)?{_NUM}{_SEP}{_NUM}{_SEP}{_CODE}",
        re.I,
    )
    for kind, cues in _CUES.items()
}
# A Chinese cue may follow a Latin word directly ("MRI设备编号", "CT序列号"), where the look-behind
# above fails: its Chinese alternatives alone, in a pattern the scanner finds by its first character.
_CUE_AFTER_LATIN_RES = {
    kind: re.compile(
        rf"(?:{'|'.join(w for w in cues.split('|') if w and all(ord(ch) > 0x7F for ch in w))})"
        rf"{_NUM}{_SEP}{_NUM}{_SEP}{_CODE}",
        re.I,
    )
    for kind, cues in _CUES.items()
}

_SSN_CUE_RE = re.compile(
    r"(?<![A-Za-z])(?:SSN|SS#|social\ssecurity(?:\snumber|\sno\.?|\s#)?)"
    rf"{_SEP}{_NUM}{_SEP}(?P<v>\d(?:[-. ]?\d){{8}})(?![0-9A-Za-z]|[-.]\d)",
    re.I,
)
# "SSN last four 4821", "last 4 of SSN: 4821", "last 4 SSN 4821", "SSN last 4 (4821)", "last four of social 4821",
# "SSN ending in 4821"
_SSN_LAST4_RE = re.compile(
    r"(?<![A-Za-z])(?:(?:SSN|SS#|social\ssecurity(?:\snumber|\sno\.?|\s#)?)[\s:#]{0,3}"
    r"(?:last\s(?:four|4)(?:\sdigits)?|ending(?:\sin|\swith)?|ends\s(?:in|with))"
    r"|last\s(?:four|4)(?:\sdigits)?\s(?:of\s)?(?:(?:the|his|her|pt'?s|patient'?s)\s)?"
    r"(?:SSN|SS#|social(?:\ssecurity(?:\snumber)?)?))"
    r"(?:\s(?:is|was|of|=))?[\s:#(,-]{0,3}(?P<v>(?:x{3}-?x{2}-?|\*{3}-?\*{2}-?)?\d{4})(?![0-9A-Za-z])",
    re.I,
)
_IMEI_RE = re.compile(rf"(?<![A-Za-z])IMEI{_SEP}{_NUM}{_SEP}(?P<v>\d{{15}})(?!\d)", re.I)
# Fifteen digits that pass the Luhn check with a device word in the 60 characters before them:
# an IMEI written without its label ("loaned tablet for remote monitoring: 3569…", "手机串号").
_IMEI_BARE_RE = re.compile(r"(?<![0-9])(?P<v>[0-9]{15})(?![0-9])")
_DEVICE_WORD_RE = re.compile(
    r"(?:tablet|phone|handset|device|modem|hub|monitor|transmitter|SIM|cellular|iPad|iPhone|smartphone|watch"
    r"|手机|平板|设备|串号|终端)",
    re.I,
)

_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH"
    "|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho"
    "|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota"
    "|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|North Carolina"
    "|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|Tennessee|Texas"
    "|Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming"
)
# ZIP or ZIP+4 (hyphen, en dash or a space before the four).
_ZIP5 = r"\d{5}(?:(?:\s?[-\u2013]\s?|\s)\d{4})?"
_ZIP_RES = (
    re.compile(rf"(?<![A-Za-z])(?:{_STATES}|{_STATE_NAMES}),?\s{{1,2}}(?P<v>{_ZIP5})(?![0-9A-Za-z-])"),
    re.compile(
        rf"(?<![A-Za-z])(?:zip|zip\scode|zipcode|zip\+4|postal\scode|postcode|邮编|邮政编码){_SEP}{_NUM}{_SEP}"
        rf"(?P<v>{_ZIP5}|\d{{6}})(?![0-9A-Za-z-])",
        re.I,
    ),
    # Postcodes of other countries by their shape after a region or a place: Australian states
    # ("Bondi NSW 2026"), Canadian (K1A 0B6) and British (SW1A 1AA) postcodes.
    re.compile(r"(?<![A-Za-z])(?:NSW|VIC|QLD|TAS|ACT|NT|SA|WA)\s{1,2}(?P<v>\d{4})(?![0-9A-Za-z-])"),
    re.compile(r"(?<![A-Za-z0-9])(?P<v>[ABCEGHJ-NPRSTVXY]\d[A-Z] \d[A-Z]\d)(?![A-Za-z0-9])"),
    re.compile(r"(?<![A-Za-z0-9])(?P<v>[A-Z]{1,2}\d[A-Z\d]? \d[ABD-HJLNP-UW-Z]{2})(?![A-Za-z0-9])"),
)


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


_LATIN_THEN_HAN = re.compile(r"[A-Za-z][\u4e00-\u9fff]")


def find_cued(text: str, kinds: frozenset[str]) -> Iterator[Span]:
    latin_han = _LATIN_THEN_HAN.search(text) is not None
    for kind, regex in _CUE_RES.items():
        if kind not in kinds:
            continue
        for m in regex.finditer(text):
            value = m.group("v")
            if _enough_digits(kind, value) and not _looks_like_date(value):
                if kind == DEVICE and _ICD10_RE.fullmatch(value):
                    continue
                # a Chinese driving licence's number is its holder's 身份证 number: after a licence
                # label the 18 characters are the licence (over CN_ID, which finds them too)
                priority = _PRIORITY[kind]
                if kind == LICENSE and m.group()[0] == "驾" and _ID18_RE.fullmatch(value):
                    priority = 96
                yield Span(m.start("v"), m.end("v"), kind, priority)
        for m in _CUE_AFTER_LATIN_RES[kind].finditer(text) if latin_han else ():
            value = m.group("v")
            if (
                m.start() > 0
                and text[m.start() - 1].isascii()
                and text[m.start() - 1].isalpha()
                and _enough_digits(kind, value)
                and not _looks_like_date(value)
            ):
                yield Span(m.start("v"), m.end("v"), kind, _PRIORITY[kind])


_ID18_RE = re.compile(r"\d{17}[\dXx]")

# A VIN after its label whatever its check digit (a mistyped or foreign VIN is still the vehicle's):
# "VIN 1HGCM…", "vehicle 1FTFW…", 车架号/车辆识别代号 + 17 characters of the VIN alphabet (no I, O, Q).
_VIN_CUED_RE = re.compile(
    r"(?:(?<![A-Za-z])(?i:VIN|vehicle(?:\sidentification)?(?:\s(?:number|no\.?|#))?)|车架号|车架号码|车辆识别代号|车辆识别码"
    r"|车辆识别号)[\s:#：]{0,3}(?P<v>[A-HJ-NPR-Z0-9]{17})(?![A-Za-z0-9])"
)
_VIN_GATE = re.compile(r"VIN|vehicle|车架|车辆识别", re.I)


def find_vin_cued(text: str) -> Iterator[Span]:
    if not _VIN_GATE.search(text):
        return
    for m in _VIN_CUED_RE.finditer(text):
        v = m.group("v")
        if _digit_count(v) >= 5 and not v.isdigit():
            yield Span(m.start("v"), m.end("v"), VEHICLE, 79)


# An ICD-10 code ("ICD E11.9", "ICD I48.91"): a diagnosis after the coding system's name, not a device
# after "ICD" (the defibrillator).
_ICD10_RE = re.compile(r"[A-TV-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")


def _enough_digits(kind: str, value: str) -> bool:
    """Enough digits for the type; a device code may be mostly letters ("8KX4PQ") when upper case."""
    n = _digit_count(value)
    if n >= _MIN_DIGITS[kind]:
        return True
    return kind == DEVICE and n >= 1 and len(value) >= 5 and value.isupper()


def _looks_like_date(value: str) -> bool:
    """A cued value written like a date ("MRN 03-05-2024" is rare; "Visit 03/05/2024" is a date) —
    only if it is a valid one: "55-20-1193" is a record number."""
    m = re.fullmatch(r"(\d{1,4})([-/.])(\d{1,2})[-/.](\d{1,4})", value)
    return m is not None and dates.numeric_date_ok(m.group(1), m.group(3), m.group(4), m.group(2))


def find_ssn_cued(text: str) -> Iterator[Span]:
    for m in _SSN_CUE_RE.finditer(text):
        if ssn_ok(re.sub(r"[-. ]", "", m.group("v"))):
            yield Span(m.start("v"), m.end("v"), SSN, 80)


# A plate written in groups with a space ("plate 7KD 1234", "tag MN-882 TKL"): upper case, two or three groups.
_PLATE_RE = re.compile(
    r"(?<![A-Za-z])(?i:(?:licen[cs]e\s|registration\s)?(?:plate|tag))(?![A-Za-z])(?i:\s(?:number|no\.?|#))?"
    r"[\s:#]{1,3}(?P<v>(?=[A-Z -]{0,6}\d)[A-Z0-9]{1,4}(?:-?[A-Z0-9]{1,4})?(?: [A-Z0-9]{1,4}){1,2})(?![A-Za-z0-9])"
)

# A Chinese plate after its label, in any of the shorter formats a car plate's pattern does not take
# (an e-bike's 沪0A8821, a plate with a digit second): province, then five to seven letters/digits.
_CN_PLATE_CUED_RE = re.compile(
    r"(?:牌照|号牌|车牌)(?:号码|号)?[：:\s]{0,3}"
    r"(?P<v>[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼][·・. -]?[A-Z0-9]{5,7})(?![0-9A-Za-z])"
)
# A driving licence or a state ID after its state ("DL: OH RS482917", "Illinois ID D400-7812-3319");
# "VA ID" is the Veterans Affairs number (a health plan), not Virginia's.
_LICENSE_STATE_RE = re.compile(
    rf"(?<![A-Za-z])(?:(?:DL|(?i:driver'?s\slicen[cs]e|licen[cs]e))(?:\s?(?:#|no\.?|number))?[\s:#]{{1,3}}"
    rf"(?:{_STATES}|{_STATE_NAMES})[\s:#]{{1,3}}"
    rf"|(?!VA\s)(?:{_STATES}|{_STATE_NAMES})\s(?:state\s)?(?:ID|DL|(?i:driver'?s\slicen[cs]e))(?:\scard)?"
    rf"(?:\s?(?:#|no\.?|number))?[\s:#]{{1,3}}){_CODE}"
)


def find_plate_cn_cued(text: str) -> Iterator[Span]:
    for m in _CN_PLATE_CUED_RE.finditer(text):
        if _digit_count(m.group("v")) >= 2:
            yield Span(m.start("v"), m.end("v"), VEHICLE, 67)


_LICENSE_STATE_GATE = re.compile(r"DL|ID|[Ll]icen|LICEN")  # every match holds one: one fast scan first


def find_license_state(text: str) -> Iterator[Span]:
    if not _LICENSE_STATE_GATE.search(text):
        return
    for m in _LICENSE_STATE_RE.finditer(text):
        if _enough_digits(LICENSE, m.group("v")):
            yield Span(m.start("v"), m.end("v"), LICENSE, 66)


_PLATE_GATE = re.compile(r"plate|tag", re.I)
_SSN_GATE = re.compile(r"ssn|ss#|social", re.I)


def find_plate(text: str) -> Iterator[Span]:
    if not _PLATE_GATE.search(text):  # one fast scan instead of the pattern's slower one
        return
    for m in _PLATE_RE.finditer(text):
        if _digit_count(m.group("v")) >= 2:
            yield Span(m.start("v"), m.end("v"), VEHICLE, 67)


def find_ssn_last4(text: str) -> Iterator[Span]:
    if not _SSN_GATE.search(text):
        return
    for m in _SSN_LAST4_RE.finditer(text):
        yield Span(m.start("v"), m.end("v"), SSN, 80)


def find_imei(text: str) -> Iterator[Span]:
    for m in _IMEI_RE.finditer(text):
        if luhn_ok(m.group("v")):
            yield Span(m.start("v"), m.end("v"), DEVICE, 70)
    for m in _IMEI_BARE_RE.finditer(text):
        v = m.group("v")
        if (
            not v.startswith(("34", "37"))
            and luhn_ok(v)
            and _DEVICE_WORD_RE.search(text, max(0, m.start() - 60), m.start())
        ):
            yield Span(m.start("v"), m.end("v"), DEVICE, 69)


def find_zip(text: str) -> Iterator[Span]:
    for regex in _ZIP_RES:
        for m in regex.finditer(text):
            yield Span(m.start("v"), m.end("v"), ZIP, 62)


def find_age(text: str) -> Iterator[Span]:
    """Ages over 89: see ages.py."""
    return find_ages(text)


fastre.accelerate(globals())  # after every pattern: see fastre.py
# Every match of a cued pattern starts with its cue word: tried only where one stands (cues.py).
_CUE_RES = {kind: cues.gate(regex) for kind, regex in _CUE_RES.items()}
# So do the plate, last-four SSN, IMEI and postcode-label patterns (their literal prefixes: "plate", "tag",
# "licen…", "registration"; "SSN", "social", "last"; "IMEI"; "zip", "postal", 邮编 …).
_PLATE_RE = cues.gate(_PLATE_RE)
_SSN_LAST4_RE = cues.gate(_SSN_LAST4_RE)
_IMEI_RE = cues.gate(_IMEI_RE)
_ZIP_RES = (_ZIP_RES[0], cues.gate(_ZIP_RES[1]), *_ZIP_RES[2:])
