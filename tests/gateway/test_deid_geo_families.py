"""Address and place families found in leaks of the third and fourth corpora (apps/gateway/deid/geo.py).

Each family has its own examples, written for this test (not taken from any corpus), and the
negatives that the rule must leave alone.
"""

from __future__ import annotations

import pytest

from apps.gateway.deid import detect
from apps.gateway.deid.spans import ADDRESS, GEO


def found(text: str, kind: str) -> list[str]:
    return [text[s.start : s.end] for s in detect(text) if s.type == kind]


POSITIVES = [
    # a residence name before the street address
    ("Brought in from Larkspur Manor, 2201 Quail Run Rd after a fall.", ADDRESS, "Larkspur Manor, 2201 Quail Run Rd"),
    # an ordinal floor after the address, a lowercase unit before it, an apartment alone
    ("Lives at 88 S. Wabash Ave, 3rd fl, with a roommate.", ADDRESS, "88 S. Wabash Ave, 3rd fl"),
    ("Moved into unit 5B, 40 Elm St last month.", ADDRESS, "unit 5B, 40 Elm St"),
    ("The landlord at apt 9D has a spare key.", ADDRESS, "apt 9D"),
    # a street segment
    ("Police found him in the 2300 block of W. Addison St overnight.", ADDRESS, "2300 block of W. Addison St"),
    # a street without a number after on/off
    ("Rx sent to the Rite Aid on Tamiami Blvd today.", ADDRESS, "Tamiami Blvd"),
    ("Works at the diner off Old Mill Rd since May.", ADDRESS, "Old Mill Rd"),
    # intersections
    ("Pharmacy is the one on Elm & 7th downtown.", ADDRESS, "Elm & 7th"),
    ("Found down at the corner of 9th and Walnut by a passer-by.", ADDRESS, "9th and Walnut"),
    ("Meets her ride at 4th/Cedar each morning.", ADDRESS, "4th/Cedar"),
    ("Collision reported at I-35 and Oak Ridge Rd, two vehicles.", ADDRESS, "I-35 and Oak Ridge Rd"),
    # foreign street types, capitalised
    ("Daughter lives at 9 Calle Luna in the old quarter.", ADDRESS, "9 Calle Luna"),
    ("Stayed with a cousin at 4 Via Garibaldi last summer.", ADDRESS, "4 Via Garibaldi"),
    # Chinese addresses
    ("住址：南京市鼓楼区虎踞路15号院二区6门402，电话", ADDRESS, "虎踞路15号院二区6门402"),
    ("家住泉州市鲤城区新华路8号之三。", ADDRESS, "新华路8号之三"),
    ("杭州市西湖区文三路与学院路交叉口追尾，伤者1人。", ADDRESS, "文三路与学院路交叉口"),
    # places: big cities the name detector keeps out, small towns after a residence cue
    ("Her family moved from Chicago to Denver in the spring.", GEO, "Chicago"),
    ("Pt was born in Ohio and now lives in Savannah.", GEO, "Savannah"),
    ("He grew up and still lives in Sparta with his aunt.", GEO, "Sparta"),
    ("Visiting his son in Stony Brook for the holidays.", GEO, "Stony Brook"),
    ("Card surrendered at the Harris County office on Monday.", GEO, "Harris County"),
    ("Please fax the Sacramento clinic with the results.", GEO, "Sacramento"),
    ("Mail returned from Kiowa Rd, Cleveland, OK 74020 last week.", GEO, "Cleveland"),
    # Chinese places
    ("转诊单位：信丰县大塘埠镇卫生院。", GEO, "信丰县大塘埠镇"),
    ("户籍：田东区平马镇，务农。", GEO, "田东区平马镇"),
    ("现住阿坝州马尔康市，牧民。", GEO, "阿坝州马尔康市"),
    ("曾在沙田区的诊所复诊。", GEO, "沙田区"),
    ("家住凌云县泗城镇后龙村弄怀屯。", GEO, "凌云县泗城镇后龙村弄怀屯"),
]


@pytest.mark.parametrize("text,kind,expected", POSITIVES)
def test_family_positive(text, kind, expected):
    spans = found(text, kind)
    assert any(expected in s for s in spans), (spans, expected)


NEGATIVES = [
    # vitals are not a rural route
    ("Vitals: T 36.9 HR 92 RR 18 BP 128/76 SpO2 98%.", ADDRESS),
    # a saint, a doctor and an ordinary sentence after "on"
    ("Started on St. John's wort by her naturopath.", ADDRESS),
    ("Discussed on Rounds Dr Patel agreed.", ADDRESS),
    ("Continue Tylenol and 2nd dose of amoxicillin tonight.", ADDRESS),
    ("Johnson & Johnson implant, left hip.", ADDRESS),
    ("Unit 4 nurses reported no events.", ADDRESS),
    # brands, eponyms and grading systems named after a city
    ("Boston Scientific ICD interrogated, normal function.", GEO),
    ("Fitted with a Boston brace for scoliosis.", GEO),
    ("Ottawa ankle rules negative, no x-ray.", GEO),
    ("Invasive ductal carcinoma, Nottingham grade 2.", GEO),
    # words that are small towns too, after a bare "in"
    ("Pt resting in Bed 4 with the rails up.", GEO),
    ("Seen in Clinic today, doing well.", GEO),
    # a state or a country alone
    ("Moved to Texas from Mexico as a child.", GEO),
    # Chinese drugs named after cities, and generic township words
    ("长春新碱2mg静推，桂林西瓜霜外用。", GEO),
    ("建议到乡镇卫生院随访。", GEO),
]


@pytest.mark.parametrize("text,kind", NEGATIVES)
def test_family_negative(text, kind):
    assert found(text, kind) == []
