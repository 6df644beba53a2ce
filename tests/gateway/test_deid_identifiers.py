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


def test_a_value_right_after_its_label_outranks_a_shape_guess():
    # an NHS number in 3-3-4 groups is not a phone; a record number written 3-2-4 after MRN is not an SSN
    assert found("NHS number 485 777 3456.") == [("HEALTH_PLAN", "485 777 3456")]
    assert ("MRN", "004-88-1932") in found("Patient label | MRN 004-88-1932 | FIN 88102293")
    # but a phone after a word that is not its label stays a phone, and an unlabelled 3-2-4 is the SSN detector's
    assert found("Member services 800-555-0100") == [("PHONE", "800-555-0100")]
    assert found("ref 000-12-3456") == []


def test_a_table_cell_is_typed_by_its_column_header():
    text = "姓名 | 性别 | 科室 | 床号 | 住院号\n马福祥 | 男 | 骨科 | 18 | ZY0088213\n"
    assert ("MRN", "ZY0088213") in family(text)
    assert ("MRN", "18") not in family(text)
    lot = "| drug | lot |\n|---|---|\n| heparin | AB2371557 |\n"
    assert family(lot) == []


def test_an_ipv6_address_right_after_a_label_colon_in_any_script():
    text = "患者登录失败日志：2001:db8:85a3::8a2e:370:7334。"
    assert ("IP", "2001:db8:85a3::8a2e:370:7334") in found(text)


@pytest.mark.parametrize(
    ("text", "phone"),
    [("Witnessed by funeral director Amos Tully, 555-0188.", "555-0188"), ("Fax 555-0122 today", "555-0122")],
)
def test_a_local_number_with_no_cue_is_a_phone(text, phone):
    assert any(value == phone for _kind, value in family(text))


@pytest.mark.parametrize(
    "text", ["Platelets 150-4000 noted.", "Dose 250-1000 mg daily.", "Range 200-4000 IU.", "lot 555-0188"]
)
def test_ranges_doses_and_lots_are_not_local_phones(text):
    assert [k for k, _ in family(text) if k in ("PHONE", "FAX")] == []
