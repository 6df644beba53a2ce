"""Surrogate mode and re-identification (apps/gateway/deid/surrogate.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.gateway.deid import (
    MappingRequired,
    Reidentifier,
    SurrogateMap,
    deidentify,
    detect,
)
from apps.gateway.deid import surrogate as sg
from apps.gateway.deid.checksums import cn_id_ok, luhn_ok
from apps.gateway.deid.safeharbor import restricted_zip3

EN = (
    "John Smith, aged 95, seen on March 5, 2024 at 4180 Willow Creek Road, Boca Raton, FL 33431. "
    "Call (617) 555-0143, MRN 12345678, john@x.com, 10.1.2.3. Mr. Smith was well on 2024-03-05."
)
ZH = "患者张伟，男，九十五岁，住上海市徐汇区漕溪北路88号。电话13812345678，2024年3月5日入院。"


def _values(text):
    return [(text[s.start : s.end], s.type) for s in detect(text)]


def test_needs_a_mapping():
    with pytest.raises(MappingRequired):
        deidentify(EN, "surrogate")


@pytest.mark.parametrize("text", [EN, ZH])
def test_no_original_survives_and_surrogates_are_detected_as_the_same_types(text):
    m = SurrogateMap()
    out = deidentify(text, "surrogate", mapping=m)
    originals = _values(text)
    for value, _kind in originals:
        assert not re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", out.text), value
    assert [k for _, k in _values(out.text)] == [k for _, k in originals]
    assert Reidentifier(m).reidentify(out.text) == text


def test_types_and_languages():
    m = SurrogateMap()
    name = m.surrogate("NAME", "John Smith")
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", name)
    zh = m.surrogate("NAME", "张伟")
    assert re.fullmatch("[\u4e00-\u9fff]{2}", zh) and zh[0] != "张"
    assert m.surrogate("NAME", "Smith") == name.split()[1]  # token by token: the family name alone
    assert m.surrogate("NAME", "老张") == "老" + zh[0]
    assert m.surrogate("EMAIL", "john@x.com").endswith("@example.org")
    assert re.fullmatch(r"\(\d{3}\) 555-01\d\d", m.surrogate("PHONE", "(617) 555-0143"))
    assert re.fullmatch(r"1999000\d{4}", m.surrogate("CN_MOBILE", "13812345678"))
    ssn = m.surrogate("SSN", "123-45-6789")
    assert re.fullmatch(r"9\d\d-\d\d-\d{4}", ssn)
    assert m.surrogate("IP", "10.1.2.3").startswith(("192.0.2.", "198.51.100.", "203.0.113."))
    mrn = m.surrogate("MRN", "AB123456")
    assert re.fullmatch(r"[A-Z]{2}\d{6}", mrn) and mrn != "AB123456"
    card = m.surrogate("BANK_CARD", "4111 1111 1111 1111")
    assert re.fullmatch(r"41\d\d \d{4} \d{4} \d{4}", card) and luhn_ok(card.replace(" ", ""))


def test_cn_id_has_a_valid_check_digit_a_region_that_does_not_exist_and_keeps_the_birth_year():
    m = SurrogateMap()
    for original in ("11010519491231002X", "440524188001010014", "510108200105051234"):
        s = m.surrogate("CN_ID", original)
        assert cn_id_ok(s), s
        assert s.startswith("99")  # no province 99
        assert s[6:10] == original[6:10]
        assert _values(f"身份证号 {s}") == [(s, "CN_ID")]


def test_dates_stay_in_their_year_and_keep_their_format():
    for _ in range(30):
        m = SurrogateMap()
        assert re.fullmatch(r"2024-\d\d-\d\d", m.surrogate("DATE", "2024-03-05"))
        assert re.fullmatch(r"\d\d/\d\d/1987", m.surrogate("DATE", "03/05/1987"))
        assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, 2019", m.surrogate("DATE", "March 5, 2019"))
        assert re.fullmatch(r"2021年\d{1,2}月\d{1,2}日", m.surrogate("DATE", "2021年3月5日"))
    m = SurrogateMap()
    a, b = m.surrogate("DATE", "2024-03-05"), m.surrogate("DATE", "March 5, 2024")
    mo, d = int(a[5:7]), int(a[8:10])
    assert b == f"{sg._MONTHS[mo - 1]} {d}, 2024"  # one date written two ways: one surrogate date


def test_date_shift_moves_every_date_by_the_same_days():
    m = SurrogateMap(date_shift_days=40)
    assert m.surrogate("DATE", "2024-12-30") == "2025-02-08"  # across the year: not Safe Harbor
    assert m.surrogate("DATE", "March 5, 2024") == "April 14, 2024"


def test_ages_over_89_stay_in_the_90_plus_category_and_zip_keeps_only_the_safe_harbor_area():
    m = SurrogateMap()
    for original in ("95", "103", "九十五"):
        s = m.surrogate("AGE", original)
        assert 90 <= (int(s) if s.isdigit() else sg._zh_parse(s)) <= 99
    z = m.surrogate("ZIP", "02139")
    assert z.startswith("021") and z != "02139"
    restricted = sorted(restricted_zip3())[0]
    assert m.surrogate("ZIP", restricted + "17").startswith("000")


def test_consistent_within_a_mapping_never_shared_between_originals():
    m = SurrogateMap()
    assert m.surrogate("PHONE", "(617) 555-0143") == m.surrogate("PHONE", "(617) 555-0143")
    surrogates = {m.surrogate("MRN", f"{i:06d}") for i in range(300)}
    assert len(surrogates) == 300
    # a value equal to a surrogate (a caller's history, or a real person who bears that name) is not
    # left as it is: it could be real (tests/gateway/test_deid_attacks.py); it gets its own surrogate
    s = m.surrogate("NAME", "Ann Rivers")
    again = m.surrogate("NAME", s)
    assert again != s and again == m.surrogate("NAME", s)
    assert m.reverse[again] == (s, "NAME")


def test_surrogates_come_from_a_csprng_not_from_the_identifier(monkeypatch):
    # the same identifier in two mappings: different surrogates (a hash of it would repeat)
    draws = {SurrogateMap().surrogate("MRN", "12345678") for _ in range(20)}
    assert len(draws) > 15
    calls = []
    real = sg._rng.randint
    monkeypatch.setattr(sg._rng, "randint", lambda a, b: calls.append((a, b)) or real(a, b))
    SurrogateMap().surrogate("MRN", "12345678")
    assert calls  # drawn from secrets.SystemRandom
    assert isinstance(sg._rng, __import__("secrets").SystemRandom)


def test_a_phone_surrogate_never_keeps_the_original_line(monkeypatch):
    """555-0100..0199 is the fictional range: an original inside it must not come back with only its
    area code changed (617-555-0143 -> 768-555-0143 kept the exchange and line: a 1-in-100 leak)."""
    draws = iter(["43", "43", "43", "07"])  # the line the original has, three times, then another
    monkeypatch.setattr(sg, "_rand_digits", lambda n, *a, **k: next(draws) if n == 2 else "0" * n)
    assert SurrogateMap().surrogate("PHONE", "617-555-0143").endswith("-555-0107")


def test_mapping_round_trips_through_bytes():
    m = SurrogateMap(date_shift_days=3)
    out = deidentify(EN, "surrogate", mapping=m).text
    again = SurrogateMap.from_bytes(m.to_bytes())
    assert Reidentifier(again).reidentify(out) == EN
    assert deidentify(EN, "surrogate", mapping=again).text == out


# ---- streaming ---------------------------------------------------------------------------------------


def _mapping_with(*pairs):
    m = SurrogateMap()
    for s, o, k in pairs:
        m.reverse[s] = (o, k)
    return m


PAIRS = [("Paul Jones", "John Smith", "NAME"), ("Jones", "Smith", "NAME"), ("王芳", "张伟", "NAME"),
         ("2024-07-03", "2024-03-05", "DATE"), ("(711) 555-0139", "(617) 555-0143", "PHONE")]  # fmt: skip


def test_every_split_point():
    m = _mapping_with(*PAIRS)
    text = "Dr. Paul Jones (711) 555-0139 saw Jones, not Jonesboro or Paul Jonesy, on 2024-07-03; 王芳。Paul Jon"
    whole = Reidentifier(m).reidentify(text)
    assert (
        whole == "Dr. John Smith (617) 555-0143 saw Smith, not Jonesboro or Paul Jonesy, on 2024-03-05; 张伟。Paul Jon"
    )
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            r = Reidentifier(m)
            assert r.feed(text[:i]) + r.feed(text[i:j]) + r.feed(text[j:]) + r.finish() == whole, (i, j)


def test_the_held_tail_is_only_a_possible_surrogate():
    r = Reidentifier(_mapping_with(*PAIRS))
    assert r.feed("Hello Pa") == "Hello "
    assert r.feed("tient") == "Patient"
    assert r.feed(" Paul Jones") == " "
    assert r.feed(".") == "John Smith."
    assert r.counts == {"NAME": 1}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([p[0] for p in PAIRS] + [" ", "x", "Pa", "Jon", ", ", "王", "2024-", "555"]), max_size=20),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_streaming_equals_whole_text(pieces, cuts):
    m = _mapping_with(*PAIRS)
    text = "".join(pieces)
    whole = Reidentifier(m).reidentify(text)
    r = Reidentifier(m)
    points = sorted({min(c, len(text)) for c in cuts})
    out, last = [], 0
    for p in [*points, len(text)]:
        out.append(r.feed(text[last:p]))
        last = p
    out.append(r.finish())
    assert "".join(out) == whole
