"""Families of identifiers that survived the third corpus, each rule written from the family (not
the instance), with examples made up for this file and negatives: vitals, doses, scores, counts,
lab values, drug names, ICD codes, years alone and durations."""

import pytest

from apps.gateway.deid import detect


def found(text: str, kind: str) -> list[str]:
    return [text[s.start : s.end] for s in detect(text) if s.type == kind]


def anything(text: str) -> list[tuple[str, str]]:
    return [(text[s.start : s.end], s.type) for s in detect(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Caller verified DOB and SSN last 4 (3318) before release.", "SSN", "3318"),
        ("Identity confirmed, last 4 SSN 7204.", "SSN", "7204"),
        ("She gave the last four of social, 5519, at check-in.", "SSN", "5519"),
        ("Ultrasound abdomen, accession US77120453, read by radiology.", "ACCOUNT", "US77120453"),
        ("CT head  ACC# CT-23-551902  priority stat", "ACCOUNT", "CT-23-551902"),
        ("胸部X线　影像号：DR0042117　报告医师见下", "MRN", "DR0042117"),
        ("心脏超声　检查号：UCG-230911-078", "MRN", "UCG-230911-078"),
        ("门诊收费　流水号：MZ20231102008812", "ACCOUNT", "MZ20231102008812"),
        ("参保信息　个人编号：3201009988123456", "HEALTH_PLAN", "3201009988123456"),
        ("商业保险　保险合同号：PA2023HZ0091873", "HEALTH_PLAN", "PA2023HZ0091873"),
        ("| 姓名 | ** | 医保卡号 | 3301A9920018 |", "HEALTH_PLAN", "3301A9920018"),
        ("Veteran, VA ID VA-88120447, eligible for community care.", "HEALTH_PLAN", "VA-88120447"),
        ("Verified photo ID. DL: TX 40219987, exp 2027.", "LICENSE", "40219987"),
        ("Presented an Oregon ID 7731-0042-88 at registration.", "LICENSE", "7731-0042-88"),
        ("Driver's license NJ B2210 44817 68551 on file.", "LICENSE", "B2210 44817 68551"),
        ("骑电动车，牌照苏0B3372，被货车追尾。", "VEHICLE", "苏0B3372"),
        ("网络问诊　登录IP：240e:3a1:4c02:7b10::2f", "IP", "240e:3a1:4c02:7b10::2f"),
        ("Portal audit: IP:fd12:3456:789a::1 logged in.", "IP", "fd12:3456:789a::1"),
        ("Daughter asked that we call back at 555-0187 after six.", "PHONE", "555-0187"),
        ("Westgate Cardiology, T 206-555-0141 F 206-555-0142", "FAX", "206-555-0142"),
    ],
)
def test_numbers_after_their_labels(text, kind, value):
    assert value in found(text, kind), anything(text)


@pytest.mark.parametrize(
    "text",
    [
        "Per ACC 2019 guidelines, statin continued.",  # the College of Cardiology, not an accession
        "Last 4 weeks: 3 falls, BP 142/88.",
        "Platelets 150-4000 range noted; call if fever over 38.5.",
        "Metformin 500 mg bid, HbA1c 7.4, ICD E11.9.",
        "Phone triage: pain 7/10, took 2 tabs at 0800.",
        "Medicare since 2019, on apixaban 5 mg.",
        "IV: 2 L NS over 4 hours; labs at 06:00.",
    ],
)
def test_numbers_without_a_label_stay(text):
    kinds = {"SSN", "ACCOUNT", "MRN", "HEALTH_PLAN", "LICENSE", "VEHICLE", "IP", "PHONE", "FAX"}
    assert not [f for f in anything(text) if f[1] in kinds], anything(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Wound has drained since Easter; afebrile.", "Easter"),
        ("She was admitted the day after Halloween.", "Halloween"),
        ("Last drink was on Christmas Eve per wife.", "Christmas Eve"),
        ("患者于中秋节前后出现胸闷。", "中秋节"),
        ("春节期间停药一周。", "春节"),
        ("于除夕晚间跌倒。", "除夕"),
        ("腊月廿三（小年）起咳嗽。", "小年"),
        ("入院日期：20240913　出院日期：20240920", "20240913"),
        ("DOS 20231127, CPT 99214", "20231127"),
        ("| 11-04 06:00 | 37.2 | 88 |", "11-04"),
        ("PCA visit wed 9/18, family present.", "wed 9/18"),
        ("Seen Thurs 2/6/25 for follow-up.", "Thurs 2/6/25"),
        ("sugars high since monday the 3rd", "monday the 3rd"),
        ("Fever began Saturday morning, March 8.", "Saturday morning, March 8"),
        ("Vitals rechecked at 09:30, the 14th: stable.", "the 14th"),
        ("Glucometer uploaded 8/19, no lows.", "8/19"),
        ("Asked to push his 10/7 appt to the afternoon.", "10/7"),
        ("s/p L THA 3/28, WBAT.", "3/28"),
        ("No-show on 6/2 and 6/9 per nurse.", "6/9"),
        ("Tos desde el 14 de enero, sin fiebre.", "14 de enero"),
        ("病程记录：上月底出现咳嗽。", "上月底"),
        ("月中复查血常规正常。", "月中"),
        ("电话随访：本月8号复诊。", "本月8号"),
        ("2024年10月下旬开始头晕。", "2024年10月下旬"),
        ("周二（9月3日）夜班患者诉胸痛。", "周二（9月3日）"),
    ],
)
def test_dates_in_their_families(text, value):
    assert value in found(text, "DATE"), anything(text)


