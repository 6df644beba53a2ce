"""Ages over 89 in any phrasing (English and Chinese) and ZIP codes per Safe Harbor's ZIP3 rule."""

from __future__ import annotations

import re

import pytest

from apps.gateway.deid import deidentify, detect
from apps.gateway.deid.safeharbor import restricted_zip3, zip3

KEY = b"k" * 32

# (text, the age as written). Every one must be found, and after redaction no digit or number word
# of the age may remain.
AGES = [
    ("a 95-year-old woman with CHF", "95"),
    ("95 year old male", "95"),
    ("He is a 101-yr-old man.", "101"),
    ("95 yo F presents with a fall", "95"),
    ("95yoF with dementia", "95"),
    ("92 y/o M with COPD", "92"),
    ("91 y.o. female", "91"),
    ("Age: 95", "95"),
    ("age 95, lives alone", "95"),
    ("aged 95", "95"),
    ("AGE: 97 yrs", "97"),
    ("at the age of 96 she moved", "96"),
    ("The patient, currently 95, lives with her son.", "95"),
    ("Currently 95, she still gardens.", "95"),
    ("She is now 95 and walks with a cane.", "95"),
    ("He's 93.", "93"),
    ("My grandmother is 99 years old.", "99"),
    ("96 years of age", "96"),
    ("a 95M with sepsis", "95"),
    ("95 M, 3 days of cough", "95"),
    ("pt 94 F, afebrile", "94"),
    ("94/F with hip fracture", "94"),
    ("widow aged 93", "93"),
    ("a nonagenarian with CHF", "nonagenarian"),
    ("in her late nineties, lives alone", "late nineties"),
    ("九旬老人", "九旬"),
    ("she celebrated her 100th birthday last month", "100th"),
    ("celebrated his ninety-fifth birthday", "ninety-fifth"),
    ("a ninety-five-year-old widow", "ninety-five"),
    ("aged one hundred and two", "one hundred and two"),
    ("lived to 104", "104"),
    ("died at 98 of pneumonia", "98"),
    ("She turned 90 in May.", "90"),
    ("mother, 97, has dementia", "97"),
    ("a centenarian with AF", "centenarian"),
    ("Pt Odile Fenn, 97, uses a walker", "97"),
    ("Mr. Castellanos (102) seen at home", "102"),
    ("九十五岁", "九十五岁"),
    ("患者，男，95岁，因发热入院。", "95岁"),
    ("95周岁", "95周岁"),
    ("年龄：92", "92"),
    ("年龄92岁", "92岁"),
    ("其父92 岁", "92 岁"),
    ("一百零二岁", "一百零二岁"),
    ("一百一十岁", "一百一十岁"),
    ("老人95岁，独居。", "95岁"),
    ("享年98", "98"),
    ("现年九十三", "九十三"),
    ("百岁老人", "百岁"),
    ("一百多岁的老人", "一百多岁"),
    ("９５岁", "９５岁"),  # full-width digits
]

NOT_AGES = [
    "95 mg daily",
    "aspirin 100 mg",
    "for 95 days",
    "SpO2 95% on room air",
    "BP 95/60",
    "weight 95 kg",
    "in 1995",
    "born in 1925",
    "HR 110 on arrival, now 95.",
    "Sats now 95 on 2L.",
    "glucose reached 95",
    "temp 95 F",
    "T 95F",
    "aged 95 days",
    "age 89",
    "an 89-year-old man",
    "88 y/o F",
    "89岁",
    "年龄：89岁",
    "八十九岁",
    "page 95",
    "music of the 90s",
    "in the nineties, when she worked",
    "八旬老人",
    "ICD-10 code 95",
    "95th percentile",
    "血氧95%",
    "心率95次/分",
    "体重95公斤",
    "Room 95, bed 2.",
    "Pt HR, 95, regular rhythm",
    "Patient Plt, 95, stable",
    "Mrs. Abbott (BP 95/60) dizzy",
    "the 95 patients in the study",
]


@pytest.mark.parametrize(("text", "value"), AGES, ids=[a[0] for a in AGES])
def test_age_over_89_found(text, value):
    spans = detect(text)
    assert [text[s.start : s.end] for s in spans if s.type == "AGE"] == [value], spans


@pytest.mark.parametrize("text", NOT_AGES)
def test_not_an_age_over_89(text):
    assert [s for s in detect(text) if s.type == "AGE"] == [], [(text[s.start : s.end], s.type) for s in detect(text)]


_AGE_LEFT = re.compile(
    r"(?<![0-9])(?:9\d|1[01]\d)(?![0-9])|ninety|hundred|centenarian|[九百]|一百",
    re.I,
)


def test_no_age_over_89_survives_redaction():
    leaks = []
    for text, _ in AGES:
        out = deidentify(text, "redact").text
        if _AGE_LEFT.search(out.replace("90+", "")):
            leaks.append((text, out))
    assert leaks == [], leaks


