"""Each identifier type is found in context, and look-alikes that are not identifiers are not."""

from __future__ import annotations

import pytest

from apps.gateway.deid import deidentify, detect
from apps.gateway.deid.checksums import cn_id_check_char, luhn_ok, vin_ok

POSITIVES = [
    ("Patient: Maria Gonzalez was seen.", "NAME", "Maria Gonzalez"),
    ("Seen by Dr. Okonkwo today.", "NAME", "Okonkwo"),
    ("His daughter, Niamh Lindqvist, called.", "NAME", "Niamh Lindqvist"),
    ("Electronically signed by Rosalind Walker, MD", "NAME", "Rosalind Walker"),
    ("患者王小明，男，65岁。", "NAME", "王小明"),
    ("由李建国医生接诊。", "NAME", "李建国"),
    ("张主任查房。", "NAME", "张"),
    ("DOB: 03/05/1948.", "DATE", "03/05/1948"),
    ("admitted 2024-03-05 for chest pain", "DATE", "2024-03-05"),
    ("on March 5, 2024 the patient", "DATE", "March 5, 2024"),
    ("seen 5th of March 2024 in clinic", "DATE", "5th of March 2024"),
    ("colonoscopy in March 2019 was normal", "DATE", "March 2019"),
    ("于2024年3月5日入院", "DATE", "2024年3月5日"),
    ("二〇二四年三月五日出院", "DATE", "二〇二四年三月五日"),
    ("seen on 3/14 for follow-up", "DATE", "3/14"),
    ("a 92-year-old man", "AGE", "92"),
    ("年龄：95岁", "AGE", "95岁"),
    ("grandmother lived to 101.", "AGE", "101"),
    ("Boston, MA 02115-1234", "ZIP", "02115-1234"),
    ("邮编：100730", "ZIP", "100730"),
    ("Phone: (617) 555-0143", "PHONE", "(617) 555-0143"),
    ("call +44 20 7946 0958 anytime", "PHONE", "+44 20 7946 0958"),
    ("科室电话：010-6552 8890", "PHONE", "010-6552 8890"),
    ("Fax: 617-555-0199", "FAX", "617-555-0199"),
    ("传真：(0755) 8888 6666", "FAX", "(0755) 8888 6666"),
    ("mail j.smith@hospital.example.org now", "EMAIL", "j.smith@hospital.example.org"),
    ("SSN 123-45-6789", "SSN", "123-45-6789"),
    ("social security number 123456789", "SSN", "123456789"),
    ("MRN: 00482913", "MRN", "00482913"),
    ("病历号：A2024-00317", "MRN", "A2024-00317"),
    ("Medicare beneficiary identifier: 1EG4-TE5-MK73", "HEALTH_PLAN", "1EG4-TE5-MK73"),
    ("医保卡号：HZ2024-48123", "HEALTH_PLAN", "HZ2024-48123"),
    ("Billing account 5337109746", "ACCOUNT", "5337109746"),
    ("DEA AB1234563", "LICENSE", "AB1234563"),
    ("执业证书编码：110440100012345", "LICENSE", "110440100012345"),
    ("VIN 1HGCM82633A004352", "VEHICLE", "1HGCM82633A004352"),
    ("license plate 7ABC123", "VEHICLE", "7ABC123"),
    ("车牌号粤B·D12345", "VEHICLE", "粤B·D12345"),
    ("pacemaker serial number PX8812-4471", "DEVICE", "PX8812-4471"),
    ("hub MAC 00:1A:2B:3C:4D:5E", "DEVICE", "00:1A:2B:3C:4D:5E"),
    ("see https://portal.example.org/patients/123 now", "URL", "https://portal.example.org/patients/123"),
    ("from 192.168.10.7 at noon", "IP", "192.168.10.7"),
    ("from 2001:db8::8a2e:370:7334 at noon", "IP", "2001:db8::8a2e:370:7334"),
    ("身份证号：110101199003074514", "CN_ID", "110101199003074514"),
    ("手机：138 0013 8000", "CN_MOBILE", "138 0013 8000"),
    ("联系电话+86 13800138000", "CN_MOBILE", "+86 13800138000"),
    ("银行卡号：6222 0212 3456 7890 128", "BANK_CARD", "6222 0212 3456 7890 128"),
    ("card 4111 1111 1111 1111", "BANK_CARD", "4111 1111 1111 1111"),
]


