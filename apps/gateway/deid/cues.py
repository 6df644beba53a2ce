"""Cue words found in one pass, so that patterns run only in windows around them.

Many detectors are a regular expression that cannot match without a cue word ("MRN", "member",
"病历号", "signed by", a colon): searched over the whole text, such a pattern is entered at every
character that could start it — under IGNORECASE, most letters. `gate(regex, anchors, lead)` wraps
the pattern: every anchor word of every gated pattern sits in one Aho–Corasick automaton, run once
over the case-folded text (`hits`), and the pattern is searched only in windows around its anchors.

It finds exactly what `regex.finditer(text)` finds, provided that every match of the pattern holds
one of its anchors (case-insensitively) starting at most `lead` characters after the match starts
— stated next to each gated pattern, and checked on the corpora, the adversarial spellings and a
fuzz by tests/gateway/test_deid_cues.py against the ungated pattern. Why it is exact: a match that
starts at s holds an anchor at a in [s, s + lead], so s is in [a - lead, a]; the pattern looks at
no character beyond s + reach (its longest match plus its look-aheads, worked out from the parsed
pattern), so searching text[a - lead : a + reach] (look-behinds still see what is before) finds
the same match at s as the whole text does. Windows that overlap are merged, and each window's
search starts where the previous match ended, as finditer's does. A pattern whose length is
unbounded cannot be gated (ValueError at import).

When anchors are not given, they are the literal prefixes of the pattern's alternatives, derived
from the parsed pattern (lead 0); a pattern for which no such prefixes exist cannot be gated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from re import _constants as C  # noqa: N812 - sre opcodes
from re import _parser

_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})  # re folds these to ASCII letters
_RARE = re.compile("[\u0130\u0131\u017f]")


def fold(text: str) -> str:
    """Lower-case, one character for one (offsets unchanged): a match of a pattern under
    IGNORECASE reads, in the folded text, as its anchor in lower case."""
    if _RARE.search(text):
        text = text.translate(_FOLD)
    folded = text.lower()  # U+212A KELVIN SIGN -> k; only U+0130 lower-cases to two characters
    if len(folded) != len(text):  # pragma: no cover - every such character is translated above
        raise AssertionError("case folding changed the length of the text")
    return folded


def reach(regex: re.Pattern) -> int:
    """How far past the start of a match the pattern may look: its longest match plus every
    look-ahead's longest, plus one (for a look-around at the end)."""
    parsed = _parser.parse(regex.pattern, regex.flags)
    longest = parsed.getwidth()[1]
    total = longest + _lookaheads(parsed.data) + 1
    if longest >= C.MAXREPEAT or total >= C.MAXREPEAT:
        raise ValueError(f"pattern {regex.pattern[:60]!r}… has no bounded length and cannot be gated")
    return total


def longest(regex: re.Pattern) -> int:
    """The longest match: the `lead` of an anchor that may stand anywhere in a match."""
    return reach(regex)


def _lookaheads(items) -> int:
    total = 0
    for op, av in items:
        if op in (C.ASSERT, C.ASSERT_NOT):
            direction, sub = av
            if direction == 1:
                total += sub.getwidth()[1]
            total += _lookaheads(sub.data)
        elif op is C.SUBPATTERN:
            total += _lookaheads(av[3].data)
        elif op is C.ATOMIC_GROUP:
            total += _lookaheads(av.data)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            inner = _lookaheads(av[2].data)
            total += inner  # one look-ahead per repetition, each from where it stands: the largest counts
        elif op is C.BRANCH:
            total += max((_lookaheads(alt.data) for alt in av[1]), default=0)
    return total


def prefixes(regex: re.Pattern) -> set[str]:
    """Folded literal strings one of which starts every match (zero-width assertions skipped)."""
    found, _complete = _starts(_parser.parse(regex.pattern, regex.flags).data)
    if not found or any(len(p) < 2 for p in found):
        raise ValueError(f"pattern {regex.pattern[:60]!r}… has no literal prefixes of two characters or more")
    return found


