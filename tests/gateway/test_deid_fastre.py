"""The start-character hint of apps/gateway/deid/fastre.py changes where a search skips, never what
it finds: every pattern of every detector module finds exactly what `re.compile` finds."""

from __future__ import annotations

import random
import re
import sys

import pytest

from apps.gateway.deid import ages, contextual, cues, dates, fastre, geo, names, prefilter, structured
from apps.gateway.deid.evaluation import load_corpus
from tests.gateway.deid_corpus2 import __file__ as _corpus2

MODULES = (ages, contextual, dates, geo, names, structured)


def _patterns():
    """Every module-level pattern, alone or in a container; a gated one's (cues.Gate) own pattern."""
    for module in MODULES:
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern | cues.Gate | prefilter.Prefiltered):
                yield f"{module.__name__}.{name}", getattr(value, "regex", value)
            elif isinstance(value, tuple | list | dict):
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for key, rx in items:
                    if isinstance(rx, re.Pattern | cues.Gate | prefilter.Prefiltered):
                        yield f"{module.__name__}.{name}[{key}]", getattr(rx, "regex", rx)


def _text() -> str:
    from pathlib import Path

    notes = [r["text"] for r in load_corpus(Path(_corpus2).with_name("dev.jsonl"))]
    rng = random.Random(7)
    odd = "ſKİıµΣσς\u00a0\u3000ＭＲＮ١٢٣①ﬁ患者王市路号岁\u200b\U0001d7d0\U0001f600ÄÖÜßÀÉ"
    mixed = "".join(rng.choice(odd) if rng.random() < 0.05 else c for c in "\n".join(notes))
    return "\n".join(notes) + "\n" + mixed + "\n" + mixed.upper() + "\n" + mixed.lower()


TEXT = _text()


@pytest.mark.parametrize(("name", "rx"), list(_patterns()), ids=lambda v: v if isinstance(v, str) else "")
def test_hinted_pattern_finds_what_re_finds(name, rx):
    plain = re.compile(rx.pattern, rx.flags & ~re.UNICODE)
    assert [m.span() for m in rx.finditer(TEXT)] == [m.span() for m in plain.finditer(TEXT)]


def test_most_detector_patterns_get_a_hint():
    hinted = sum(
        1
        for _, rx in _patterns()
        if rx is not None and fastre._with_hint(rx.pattern, rx.flags & ~re.UNICODE) is not None
    )
    assert hinted >= 30


@pytest.mark.parametrize(
    ("pattern", "flags", "text"),
    [
        (r"(?<![a-z])mrn\d+", re.I, "xx ſ MRN12 Mrn3 mRn4"),
        (r"(?<!\w)sk", re.I, "ſK ſk SK sK"),  # long s and the Kelvin sign fold to s and k
        (r"(?<!x)ſ", re.I, "s S ſ"),  # and the other way round
        (r"(?<!x)i\d", re.I, "İ1 ı2 i3 I4"),
        (r"(?<![0-9])(?:\+|00)?\d{3}", 0, "a+123 00456 789"),
        (r"(?<=a)(?:|b)c", 0, "ac abc"),  # an empty alternative: the next item starts the match too
        (r"(?<=a)(?-i:M|F)x", re.I, "aMx aFX amx"),
    ],
)
def test_hint_covers_case_folds_and_optional_items(pattern, flags, text):
    assert [m.span() for m in fastre.compile(pattern, flags).finditer(text)] == [
        m.span() for m in re.compile(pattern, flags).finditer(text)
    ]


def test_every_ascii_letter_folds_only_to_its_other_case_within_ascii():
    """What `_literal` relies on: under IGNORECASE an ASCII letter matches, inside ASCII, only itself
    and its other case (its other folds are all non-ASCII, which the hint always admits)."""
    for letter in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        rx = re.compile(letter, re.I)
        assert {chr(c) for c in range(128) if rx.fullmatch(chr(c))} == {letter.lower(), letter.upper()}


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="the hint uses CPython's re internals")
def test_unrestricted_or_empty_patterns_are_left_alone():
    assert fastre._with_hint(r"(?<!x).ab", 0) is None
    assert fastre._with_hint(r"(?<!x)[^a]b", 0) is None
    assert fastre._with_hint(r"a?", 0) is None
    assert fastre._with_hint(r"abc", 0) is None  # re has its own literal prefix


def test_ascii_folds_are_every_non_ascii_character_re_matches_with_an_ascii_letter():
    # Under IGNORECASE the hint lists, for an ASCII letter, only its two cases and these: checked
    # here against re itself over every code point, so a new Unicode version cannot silently break it.
    beyond = "".join(chr(cp) for cp in range(0x80, sys.maxunicode + 1) if not 0xD800 <= cp < 0xE000)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        found = {ord(ch) for ch in re.findall(letter, beyond, re.I)}
        assert found == set(fastre._ASCII_FOLDS.get(letter, ())), letter


def test_ignorecase_hint_does_not_skip_folded_letters():
    rx = fastre.compile(r"(?<![a-z])(?:kelvin|sigma|ibis)\d", re.I)
    text = "x \u212aelvin1 \u017figma2 \u0130bis3 \u0131bis4 漢kelvin5"
    assert [m.group() for m in rx.finditer(text)] == [m.group() for m in re.compile(rx.pattern, re.I).finditer(text)]
    assert len(rx.findall(text)) == 5
