"""Geography (apps/gateway/deid/geo.py): street addresses (ADDRESS) and subdivisions below a state (GEO).

Examples written for this test, not taken from either corpus.
"""

from __future__ import annotations

import pytest

from apps.gateway.deid import deidentify, detect
from apps.gateway.deid.spans import ADDRESS, GEO


def found(text: str, kind: str) -> list[str]:
    return [text[s.start : s.end] for s in detect(text) if s.type == kind]


POSITIVES = [
    # English street addresses
    ("Home address 7712 Birchwood Lane, Apt 3C, Tacoma, WA 98402.", ADDRESS, "7712 Birchwood Lane, Apt 3C"),
    ("Mail to 18 W. Elm St., Suite 410 please.", ADDRESS, "18 W. Elm St., Suite 410"),
    ("She lives at 905 Magnolia Dr in a trailer.", ADDRESS, "905 Magnolia Dr"),
    ("Return to 3301 Harbor View Blvd #12 after discharge.", ADDRESS, "3301 Harbor View Blvd #12"),
    ("Statements go to P.O. Box 4410 now.", ADDRESS, "P.O. Box 4410"),
    ("Farm is at RR 3 Box 118B outside town.", ADDRESS, "RR 3 Box 118B"),
    ("Ambulance picked him up at 2210 State Route 9 near the bridge.", ADDRESS, "2210 State Route 9"),
    ("Sister at Lindenstraße 14 in the old town.", ADDRESS, "Lindenstraße 14"),
    # English places
    ("Pt lives in Kalamazoo, MI with her husband.", GEO, "Kalamazoo"),
    ("Retired machinist from Bakersfield.", GEO, "Bakersfield"),
    ("Son drove her up from Milwaukee yesterday.", GEO, "Milwaukee"),
    ("Cabin in Ouray County, CO.", GEO, "Ouray County"),
    ("Grandson lives in Walla Walla, WA.", GEO, "Walla Walla"),
    ("Previously treated in Mobile, AL for a fracture.", GEO, "Mobile"),
    ("Grew up in Hope, AR.", GEO, "Hope"),
    ("Kontakt der Tochter: 80331 Munich.", GEO, "Munich"),
    ("Returned last month from Nairobi.", GEO, "Nairobi"),
    ("Works nights at the Albuquerque depot.", GEO, "Albuquerque"),
    ("Daughter in Smallville Corners, VT calls daily.", GEO, "Smallville Corners"),
    # Chinese places and addresses
    ("患者住武汉市江岸区，退休。", GEO, "武汉市江岸区"),
    ("患者家住湖北省武汉市洪山区珞喻路1037号8栋3单元702室。", GEO, "武汉市洪山区"),
    ("患者家住湖北省武汉市洪山区珞喻路1037号8栋3单元702室。", ADDRESS, "珞喻路1037号8栋3单元702室"),
    ("户籍：甘肃省定西市安定区凤翔镇中川村，务农。", GEO, "定西市安定区凤翔镇中川村"),
    ("其女在昆明工作，每月回家一次。", GEO, "昆明"),
    ("联系地址：深圳市南山区科技园南区高新南七道18号。", GEO, "深圳市南山区"),
    ("家属住在中山北路200号，步行可到。", ADDRESS, "中山北路200号"),
]


@pytest.mark.parametrize(("text", "kind", "value"), POSITIVES, ids=[f"{k}-{v}" for _, k, v in POSITIVES])
def test_detected(text, kind, value):
    assert value in found(text, kind), detect(text)


NEGATIVES = [
    "Patient's mobile phone is broken; call the landline.",
    "Needs reading glasses; reading at night is hard.",
    "There is hope for recovery. Hope was expressed by the team.",
    "Will check BMP in the morning.",
    "Normal sinus rhythm. Normal saline 1 L given.",
    "Glasgow Coma Scale 14 on arrival.",
    "History of Lyme disease, treated 2019.",
    "Electronically signed by Warren Ellis, MD",
    "Seen with Dr. Austin Reyes today.",
    "Took 2 Dr. Scholl's insoles from the closet.",
    "Gave 3 Tylenol tablets at 14:00.",
    "Patient is from Texas; moved from Florida in 2019.",
    "患者长期服用北京降压0号，外用云南白药。",
    "患者系广东省人，现居广东省。",
    "床号：8床，病房：5楼东区。",
    "我们大同小异地完成了检查。",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_detected(text):
    spans = [s for s in detect(text) if s.type in (ADDRESS, GEO)]
    assert spans == [], [(text[s.start : s.end], s.type) for s in spans]


def test_province_prefix_stays_outside_and_run_is_one_span():
    text = "现住四川省成都市锦江区春熙路街道。"
    assert found(text, GEO) == ["成都市锦江区"]


def test_city_and_state_redacted_state_kept():
    out = deidentify("Lives at 48 Cherry Orchard Rd, Lot 9, Dayton, OH 45402.").text
    assert "Cherry" not in out and "Dayton" not in out
    assert "[ADDRESS]" in out and "[GEO]" in out and ", OH" in out


def test_types_can_be_switched_off():
    text = "Lives at 48 Cherry Orchard Rd in Dayton."
    assert [s.type for s in detect(text, types=["NAME", "DATE"])] == []
    assert {s.type for s in detect(text, types=[GEO])} == {GEO}


POSTCODES_AND_BUILDINGS = [
    # a postal code beside a city without a state: after it (US), before it (Europe)
    ("Mail results to 88 Orchard Rd, Tucson 85719 by Friday.", "ZIP", "85719"),
    ("Wohnung: Kastanienallee 9, 10435 Berlin, Deutschland.", "ZIP", "10435"),
    ("Brother lives at 4 rue Sainte-Catherine, 33000 Bordeaux now.", "ZIP", "33000"),
    # a named residence and a unit of it before the street address
    ("Lives at Willowbrook Manor, Apt 7, 2250 Canyon Rd, alone.", ADDRESS, "Willowbrook Manor, Apt 7, 2250 Canyon Rd"),
    ("Suite 310, 77 Harbor Blvd is the new office.", ADDRESS, "Suite 310, 77 Harbor Blvd"),
]


@pytest.mark.parametrize(
    ("text", "kind", "value"), POSTCODES_AND_BUILDINGS, ids=[v for _, _, v in POSTCODES_AND_BUILDINGS]
)
def test_postcodes_and_buildings(text, kind, value):
    assert found(text, kind) == [value]


@pytest.mark.parametrize(
    "text",
    [
        "Lives at 6000 Houston Ave with her son.",  # a house number before a street named after a city
        "Seen in Room 412, bed 2, then Room 5.",
        "Vitamin D 50000 units weekly; Boston Scientific lead.",
        "Chicago 2019 conference notes.",
    ],
)
def test_postcodes_negative(text):
    assert found(text, "ZIP") == []