def _starts(items) -> tuple[set[str], bool]:
    out = {""}
    items = list(items)
    for i, (op, av) in enumerate(items):
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue
        if op is C.LITERAL:
            ch = chr(av)
            if not ch.isascii() and (ch.lower() != ch or ch.upper() != ch):
                return {""}, False  # a cased character beyond ASCII: folds are not one-to-one
            out = {p + ch.lower() for p in out}
            continue
        if op is C.SUBPATTERN:
            sub, complete = _starts(av[3].data)
        elif op is C.BRANCH:
            sub, complete = set(), True
            for alt in av[1]:
                s, c = _starts(alt.data)
                sub |= s
                complete = complete and c
        elif op is C.MAX_REPEAT and av[0] == 0 and av[1] == 1:  # an optional part: with it, or without
            with_it, _ = _starts(av[2].data)
            without, complete = _starts(items[i + 1 :])
            return {p + s for p in out for s in with_it | without}, False
        else:  # a class, a repeat: the prefixes end here
            return out, False
        out = {p + s for p in out for s in sub}
        if not complete:
            return out, False
    return out, True


class Gate:
    """A compiled pattern searched only around its anchors (see the module docstring)."""

    def __init__(self, regex: re.Pattern, leads: dict[str, int]):
        self.regex, self.leads, self.reach = regex, leads, reach(regex)
        self.anchors, self.lead = frozenset(leads), max(leads.values())
        self.pattern, self.groupindex = regex.pattern, regex.groupindex

    def windows(self, text: str) -> Iterator[tuple[int, int]]:
        """Merged [lo, hi) windows that hold every match."""
        start = end = -1
        for lo, a in hits(text).get(self, ()):
            lo, hi = max(0, lo), min(len(text), a + self.reach)
            if lo > end:
                if end > start:
                    yield start, end
                start = lo
            end = max(end, hi)
        if end > start:
            yield start, end

    def finditer(self, text: str) -> Iterator[re.Match]:
        """What self.regex.finditer(text) yields."""
        last = 0
        for lo, hi in self.windows(text):
            for m in self.regex.finditer(text, max(lo, last), hi):
                yield m
                last = m.end()

    def search(self, text: str) -> re.Match | None:
        return next(self.finditer(text), None)


_GATES: list[Gate] = []


def gate(regex: re.Pattern, anchors=None, lead: int = 0) -> Gate:
    """`regex` searched only in windows around its anchors: folded strings one of which every
    match holds, starting at most `lead` characters after the match's start. `anchors` may also
    map each anchor to its own lead (a colon that ends a label stands further into a match than
    a word that starts one). Without anchors: the pattern's literal prefixes (lead 0)."""
    if anchors is None:
        anchors = prefixes(regex)
    leads: dict[str, int] = {}
    for a in anchors:
        word = fold(a)
        leads[word] = max(leads.get(word, 0), anchors[a] if isinstance(anchors, dict) else lead)
    g = Gate(regex, leads)
    _GATES.append(g)
    automaton.cache_clear()
    return g


@lru_cache(maxsize=1)
def automaton():
    """One Aho–Corasick automaton over every gated pattern's anchors (built once a process)."""
    import ahocorasick

    by_word: dict[str, list[Gate]] = {}
    for g in _GATES:
        for word in g.anchors:
            by_word.setdefault(word, []).append(g)
    auto = ahocorasick.Automaton()
    for word, gates in by_word.items():
        auto.add_word(word, (word, tuple(gates)))
    auto.make_automaton()
    return auto


@lru_cache(maxsize=1)
def hits(text: str) -> dict[Gate, list[tuple[int, int]]]:
    """Where each gated pattern's anchors start in `text` (a), as (a - the anchor's lead, a), in
    order: one pass for all of them (kept for the last text, which the detectors of one call share)."""
    out: dict[Gate, list[tuple[int, int]]] = {}
    for end, (word, gates) in automaton().iter(fold(text)):
        a = end - len(word) + 1
        for g in gates:
            out.setdefault(g, []).append((a - g.leads[word], a))
    for positions in out.values():
        positions.sort()
    return out