@pytest.mark.parametrize(
    "text",
    [
        "Pain 3/10 after PT, strength 4/5 in the left leg.",
        "Takes it Sat 3/4 of the time, per daughter.",
        "Family bought a Christmas tree; mood better.",
        "Scored 12/15 on the screen; BP 130/80 at 14:00.",
        "HR 88 at 08:00, the 2nd dose given at 10:00.",
        "Lisinopril 10 mg since 2019; ICD E11.9.",
        "Moved 3/4 of the way down the hall with a walker.",
        "患者在五一路口被电动车撞伤。",
        "三个月中体重下降5kg，每月底复查血常规。",
        "住院号：20231127",
        "WBC 12.4, K 4.1, Hb 10-12 over the week.",
    ],
)
def test_not_dates(text):
    assert not found(text, "DATE"), anything(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('Says "I\'m ninety-three and I still drive."', "ninety-three"),
        ("Told the nurse: I am 97, I know my meds.", "97"),
        ('Text from son: "my dad (92) missed his pills."', "92"),
        ("Lives with her grandmother (104).", "104"),
        ("患者九旬高龄，长期卧床。", "九旬"),
        ("老人年逾九旬，独居。", "年逾九旬"),
        ("其母九十多岁，同住。", "九十多岁"),
    ],
)
def test_ages_over_89_in_more_phrasings(text, value):
    assert value in found(text, "AGE"), anything(text)


@pytest.mark.parametrize(
    "text",
    [
        "I'm 95% sure she took it.",
        "I was 92 kg before the illness.",
        "Her father (78) and mother (G3P3) at bedside.",
        "父亲八旬，仍下地干活。",
        "SpO2 94 on room air, HR 96.",
        "I am 93 percent better, she said.",
    ],
)
def test_not_ages_over_89(text):
    assert not found(text, "AGE"), anything(text)


def test_decade_words_are_replaced_by_an_age_in_every_mode():
    from apps.gateway.deid.engine import deidentify
    from apps.gateway.deid.surrogate import SurrogateMap

    text = "患者九旬高龄，母亲九十多岁。"
    assert deidentify(text).text == "患者90+高龄，母亲90+岁。"
    out = deidentify(text, mode="surrogate", mapping=SurrogateMap()).text
    assert "旬" not in out and "岁岁" not in out and out.count("岁") == 2


