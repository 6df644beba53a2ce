"""Rule families, each with examples written for this file (not taken from either corpus):
role and occupation lexicons before names (English and Chinese), titles after a Chinese surname,
surname placeholders, 老X/小X, Census given names, month/day dates in any event context, holidays
and lunar dates, insurance schemes, licences, plates, unlabelled IMEIs, apposed ages, foreign
postcodes and world cities in Chinese — with negatives for each (drugs, eponyms, scores, vitals)."""

import pytest

from apps.gateway.deid import detect


def found(text: str, kind: str) -> list[str]:
    return [text[s.start : s.end] for s in detect(text) if s.type == kind]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Discussed discharge with home health aide Rosalind today.", "Rosalind"),
        ("Care plan faxed to case manager Derek Oyelowo.", "Derek Oyelowo"),
        ("Chaplain Winifred visited at bedside.", "Winifred"),
        ("Spoke with landlord Terrence about access to the flat.", "Terrence"),
        ("Son-in-law Marcus drives her to dialysis.", "Marcus"),
        ("Records mailed attn: Gwendolyn Parrish.", "Gwendolyn Parrish"),
        ("Interpreter Yesenia present for the consent.", "Yesenia"),
        ('Prefers to be called "Tink." Oriented x3.', "Tink"),
        ("Dr. Kessler reviewed the films.", "Kessler"),
        ("Garfield is a 12 yo M with asthma.", "Garfield"),
        ("Holloway, Bernadette — 54 — F, seen for cough.", "Holloway, Bernadette"),
        ("Neighbour Ji-hoon Baek found him on the floor.", "Ji-hoon Baek"),
        ("Caregiver José Peña reports poor intake.", "José Peña"),
        ("Dictated by rkm on admission.", "rkm"),
    ],
)
def test_english_names_after_roles_and_headers(text, value):
    assert any(value in f or f in value for f in found(text, "NAME")), found(text, "NAME")


@pytest.mark.parametrize(
    "text",
    [
        "Started on Lasix 40 mg with Keflex for cellulitis.",
        "Positive Tinel sign at the wrist; Lou Gehrig disease excluded.",
        "Caregiver reports Ensure twice daily; aide gave Tylenol.",
        "Renal US Jun-03-2022 unremarkable.",
        "Transcribed by the night clerk.",
        "Seen in Clinic today, BP 128/74.",
    ],
)
def test_english_role_lexicon_negatives(text):
    assert found(text, "NAME") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("手术记录：术者：郑国栋；二助：邱敏。", "郑国栋"),
        ("快递收件人袁丽萍，请核对地址。", "袁丽萍"),
        ("社区网格员小范每周上门。", "小范"),
        ("由房东老蒋陪同来院。", "老蒋"),
        ("请转告急诊科潘医生复查。", "潘"),
        ("交警魏警官到场询问。", "魏"),
        ("患者汤××，女，九十二岁。", "汤××"),
        ("老钱今晨诉胸闷。", "老钱"),
        ("小杨护士已完成交接。", "小杨"),
        ("陪护：其女婿小军。", "小军"),
        ("新生儿：许婷之女，顺产。", "许婷"),
        ("经办人：施建平，联系电话见上。", "施建平"),
    ],
)
def test_chinese_names_after_roles_and_titles(text, value):
    assert any(value in f for f in found(text, "NAME")), found(text, "NAME")


@pytest.mark.parametrize(
    "text",
    [
        "每周医生查房两次。",
        "责任护士：已交班。",
        "予小苏打片口服。",
        "其余医生意见一致。",
        "某些患者出现皮疹。",
        "护士长查房，指导护理。",
    ],
)
def test_chinese_family_negatives(text):
    assert found(text, "NAME") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Next appointment 11/14 with wound care.", "11/14"),
        ("Last transfusion 2/27, Hgb stable.", "2/27"),
        ("6/30: dressing changed.", "6/30"),
        ("Stable. 7/2: drain removed.", "7/2"),
        ("Addendum 4/9 08:15 — labs reviewed.", "4/9"),
        ("Fell on Christmas Eve 2021 at home.", "Christmas Eve 2021"),
        ("农历正月初六起发热。", "农历正月初六"),
        ("患者自3月中旬出现咳嗽。", "3月中旬"),
        ("十月底复诊。", "十月底"),
        ("2022年国庆节期间发病。", "2022年国庆节"),
    ],
)
def test_dates_by_family(text, value):
    assert value in found(text, "DATE"), found(text, "DATE")


@pytest.mark.parametrize(
    "text",
    [
        "Motor strength 4/5 in the left arm.",
        "Pain 6/10, improved with rest.",
        "Cycle 2/6 of chemotherapy.",
        "Take 1/2 tab at night.",
        "病史3月余，近3月加重。",
    ],
)
def test_date_negatives(text):
    assert found(text, "DATE") == []


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Medi-Cal card #: 91234567A on file.", "HEALTH_PLAN", "91234567A"),
        ("Aetna ID W88812345 verified.", "HEALTH_PLAN", "W88812345"),
        ("合作医疗证号：320981004455", "HEALTH_PLAN", "320981004455"),
        ("商保卡号：PA77120033", "HEALTH_PLAN", "PA77120033"),
        ("Identity checked against state ID D412-7783-1190.", "LICENSE", "D412-7783-1190"),
        ("Passport number X44118822 copied.", "LICENSE", "X44118822"),
        ("Vermont plate KTR 5521 in the lot.", "VEHICLE", "KTR 5521"),
        ("Issued phone for telehealth: 490154203237518.", "DEVICE", "490154203237518"),
    ],
)
def test_cued_numbers_by_family(text, kind, value):
    assert value in found(text, kind), detect(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("EPO 10000 units weekly.", "HEALTH_PLAN"),
        ("Carrier state for CF not known.", "HEALTH_PLAN"),
        ("Total 490154203237518 counted without a device.", "DEVICE"),
        ("GCS 9 (E2V3M4).", "ZIP"),
    ],
)
def test_cued_negatives(text, kind):
    assert found(text, kind) == []


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Her brother Otto (94) lives nearby.", "AGE", "94"),
        ("Intake: Harriet Quell, 97, lives alone.", "AGE", "97"),
        ("Moved to 3 Shore St, Manly NSW 2095.", "ZIP", "2095"),
        ("Address: 12 Bank St, Ottawa ON K1P 5N2.", "ZIP", "K1P 5N2"),
        ("患者女儿在伦敦工作。", "GEO", "伦敦"),
    ],
)
def test_ages_postcodes_places(text, kind, value):
    assert value in found(text, kind), detect(text)


def test_vital_in_apposition_is_not_an_age():
    assert found("Pulse Rate, 96, regular.", "AGE") == []
