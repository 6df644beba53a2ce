"""Cue words found in one pass, so that patterns are tried only where a match can start.

Many detectors are a regular expression that cannot match without a cue word ("MRN", "member",
"病历号", "signed by", "daughter"): searched over the whole text, such a pattern is entered at every
character that could start it — under IGNORECASE, most letters. `gate(regex, anchors, lead)` wraps
the pattern: every anchor word of every gated pattern sits in one Aho–Corasick automaton, run once
over the case-folded text (`hits`), and the pattern is tried (`regex.match`) only at the positions
from `lead` characters before each anchor to the anchor itself.

It finds exactly what `regex.finditer(text)` finds, provided that every match of the pattern holds
one of its anchors (case-insensitively) starting at most `lead` characters after the match starts
— stated next to each gated pattern, and checked on the corpora, the adversarial spellings and a
fuzz by tests/gateway/test_deid_cues.py against the ungated pattern. Why it is exact: finditer
yields, from where its last match ended, the leftmost position at which the pattern matches, and
what it matches there; a match that starts at s holds an anchor at a with s in [a - lead, a], so
every position where a match can start is among those tried, in order, each from where the last
match ended. `regex.match(text, s)` sees the whole text (look-behinds before s, look-aheads to the
end), so it matches at s what the whole-text search does. A pattern that can match the empty string
cannot be gated (finditer's rule after an empty match is not reproduced; ValueError at import).

`word_start`: every anchor that begins with a word character stands, in every match, right after a
\b (the pattern says so), so an anchor found inside a word ("son" in "person") is no start.

On a long text, a gated pattern that the Hyperscan pass serves (prefilter.py) is tried at the
starts that pass reports instead (also every position where a match can start), or searched whole
where they are dense; the anchors' automaton then holds only the gates it does not serve.

When anchors are not given, they are the literal prefixes of the pattern's alternatives, derived
from the parsed pattern (lead 0); a pattern for which no such prefixes exist cannot be gated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from re import _constants as C  # noqa: N812 - sre opcodes
from re import _parser

from . import prefilter

_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})  # re folds these to ASCII letters
_RARE = re.compile("[\u0130\u0131\u017f]")


@lru_cache(maxsize=2)
def fold(text: str) -> str:
    """Lower-case, one character for one (offsets unchanged): a match of a pattern under
    IGNORECASE reads, in the folded text, as its anchor in lower case (kept for the last texts:
    the anchors' pass and the URL starts of one call share it)."""
    if _RARE.search(text):
        text = text.translate(_FOLD)
    folded = text.lower()  # U+212A KELVIN SIGN -> k; only U+0130 lower-cases to two characters
    if len(folded) != len(text):  # pragma: no cover - every such character is translated above
        raise AssertionError("case folding changed the length of the text")
    return folded


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
    """A compiled pattern tried only where its anchors say a match can start (module docstring)."""

    def __init__(self, regex: re.Pattern, leads: dict[str, int], word_start: bool = False):
        if _parser.parse(regex.pattern, regex.flags).getwidth()[0] == 0:
            raise ValueError(f"pattern {regex.pattern[:60]!r}… can match the empty string and cannot be gated")
        self.regex, self.leads, self.word_start = regex, leads, word_start
        self.anchors, self.lead = frozenset(leads), max(leads.values())
        self.pattern, self.groupindex = regex.pattern, regex.groupindex

    def starts(self, text: str) -> Iterator[int]:
        """Every position where a match can start, in order, each once."""
        free = 0
        found = hits(text)
        if self not in _searched_by_anchors(text):  # left out of the pass of this text: all anchors
            found = _hits(text, _ALL)
        for lo, a in found.get(self, ()):
            yield from range(max(lo, free), a + 1)
            free = max(free, a + 1)

    def finditer(self, text: str) -> Iterator[re.Match]:
        """What self.regex.finditer(text) yields."""
        if len(text) >= prefilter.MIN_LENGTH and isinstance(self.regex, prefilter.Prefiltered):
            starts = prefilter.starts(self.regex, text)  # the Hyperscan pass, where it has this pattern
            if starts is not None:
                yield from prefilter.confirm(self.regex.match, text, starts)
                return
            if prefilter.serves(self.regex):  # dense in this text, or a text Hyperscan cannot take
                yield from self.regex.regex.finditer(text)
                return
        if len(hits(text).get(self, ())) * DENSE > len(text):
            yield from self.regex.finditer(text)  # anchors everywhere: one scan in C costs less
            return
        last = 0
        match = self.regex.match
        for s in self.starts(text):
            if s >= last:
                m = match(text, s)
                if m:
                    yield m
                    last = m.end()

    def search(self, text: str) -> re.Match | None:
        return next(self.finditer(text), None)


_GATES: list[Gate] = []


class _Every:
    """Stands for the set of every gate (cheap to pass and to hash): the full automaton."""

    def __contains__(self, gate) -> bool:
        return True

    def __bool__(self) -> bool:
        return bool(_GATES)


_ALL = _Every()
# More than one anchor every DENSE characters (text written to be slow, "pt pt pt …"): the pattern is
# searched over the whole text instead, which finds the same and costs at most one scan.
DENSE = 48


def gate(regex: re.Pattern, anchors=None, lead: int = 0, word_start: bool = False) -> Gate:
    """`regex` tried only where its anchors say a match can start: folded strings one of which every
    match holds, starting at most `lead` characters after the match's start. `anchors` may also
    map each anchor to its own lead (a colon that ends a label stands further into a match than
    a word that starts one). Without anchors: the pattern's literal prefixes (lead 0).
    `word_start`: the anchor that every match holds begins a word (the pattern puts a \\b before
    it), so an anchor found inside a word ("son" in "person") is no start."""
    if anchors is None:
        anchors = prefixes(regex)
    leads: dict[str, int] = {}
    for a in anchors:
        word = fold(a)
        leads[word] = max(leads.get(word, 0), anchors[a] if isinstance(anchors, dict) else lead)
    g = Gate(regex, leads, word_start)
    _GATES.append(g)
    automaton.cache_clear()
    return g


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _searched_by_anchors(text: str) -> frozenset[Gate]:
    """The gates that look for their anchors in `text`: on a long text, those the Hyperscan pass
    does not serve (prefilter.py); on a short one, all."""
    if len(text) >= prefilter.MIN_LENGTH:
        left = frozenset(g for g in _GATES if not prefilter.serves(g.regex))
        return _ALL if len(left) == len(_GATES) else left
    return _ALL


@lru_cache(maxsize=4)
def automaton(gates: frozenset[Gate] | None = None):
    """One Aho–Corasick automaton over the anchors of `gates` (every gated pattern's by default;
    built once a process for each set)."""
    import ahocorasick

    by_word: dict[str, list[Gate]] = {}
    for g in _GATES if gates is None else [g for g in _GATES if g in gates]:
        for word in g.anchors:
            by_word.setdefault(word, []).append(g)
    auto = ahocorasick.Automaton()
    for word, gates in by_word.items():
        auto.add_word(word, (word, tuple(gates), _word_char(word[0])))
    auto.make_automaton()
    return auto


def hits(text: str) -> dict[Gate, list[tuple[int, int]]]:
    """Where each gated pattern's anchors start in `text` (a), as (a - the anchor's lead, a), in
    order: one pass for all of them (kept for the last text, which the detectors of one call share).
    On a long text, only the gates that the Hyperscan pass does not serve."""
    return _hits(text, _ALL if len(text) < prefilter.MIN_LENGTH else _searched_by_anchors(text))


@lru_cache(maxsize=2)
def _hits(text: str, members) -> dict[Gate, list[tuple[int, int]]]:
    out: dict[Gate, list[tuple[int, int]]] = {}
    if not members:
        return out
    for end, (word, gates, wordlike) in automaton(None if members is _ALL else members).iter(fold(text)):
        a = end - len(word) + 1
        # inside a word: \b before the anchor fails (re's word characters: alphanumerics and "_")
        inside = wordlike and a > 0 and (text[a - 1].isalnum() or text[a - 1] == "_")
        for g in gates:
            if not (inside and g.word_start):
                out.setdefault(g, []).append((a - g.leads[word], a))
    for positions in out.values():
        positions.sort()
    return out


hits.cache_clear = _hits.cache_clear  # what the tests clear between texts