def test_age_replacements_follow_safe_harbor():
    assert deidentify("a 95-year-old and a 101-year-old").text == "a 90+-year-old and a 90+-year-old"
    assert deidentify("患者95岁，其母一百零二岁。").text == "患者90+岁，其母90+岁。"
    # mask hides the length: three stars would say "100 or older"
    assert deidentify("a 95-year-old and a 101-year-old", "mask").text == "a **-year-old and a **-year-old"
    # one pseudonym for the whole category "90 or older"
    out = deidentify("aged 95; aged 101; 九十二岁", "pseudonymise", key=KEY).text
    tokens = re.findall(r"\[AGE-[0-9a-f]{8}\]", out)
    assert len(tokens) == 3 and len(set(tokens)) == 1
    assert deidentify("aged 95", "redact").found == {"AGE": 1}
    # a Chinese unit is inside the span (as Chinese annotators mark it) and put back in every mode
    assert deidentify("患者，女，96周岁。", "mask").text == "患者，女，**周岁。"
    out = deidentify("九十二岁", "pseudonymise", key=KEY).text
    assert re.fullmatch(r"\[AGE-[0-9a-f]{8}\]岁", out), out


# ---- ZIP ----------------------------------------------------------------------------------------


def test_restricted_list_is_the_hhs_one():
    assert restricted_zip3() == frozenset(
        [
            "036",
            "059",
            "063",
            "102",
            "203",
            "556",
            "692",
            "790",
            "821",
            "823",
            "830",
            "831",
            "878",
            "879",
            "884",
            "890",
            "893",
        ]
    )


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("Boston, MA 02115", "Boston, MA 021**"),
        ("Boston, MA 02115-1234", "Boston, MA 021**"),
        ("Boston, MA 02115 1234", "Boston, MA 021**"),
        ("Boston, MA 02115\u20131234", "Boston, MA 021**"),
        ("Columbus, Ohio 43215.", "Columbus, Ohio 432**."),
        ("ZIP code is 10027", "ZIP code is 100**"),
        # restricted three-digit areas become 000
        ("Hanover, NH 03601", "Hanover, NH 000**"),
        ("Yellowstone National Park, WY 82190-0168", "Yellowstone National Park, WY 000**"),
        ("zip: 89001", "zip: 000**"),
        ("Zip code: 59001", "Zip code: 590**"),  # 590 is not restricted, 059 is
        ("Zip code: 05901", "Zip code: 000**"),
        # a Chinese 邮编 has no Safe Harbor area: removed whole, as before
        ("邮编：100730", "邮编：[ZIP]"),
        ("邮政编码 200030", "邮政编码 [ZIP]"),
    ],
)
def test_zip_redacted_to_zip3(text, redacted):
    # ZIP only: the cities around them are GEO (test_deid_geo.py)
    assert deidentify(text, "redact", types={"ZIP"}).text == redacted


def test_every_restricted_area_becomes_000():
    for area in sorted(restricted_zip3()):
        assert deidentify(f"ZIP: {area}42", "redact").text == "ZIP: 000**"
        assert deidentify(f"ZIP: {area}42-0001", "redact").text == "ZIP: 000**"


def test_zip3_of_values():
    assert zip3("02115") == "021" and zip3("02115-1234") == "021" and zip3("036 01") == "000"
    assert zip3("100730") is None  # six digits: not a US ZIP
    assert zip3("\u0660\u0662\u0661\u0661\u0665") == "021"  # Arabic-Indic digits


def test_zip_in_mask_and_pseudonymise():
    assert deidentify("Boston, MA 02115-1234", "mask", types={"ZIP"}).text == "Boston, MA *****-****"
    same_area = deidentify("MA 02115; MA 02199-0001", "pseudonymise", key=KEY).text
    tokens = re.findall(r"\[ZIP-[0-9a-f]{8}\]", same_area)
    assert len(tokens) == 2 and len(set(tokens)) == 1, "one pseudonym per three-digit area"
    other = deidentify("MA 01002", "pseudonymise", key=KEY).text
    assert re.findall(r"\[ZIP-[0-9a-f]{8}\]", other)[0] != tokens[0]
    restricted = re.findall(r"\[ZIP-\w+\]", deidentify("NH 03601; WY 82190", "pseudonymise", key=KEY).text)
    assert len(set(restricted)) == 1, "every restricted area is 000"
    cn = re.findall(r"\[ZIP-\w+\]", deidentify("邮编：100730；邮编：100731", "pseudonymise", key=KEY).text)
    assert len(set(cn)) == 2, "a 邮编 keeps a token of its own"


def test_no_full_zip_survives():
    text = "Addresses: Boston, MA 02115-1234; Hanover, NH 03601; zip 89001 2222; 邮编：100730."
    out = deidentify(text).text
    assert not re.search(r"\d{5}", out), out
    assert deidentify(text).found["ZIP"] == 4


def test_not_zip():
    for text in ("MRN 02115", "Room 02115", "call 02115 now", "in 1995, 12345 steps"):
        assert [s for s in detect(text) if s.type == "ZIP"] == [], text
