"""prefilter.py: the Hyperscan pass reports every position where a pattern can match, so that the
prefiltered searches find exactly what the whole-text searches find (see its docstring)."""

from __future__ import annotations

import random
import re

import pytest

from apps.gateway.deid import cues, detect, prefilter
from apps.gateway.deid import engine as deid_engine
from tests.gateway.test_deid_cues import _texts

pytestmark = pytest.mark.skipif(prefilter._hs is None, reason="hyperscan is not installed")


@pytest.fixture
def everything(monkeypatch):
    """Every pattern the detectors hold in the Hyperscan databases, every text through them (no
    length floor, nothing searched whole for being dense); the module's state restored after."""
    saved = {p: p.state for p in prefilter.registered()}
    saved_dbs = prefilter._DBS[0]
    monkeypatch.setattr(prefilter, "MIN_LENGTH", 0)
    monkeypatch.setattr(prefilter, "DENSE", 1)
    for p in prefilter.registered():
        p.state = prefilter._IN
    prefilter._DBS[0] = tuple(prefilter._databases(prefilter.registered()))
    prefilter._scan.cache_clear()
    prefilter.bind()
    yield [p for p in prefilter.registered() if p.state == prefilter._IN]
    for p, state in saved.items():
        p.state = state
    prefilter._DBS[0] = saved_dbs
    prefilter._scan.cache_clear()
    prefilter.bind()


def _sample(n: int):
    texts = list(_texts())
    rng = random.Random(14)
    picked = texts[:: max(1, len(texts) // n)][:n]
    # long texts with foreign digits, invisibles, cased letters beyond ASCII that re folds to ASCII
    noise = ["\u0663", "\u200b", "\u017f", "\u212a", "\u0130", "\u0131", "É", "é", "ß", "患者", "\n", "  "]
    for k in range(20):
        pieces = list("\n".join(rng.sample(texts[:400], 12)))
        for _ in range(30):
            pieces.insert(rng.randint(0, len(pieces)), rng.choice(noise))
        picked.append("".join(pieces) if k % 2 else "".join(pieces).encode("ascii", "ignore").decode())
    return picked


def test_most_patterns_are_written_and_accepted_by_hyperscan(everything):
    assert len(prefilter.registered()) >= 150
    assert len(everything) >= 150


def test_every_match_start_is_reported(everything):
    """The superset itself: every position where the pattern matches (re.match there, the whole
    text visible) is among the reported starts."""
    for text in _sample(60):
        found = prefilter._scan(text)
        assert found is not None
        reported = dict(zip(found[2], found[0], strict=True))
        for p in everything:
            starts = set(reported[p])
            for s in range(len(text)):
                if p.regex.match(text, s):
                    assert s in starts, (p.pattern[:60], s)


def test_prefiltered_searches_find_what_the_whole_text_search_finds(everything):
    for text in _sample(400):
        for p in everything:
            got = [(m.span(), m.groups()) for m in p.finditer(text)]
            assert got == [(m.span(), m.groups()) for m in p.regex.finditer(text)], p.pattern[:60]
            m, w = p.search(text), p.regex.search(text)
            assert (m and m.span()) == (w and w.span()), p.pattern[:60]


def test_gated_patterns_through_the_pass_find_what_the_whole_text_search_finds(everything):
    gated = [g for g in cues._GATES if isinstance(g.regex, prefilter.Prefiltered)]
    assert gated
    for text in _sample(300):
        for g in gated:
            assert [m.span() for m in g.finditer(text)] == [m.span() for m in g.regex.regex.finditer(text)]


def test_detection_is_the_same_through_the_pass(everything):
    texts = _sample(150)
    with_pass = [detect(t) for t in texts]
    prefilter._DBS[0] = None
    prefilter._scan.cache_clear()
    assert with_pass == [detect(t) for t in texts]


def test_warm_enters_the_detectors_patterns_and_long_texts_use_them():
    deid_engine.warm()
    inside = [p for p in prefilter.registered() if p.state == prefilter._IN]
    assert len(inside) >= 40
    text = deid_engine._WARM_TEXT
    assert len(text) >= prefilter.MIN_LENGTH
    prefilter._scan.cache_clear()
    found = prefilter._scan(text)
    assert found is not None and found[1]  # starts for the patterns that are not dense in it
    spans = detect(text)
    assert {s.type for s in spans} >= {"NAME", "DATE", "SSN", "PHONE", "CN_ID", "ADDRESS"}
    # a text Hyperscan cannot take (a lone surrogate) is searched whole, with the same spans
    odd = text + "\ud800"
    assert prefilter._scan(odd) is None
    assert detect(odd) == spans


def test_expressions_are_supersets_of_the_constructs_the_detectors_use():
    cases = [
        (r"(?<![0-9])(\d{3})-\1", "x 123-123 y"),
        (r"(?i)(?<![a-z])mrn\s*#?\d{4,}", "ſee MRN 12345 and \u212a mrn#0042 İ"),
        (r"(?<=[人者])[:：][ \t]{0,2}(?=[一-鿿])", "医生：张三"),
        (r"\b(?:on|at)\s+\w+(?=\.)", "seen on Monday. at Ünïcode."),
        (r"[^\W\d_]{2,}[0-9]{17}", "ab12345678901234567 xy"),
        (r"(?:a|bc){1,50}d", "bcbcabcd"),
    ]
    for pattern, text in cases:
        regex = re.compile(pattern)
        written = prefilter.expression(regex)
        assert written
        p = prefilter.Prefiltered(regex)
        p.expression = written
        db = prefilter._Database([p])
        reversed_bytes = text[::-1].encode()
        ends = []
        db.db.scan(reversed_bytes, match_event_handler=lambda i, f, t, fl, c: ends.append(t), scratch=db.scratch)
        chars = [len(reversed_bytes[:t].decode()) for t in ends]
        starts = {len(text) - c for c in chars}
        for s in range(len(text)):
            if regex.match(text, s):
                assert s in starts, (pattern, s)
