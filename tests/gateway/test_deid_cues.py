"""cues.py: a gated pattern finds exactly what the whole-text search finds (see its docstring)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from apps.gateway.deid import contextual, cues
from apps.gateway.deid.evaluation import load_corpus
from tests.gateway import test_deid_adversarial as adv

ROOT = Path(__file__).resolve().parent
GATED = list(cues._GATES)  # every gated pattern of the detectors (imported above)


def _texts():
    notes = [r["text"] for r in load_corpus(ROOT / "deid_corpus" / "corpus.jsonl")]
    notes += [r["text"] for r in load_corpus(ROOT / "deid_corpus2" / "dev.jsonl")]
    yield from notes
    yield "\n".join(notes)
    for sample, _cls, spelled in adv._all_cases():
        yield sample.prefix + spelled + sample.suffix
    rng = random.Random(7)
    noise = ["MRN", "mrn:", "ſubscriber", "\u212aey", "İd", ":", "：", "signed by", "daughter", " ", "#", "0", "12 345"]
    noise += ["Dr. ", "Mr ", "NP ", "pt ", "Nurse ", "Referring ", ' aka "Bo"', 'goes by "Al"', "x", "_"]
    for _ in range(1500):
        a = rng.choice(notes)
        i, j = sorted(rng.sample(range(len(a) + 1), 2))
        pieces = list(a[i:j])
        for _ in range(rng.randint(0, 8)):
            pieces.insert(rng.randint(0, len(pieces)), rng.choice(noise))
        yield "".join(pieces)


def test_gated_patterns_find_what_the_whole_text_search_finds():
    assert len(GATED) >= 10
    for text in _texts():
        for g in GATED:
            assert [m.span() for m in g.finditer(text)] == [m.span() for m in g.regex.finditer(text)], g.pattern[:40]


def test_fold_keeps_offsets_and_reads_re_case_folds_as_ascii():
    text = "ſubſcriber \u0130D \u0131d \u212aEY Mrn 病历号"
    folded = cues.fold(text)
    assert len(folded) == len(text)
    assert folded == "subscriber id id key mrn 病历号"


def test_prefixes_are_the_literal_starts_of_every_alternative():
    rx = re.compile(r"(?<![a-z])(?:(?:driver'?s\s)?licen[cs]e|MR\s?#|MRN|病历号)\d", re.I)
    assert cues.prefixes(rx) == {"driver'", "drivers", "licen", "mr", "mr#", "mrn", "病历号"}
    with pytest.raises(ValueError):
        cues.prefixes(re.compile(r"\d+MRN"))  # starts with a class: no literal to find


@pytest.fixture
def scratch_gates(monkeypatch):
    """Gates made by a test are forgotten after it (the automaton is rebuilt without them)."""
    monkeypatch.setattr(cues, "_GATES", list(cues._GATES))
    yield
    monkeypatch.undo()
    cues.automaton.cache_clear()
    cues.hits.cache_clear()


def test_a_pattern_of_any_length_is_gated_but_not_one_that_matches_empty(scratch_gates):
    rx = re.compile(r"(?<![a-z])ab\d+(?!\s*x)", re.I)  # unbounded: tried where "ab" stands, matched in full
    g = cues.gate(rx, ["ab"])
    text = "AB" + "7" * 5000 + " ab12  x cab3 ab45"  # "ab12" before "x" backs off to "ab1"
    found = [m.span() for m in g.finditer(text)]
    assert found == [m.span() for m in rx.finditer(text)] == [(0, 5002), (5003, 5006), (5016, 5020)]
    with pytest.raises(ValueError):
        cues.gate(re.compile(r"(?:ab)?"), ["ab"])


def test_a_match_far_from_any_other_anchor_is_found_in_its_window():
    g = contextual._CUE_RES["MRN"]
    text = "x" * 5000 + " MRN: 00482913 " + "y" * 5000 + " mrn 7777 1234"
    assert [m.group("v") for m in g.finditer(text)] == ["00482913", "7777 1234"]
    assert list(g.starts("no cue at all here")) == []
