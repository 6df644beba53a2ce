"""The identifier-looking-token family (apps/gateway/deid/identifiers.py): tokens with enough digits,
typed by the nearest label before them, never a measurement, dose, lab value, lot number or year."""

import pytest

from apps.gateway.deid import detect
from apps.gateway.deid.identifiers import find_identifiers
from apps.gateway.deid.spans import ALL_TYPES

KINDS = frozenset(ALL_TYPES)


def family(text: str) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in find_identifiers(text, KINDS)]


def found(text: str) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in detect(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        # labels no cue list holds, typed by their words
        ("Inmate health record QX-220917 reviewed.", "MRN", "QX-220917"),
        ("Outside hospital chart ref 00817733-B.", "MRN", "00817733-B"),
        ("住院流水号ZY2025-000871，今日出院。", "ACCOUNT", "ZY2025-000871"),
        ("Secondary coverage through spouse's plan, subscriber no. HX7702193.", "HEALTH_PLAN", "HX7702193"),
        ("医疗保险个人识别码：GD44019920017", "HEALTH_PLAN", "GD44019920017"),
        ("Guarantor acct ref 7781-00923.", "ACCOUNT", "7781-00923"),
        ("结算单据号码 JS2025-0713-0042", "ACCOUNT", "JS2025-0713-0042"),
        ("Licensed as pharmacist, PA board credential RPH-0471188.", "LICENSE", "RPH-0471188"),
        ("Car registered with VIN-like chassis tag ZX40-99812.", "VEHICLE", "ZX40-99812"),
        ("Hearing aid (right) serial no. HA5521907.", "DEVICE", "HA5521907"),
        ("Verified SSN last digits 6602 by phone.", "SSN", "6602"),
        # no label in reach: a long bare number is a record number by default
        ("Scanned sticker reads 004417732 on the wristband.", "MRN", "004417732"),
    ],
)
def test_labelled_tokens_are_typed_by_the_nearest_label(text, kind, value):
    assert (kind, value) in family(text)
    assert any(k == kind and value in text[s:e] or text[s:e] in value for k, s, e in _spans(text))


def _spans(text):
    return [(s.type, s.start, s.end) for s in detect(text)]


@pytest.mark.parametrize(
    "text",
    [
        # doses, lab values, vitals, measurements, amounts
        "Heparin 25000 units in 250 mL; insulin 12000 IU total.",
        "WBC 12300 /uL, platelets 245000/uL, BNP 2300pg/ml.",
        "BP 142/88, vent 450/16/5/60, ABG 7.31/58/62.",
        "总费用：23418.60元，统筹支付 16102.33",
        "Walked 10000 steps; weight 72.5 kg.",
        # lot, batch, protocol, badge, billing codes, model numbers: not identifiers of the person
        "Hep B vaccine lot AB237155 given L deltoid.",
        "阿司匹林肠溶片 100mg，批号 20230511",
        "Enrolled under protocol NCT0458812, subject 1042-0033.",
        "Interpreter ID 88312 on the line; officer badge E-20418.",
        "CPT 99214, ICD-10 E11.65, form CMS-1500.",
        "Pacemaker model 5076-52 placed.",
        "派出所民警石警官（警号 020381）到场。",
        # beds, rooms and years
        "Transferred to bed 12, room 4410 on 7 West.",
        "Served in Vietnam 1968-1970; retired in 2003.",
        "3号床患者，2019年确诊。",
    ],
)
def test_measurements_codes_and_years_are_not_identifiers(text):
    assert family(text) == []


def test_the_nearest_label_wins():
    text = "MRN 3381207  Group: 0788213  Member ID: W2219034581"
    assert family(text) == [("MRN", "3381207"), ("HEALTH_PLAN", "W2219034581")]


def test_a_label_on_another_line_does_not_reach():
    assert family("Member ID: pending\n12345 is the lab's batch") == []


def test_dates_phones_and_cards_stay_with_their_own_detectors():
    text = "Seen 2024-03-05; call 617-555-0143; card 4111 1111 1111 1111; MRN 00482913"
    kinds = {k for k, _ in found(text)}
    assert {"DATE", "PHONE", "BANK_CARD", "MRN"} <= kinds
    assert ("MRN", "2024-03-05") not in family(text)


def test_a_zero_padded_number_is_a_record_number_not_a_phone():
    # moved from test_deid_leak_families.py's negatives: unlabelled, it is now typed by default
    assert found("| 172.16.8.4 | 003318820 | view |") == [("IP", "172.16.8.4"), ("MRN", "003318820")]