# ---- fifth round: date and age families (examples made up for this file) ----


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("sync log\n2023-11-19T22:41:07+08:00 upload ok", "2023-11-19"),
        ("交班记录：09-27 06:30 患者诉头痛", "09-27"),
        ("| 3-9 | 14:00 | 120/70 | 签名 |", "3-9"),
        ("Symptoms began in early October after the trip.", "early October"),
        ("Knee pain since mid-August, worse on stairs.", "mid-August"),
        ("Last seen by PCP the end of January.", "the end of January"),
        ("Fell at a family party on Christmas Eve.", "Christmas Eve"),
        ("He says it was Thanksgiving Day, Nov 28, when it began.", "Thanksgiving Day, Nov 28"),
        ("Birth date keyed as 19611203 in the old system.", "19611203"),
        ("5月12日（护士节）夜班交接", "护士节"),
        ("门诊记录：儿童节当天患儿发热", "儿童节"),
        ("随访日期：癸卯年冬月十二", "癸卯年冬月十二"),
        ("复诊（8月4日星期日）", "8月4日星期日"),
        ("拟于下周三（10月9日）手术", "下周三（10月9日）"),
        ("患者去年11月曾住院", "去年11月"),
        ("请于下月15日复查", "下月15日"),
    ],
)
def test_fifth_round_date_families(text, value):
    assert value in found(text, "DATE"), anything(text)


@pytest.mark.parametrize(
    "text",
    [
        "服药3月余，症状缓解。",  # a duration
        "早产儿，矫正3月龄。",  # an age in months
        "BP 22:10-11 recorded twice",  # not a date inside a clock
        "Take 1-2 tabs 08:00 and 20:00.",  # a dose range before a time
        "Decorating the Christmas tree with grandchildren.",
        "Late stage disease; may be early.",  # 'late'/'may' without a month
        "Lot 20240117 expires soon.",  # no birth label
        "Anticoagulation per the ACC/AHA 2019 guideline.",
    ],
)
def test_fifth_round_date_negatives(text):
    assert found(text, "DATE") == [], anything(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("| 姓名 | ** | 年龄 | 97 |", "97"),
        ("外婆今年九十有二，耳聋。", "九十有二"),
    ],
)
def test_fifth_round_age_families(text, value):
    assert value in found(text, "AGE"), anything(text)


@pytest.mark.parametrize("text", ["| 年龄 | 56 |", "三十有五，尚未婚。", "| 心率 | 96 |", "九十有余家单位"])
def test_fifth_round_age_negatives(text):
    assert found(text, "AGE") == [], anything(text)


# ---- fifth round: labelled numbers, and phone/fax/ID precision (examples made up for this file) ----


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("细胞学报告　标本号：XB25-00417　送检科室", "MRN", "XB25-00417"),
        ("生化检验　条码号：7730291845012", "MRN", "7730291845012"),
        ("入职体检　体检号：TJ-2023-55190", "MRN", "TJ-2023-55190"),
        ("社区随访，健康档案号330106004417。", "MRN", "330106004417"),
        ("Pathology case #: PS-23-04471, margins clear.", "MRN", "PS-23-04471"),
        ("Frozen section, Case HX23-0912.", "MRN", "HX23-0912"),
        ("specimen ID: CY-558210 sent to cytology", "MRN", "CY-558210"),
        ("商业保险　赔案号：PC2023110500871", "ACCOUNT", "PC2023110500871"),
        ("Portal session ID QX-99120734 timed out.", "ACCOUNT", "QX-99120734"),
        ("Verified: license LPN LP-0047712, active.", "LICENSE", "LP-0047712"),
        ("护士执业证号：201933001245", "LICENSE", "201933001245"),
        ("驾照号：11010519491231002X", "LICENSE", "11010519491231002X"),
        ("起搏器编号：PJN-448102，程控正常", "DEVICE", "PJN-448102"),
        ("事故车辆识别代号LGBH52E09KY123456，已拖离", "VEHICLE", "LGBH52E09KY123456"),
        ("请传真至021-6488 1200，或致电021-6488 1201", "PHONE", "021-6488 1201"),
    ],
)
def test_fifth_round_number_families(text, kind, value):
    assert value in found(text, kind), anything(text)


@pytest.mark.parametrize(
    "text",
    [
        "Overdose case of 1500 mg acetaminophen.",  # 'case' as a word
        "Case 2019 was reviewed at M&M.",  # a year after 'Case'
        "Cardiac rehab session 12/36 today.",  # a count of sessions
        "PT session 3 of 10 completed.",
        "门诊病历　2024.11.03",  # a date after 病历, not a record number
        "病历3份已归档。",
        "Specimen 2 of 3 labelled.",
    ],
)
def test_fifth_round_number_negatives(text):
    kinds = {"MRN", "ACCOUNT", "PHONE", "LICENSE", "DEVICE"}
    assert [x for x in anything(text) if x[1] in kinds] == [], anything(text)
