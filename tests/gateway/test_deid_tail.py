"""Date and age families (apps/gateway/deid/tail.py): a family taken whole, with what it must not be."""

import pytest

from apps.gateway.deid import detect
from apps.gateway.deid.spans import ALL_TYPES
from apps.gateway.deid.tail import find_tail

KINDS = frozenset(ALL_TYPES)


def tail(text: str) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in find_tail(text, KINDS)]


def found(text: str, kind: str) -> list[str]:
    return [text[s.start : s.end] for s in detect(text) if s.type == kind]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Hold tonight's dose, recheck 7/22.", "7/22"),
        ("Avulsed #8 from bike fall 6/21, reimplanted.", "6/21"),
        ("Spoke with daughter 11/3 re: placement.", "11/3"),
        ("Surgery is planned for March the 3rd.", "March the 3rd"),
        ("Her appointment is January fifth.", "January fifth"),
        ("Seen on the fifth of January.", "fifth of January"),
        ("Label printed 05Jan2024.", "05Jan2024"),
        ("Returned from travel mid-Sept.", "mid-Sept."),
        ("Pt seen Tuesday for wound check.", "Tuesday"),
        ("Fell on Sat. at home.", "Sat."),
        ("Family visiting for Thanksgiving.", "Thanksgiving"),
        ("下周五复查血常规。", "下周五"),
        ("星期二上午来院。", "星期二"),
        ("除夕夜间突发胸痛。", "除夕"),
        ("患者3月5晚饭后腹痛。", "3月5"),
        ("5月份开始咳嗽。", "5月份"),
        ("会诊医师：钮主任（5.12）", "5.12"),
    ],
)
def test_date_families(text, value):
    assert ("DATE", value) in tail(text)
    assert any(value in f or f in value for f in found(text, "DATE"))


@pytest.mark.parametrize(
    "text",
    [
        "Pain 3/10, strength 5/5 in all extremities.",
        "Take 1/2 tablet at night.",
        "Grade 2/6 systolic murmur at the LUSB.",
        "Cardiac rehab 12/36 sessions done.",
        "Smokes 1/2 ppd.",
        "Card on file exp 08/27.",
        "GCS 3/15 on arrival.",
        "Christmas tree pollen allergy.",
        "Dialysis Mondays and Thursdays.",
        "Parkinson disease, on carbidopa-levodopa 25/100.",
        "反复上腹痛2月，近3个月加重。",
        "孕3月，术后3月复查。",
        "May cause drowsiness; marching band.",
    ],
)
def test_date_negatives(text):
    assert [k for k, _ in tail(text) if k == "DATE"] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Pt 95 y, lives alone.", "95"),
        ("Resident, 93y, DNR.", "93"),
        ("Mother is 97 yrs and frail.", "97"),
        ("Still sharp at 95 years young.", "95"),
        ("A woman of 101 who walks daily.", "101"),
        ("At 96 she still gardens.", "96"),
        ("Celebrated her 95th with family.", "95"),
    ],
)
def test_age_families(text, value):
    assert ("AGE", value) in tail(text)
    assert value in found(text, "AGE")


@pytest.mark.parametrize(
    "text",
    [
        "Pt 85 y, lives alone.",  # 89 or under is not an identifier
        "HR 95, SpO2 96% on RA.",
        "Married 92 years ago.",
        "95 years of service to the town.",
        "Growth at the 95th percentile.",
        "Glucose 110 mg/dL, weight 95 kg.",
        "第95百分位，心率95次/分。",
    ],
)
def test_age_negatives(text):
    assert [k for k, _ in tail(text) if k == "AGE"] == []


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("Index admission 8/9-8/14; readmitted.", ["8/9", "8/14"]),
        ("ECHO REPORT — DOB 02 APR 1957 — MRN 88", ["02 APR 1957"]),
        ("Pt Walter Krantz, 96, comfortable on morphine.", ["96"]),
        ("Mrs. Ostrowski. 90 today! Birthday cake.", ["90"]),
        ("Pt is 90. Yes, ninety — sharp as a tack.", ["ninety"]),
        ("【随访】袁大爷（92）于上周三出院。", ["92", "上周三"]),
    ],
)
def test_round_three_families(text, values):
    got = [v for _k, v in tail(text)]
    for value in values:
        assert value in got


@pytest.mark.parametrize(
    "text",
    [
        'Daughter insists she is "nearly ninety".',
        "Sat ninety percent on room air.",
        "Ninety days of therapy.",
        "Potassium 3.9, sodium 139, HR 96.",
        "王先生（89）复诊。",
    ],
)
def test_round_three_negatives(text):
    assert [k for k, _ in tail(text) if k == "AGE"] == []