@pytest.mark.parametrize(("text", "kind", "value"), POSITIVES, ids=[p[1] + "-" + p[2] for p in POSITIVES])
def test_detected(text, kind, value):
    spans = detect(text)
    assert [text[s.start : s.end] for s in spans if s.type == kind] == [value], spans


NEGATIVES = [
    "Metformin 500 mg twice daily, lisinopril 10 mg.",
    "Hb 13.5 g/dL, WBC 11.2, PLT 250, INR 2.5, Cr 1.3.",
    "BP 132/84, HR 76, SpO2 96%, temp 37.1 C.",
    "Diagnosed in 2019; quit smoking in 2008.",
    "Room 412, bed 2.",
    "Follow up in 2-3 weeks. Take 1/2 tablet. Pain 3/10, strength 5/5.",
    "ICD-10 E11.9, CPT 99213.",
    "a 45-year-old woman; father, 81, has Parkinson disease.",
    "89 years old",
    "Walk 10000 steps a day.",
    "查体：T 36.8℃，P 82次/分，BP 135/85 mmHg。",
    "阿司匹林100 mg qd，血红蛋白 112 g/L。",
    "床号：12床，病房：3楼西区。",
    "患者高血压病史10年。",
    "Version 1.2.3 of the app.",
    "Will continue current plan. May need PT.",
    "Addison disease and Crohn disease excluded.",
    "at 10:30:45 the patient",
    "The medical record was reviewed.",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_hard_negatives_not_detected(text):
    assert detect(text) == [], [(text[s.start : s.end], s.type) for s in detect(text)]


def _cn_id(first17: str) -> str:
    return first17 + cn_id_check_char(first17)


def test_cn_id_check_character():
    good = _cn_id("11010119900307451")
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert [s.type for s in detect(f"身份证号：{good}")] == ["CN_ID"]
    assert "CN_ID" not in {s.type for s in detect(f"身份证号：{bad}")}
    assert [s.type for s in detect("身份证号：11010519491231002X")] == ["CN_ID"]  # the GB 11643 example


def test_luhn_failing_card_not_detected():
    assert luhn_ok("4111111111111111")
    assert detect("card 4111 1111 1111 1112") == []
    stem = "622202123456789012"
    good = stem + next(d for d in "0123456789" if luhn_ok(stem + d))
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert [s.type for s in detect(f"银行卡号：{good}")] == ["BANK_CARD"]
    assert detect(f"银行卡号：{bad}") == []


def test_vin_check_digit():
    assert vin_ok("1HGCM82633A004352")
    # check digit altered: not a VIN by its shape alone ...
    assert detect("ref 1HGCM82673A004352") == []
    # ... but after its label it is the vehicle's number still (mistyped, or a check digit not used abroad)
    assert [s.type for s in detect("VIN 1HGCM82673A004352")] == ["VEHICLE"]


def test_ssn_invalid_areas_not_detected():
    assert detect("ref 000-12-3456 and 666-12-3456 and 912-12-3456") == []


def test_full_width_digits_are_normalised_and_replaced_in_place():
    text = "手机：１３８００１３８０００，谢谢"
    spans = detect(text)
    assert [(text[s.start : s.end], s.type) for s in spans] == [("１３８００１３８０００", "CN_MOBILE")]
    assert deidentify(text).text == "手机：[CN_MOBILE]，谢谢"


def test_zero_width_characters_do_not_hide_an_identifier():
    text = "SSN 123-45\u200b-6789 on file"
    assert deidentify(text).text == "SSN [SSN] on file"


def test_name_propagates_to_later_mentions():
    text = "Patient: Thaddeus Przybylski\nThaddeus tolerated the procedure. Przybylski will return."
    assert (
        deidentify(text, types=["NAME"]).text == "Patient: [NAME]\n[NAME] tolerated the procedure. [NAME] will return."
    )


# Cue and format families added on the independent corpus's misses (examples written for the test).
CUED_MORE = [
    ("Verified identity by SSN last four 7719 today.", "SSN", "7719"),
    ("confirmed last 4 of patient's SSN: 0263", "SSN", "0263"),
    ("Record no. check: MRN 31-07-4452 on the wristband", "MRN", "31-07-4452"),
    ("门诊ID号：Q20038815，姓名", "MRN", "Q20038815"),
    ("Ontario health card 7701-552-913-AB presented", "HEALTH_PLAN", "7701-552-913-AB"),
    ("insured's ID number: QWE5560012877", "HEALTH_PLAN", "QWE5560012877"),
    ("Registration: FIN 7712093345 at the front desk", "ACCOUNT", "7712093345"),
    ("Dexcom transmitter ID 4RT7QZ replaced", "DEVICE", "4RT7QZ"),
    ("CT设备编号：PH-BRIL-SN0099812（维修）", "DEVICE", "PH-BRIL-SN0099812"),
    ("pickup car, license plate 4KD 7723, silver", "VEHICLE", "4KD 7723"),
    ("tag WX-441 PLM seen at the curb", "VEHICLE", "WX-441 PLM"),
    ("总机0571-87236600转6031，值班", "PHONE", "0571-87236600转6031"),
    ("Fax report to Dr. Hollis Quarry at (919) 555-0172.", "FAX", "(919) 555-0172"),
]


@pytest.mark.parametrize(("text", "kind", "value"), CUED_MORE, ids=[p[1] + "-" + p[2] for p in CUED_MORE])
def test_cued_more(text, kind, value):
    spans = detect(text)
    assert [text[s.start : s.end] for s in spans if s.type == kind] == [value], spans


CUED_MORE_NEGATIVES = [
    "MRN reviewed; last visit 03-05-2024 was uneventful.",  # a valid date after a cue stays a date
    "Insulin pump rate 0.8 units/h, pump site clean.",
    "Platelet count 150 K, plate reader OK.",
    "Fixation with plate and 3 mm screws.",
    "Fin de semaine; sensor glucose 142 mg/dL.",
    "SSN not on file; last four digits of the lot 1234 discarded.",
    "Sent the fax. Call the clinic at (919) 555-0172 tomorrow.",
]


@pytest.mark.parametrize("text", CUED_MORE_NEGATIVES)
def test_cued_more_negatives(text):
    spans = detect(text)
    kinds = {s.type for s in spans}
    assert not kinds & {"SSN", "MRN", "DEVICE", "VEHICLE", "ACCOUNT", "FAX"}, [
        (text[s.start : s.end], s.type) for s in spans
    ]


DATES_MORE = [
    ("pain started on the 9th, worse since", "the 9th"),
    ("discharged home on the 23rd after PT cleared her", "the 23rd"),
    ("Labs repeated Thu 11/02 in clinic", "Thu 11/02"),
    ("Return to work Wednesday 4/19.", "Wednesday 4/19"),
    ("vacation in Lisbon Aug 3-11 with family", "Aug 3-11"),
    ("Echo Sep-14-2021 showed EF 55%", "Sep-14-2021"),
    ("Form field DOB: 11 04 1941; sex F", "11 04 1941"),
    ("患者于27日晨起头晕", "27日"),
    ("9日下午出现胸闷", "9日"),
    ("拟于12号复诊", "12号"),
    ("21年11月8日行胃镜检查", "21年11月8日"),
]


@pytest.mark.parametrize(("text", "value"), DATES_MORE, ids=[v for _, v in DATES_MORE])
def test_dates_more(text, value):
    spans = detect(text)
    assert [text[s.start : s.end] for s in spans if s.type == "DATE"] == [value], spans


DATES_MORE_NEGATIVES = [
    "Pain on the 4th day after surgery; fever since the 2nd dose.",
    "Fractures on the 4th and 5th ribs, numbness of the 3rd finger.",
    "after the 2nd cycle, pain 3/10",
    "Sat 3/4 of the time in a chair.",
    "抗生素治疗第3日起体温下降，术后5日拆线。",
    "每日3次，共7日。",
    "转至3号床，住在5号楼。",
    "Lot 12 04 1999 discarded.",
    "Diagnosed in 2019; 2015年手术。",
]


@pytest.mark.parametrize("text", DATES_MORE_NEGATIVES)
def test_dates_more_negatives(text):
    assert [text[s.start : s.end] for s in detect(text) if s.type == "DATE"] == []
