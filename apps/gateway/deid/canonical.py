"""The canonical view of a text that the detectors scan, with a map back to the caller's offsets.

An identifier must be found however it is spelled, so before detection every character is folded
to one spelling:

- every Unicode decimal digit (category Nd: Arabic-Indic ٠١٢, Extended Arabic-Indic ۰۱۲,
  Devanagari ०१२, Bengali, Thai ๐๑๒, Khmer, Myanmar, full-width ０１２, mathematical 𝟎𝟏𝟐 …) becomes
  its ASCII digit;
- invisible code points are removed: every format character (Cf: zero-width space and joiners,
  word joiner, soft hyphen, bidirectional marks and isolates, BOM, Arabic number signs, tag
  characters U+E0000–E007F …) and every other default-ignorable code point (variation selectors
  U+FE00–FE0F and U+E0100–E01EF, Mongolian free variation selectors U+180B–180F, combining
  grapheme joiner U+034F, Hangul fillers U+115F U+1160 U+3164 U+FFA0, Khmer inherent vowels
  U+17B4 U+17B5, the reserved U+FFF0–FFF8 and U+E0000–E0FFF);
- every dash (category Pd: hyphen, non-breaking hyphen, figure/en/em dash, horizontal bar, small
  and full-width hyphen-minus, wave dash …) and the minus signs U+2212, U+02D7, U+2796, U+2043
  become "-";
- every non-ASCII space (NBSP, narrow and figure spaces, ideographic space, Ogham space, U+0085,
  the line and paragraph separators U+2028/U+2029, braille blank U+2800) becomes " ";
- everything else is NFKC of the character alone (full-width letters and punctuation become ASCII,
  ligatures are spelled out, circled and superscript digits become digits).

`canonicalise(text)` does this in one pass: a compiled character class finds the characters that
change (ASCII and already-canonical text cost one C-level scan), and the offset map records only
the edits, so a span found in the canonical text is mapped back with two binary searches and the
replacement covers the original characters, invisible ones inside the identifier included.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass

from . import fastre

# Default_Ignorable_Code_Point (Unicode 15 DerivedCoreProperties) together with every Cf character;
# a test checks that every Cf character of the running Python's Unicode database is in here.
_REMOVE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Category Pd (checked by a test) and the minus signs.
_DASHES = (
    "\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u2e5d"
    "\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead"
    "\u2212\u02d7\u2796\u2043"
)
_EXTRA_SPACES = "\u2800"
_NFKC_BLOCK = 128
# Nothing above plane 2 has a decimal digit, a space or an NFKC folding (plane 14 is removed).
_SCAN_END = 0x30000


def _build_table() -> dict[int, str]:
    """Every non-ASCII code point whose canonical spelling differs from itself -> that spelling."""
    table: dict[int, str] = {}
    for lo, hi in _REMOVE_RANGES:
        for cp in range(lo, hi + 1):
            table[cp] = ""
    everything = "".join(map(chr, range(0x80, 0xD800))) + "".join(map(chr, range(0xE000, _SCAN_END)))
    for m in re.finditer(r"\d", everything):  # \d in a str pattern is exactly category Nd
        table.setdefault(ord(m.group()), str(unicodedata.decimal(m.group())))
    for m in re.finditer(r"\s", everything):
        table.setdefault(ord(m.group()), " ")
    for ch in _DASHES:
        table.setdefault(ord(ch), "-")
    for ch in _EXTRA_SPACES:
        table.setdefault(ord(ch), " ")
    nfkc: dict[int, str] = {}
    for lo in range(0, len(everything), _NFKC_BLOCK):
        block = everything[lo : lo + _NFKC_BLOCK]
        if unicodedata.is_normalized("NFKC", block):
            continue
        for ch in block:
            if ord(ch) not in table:
                folded = unicodedata.normalize("NFKC", ch)
                if folded != ch:
                    nfkc[ord(ch)] = folded
    # NFKC can yield characters that fold further (U+FE58 SMALL EM DASH -> U+2014 -> "-").
    for cp, folded in nfkc.items():
        table[cp] = folded.translate(table)
    return table


def _char_class(code_points, astral: bool) -> str:
    """A character class of the BMP code points, plus every astral one when `astral` (re only has a
    fast bitmap for classes within the BMP; astral characters are looked up in TABLE instead)."""
    ranges: list[list[int]] = []
    for cp in sorted(cp for cp in code_points if cp < 0x10000):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    parts = [re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges]
    if astral:
        parts.append("\U00010000-\U0010ffff")
    return "[" + "".join(parts) + "]"


TABLE = _build_table()
# Runs of characters that may change; of characters whose replacement is not one character.
# (fastre: the class spans the astral planes, so `re` finds no start hint of its own and enters the matcher at
# every character; with the hint it skips, in C, the characters that cannot change)
_CHANGING_RUN = fastre.compile(_char_class(TABLE, astral=True) + "+")
_RESIZING = re.compile(_char_class([cp for cp, rep in TABLE.items() if len(rep) != 1], astral=True))


@dataclass(slots=True)
class Canonical:
    """`text` is what the detectors scan. Edit k replaced original character `ostarts[k]` by
    canonical characters [cstarts[k], cends[k]) (an empty range for a removed character); between
    edits the two texts run in step. No edits: the canonical text is the original."""

    text: str
    cstarts: list[int] | None = None
    cends: list[int] | None = None
    ostarts: list[int] | None = None

    @property
    def changed(self) -> bool:
        return self.cstarts is not None

    def _char(self, p: int) -> tuple[int, int]:
        """The original [start, end) of canonical character p."""
        k = bisect_right(self.cstarts, p) - 1
        if k < 0:
            return p, p + 1
        if p < self.cends[k]:  # inside a replacement: the whole original character
            o = self.ostarts[k]
            return o, o + 1
        o = p + self.ostarts[k] + 1 - self.cends[k]
        return o, o + 1

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The original slice that canonical [start, end) (end > start) came from: from the first
        character's start to the last one's end, so removed characters inside are covered."""
        if self.cstarts is None:
            return start, end
        return self._char(start)[0], self._char(end - 1)[1]

    def originals(self, spans) -> list[tuple[int, int]]:
        """`original(s.start, s.end)` for each of `spans` (end > start), in one loop: the same
        arithmetic as _char, inlined (a detector pass maps tens of thousands of spans per MiB)."""
        cstarts, cends, ostarts = self.cstarts, self.cends, self.ostarts
        if cstarts is None:
            return [(s.start, s.end) for s in spans]
        out = []
        for s in spans:
            p = s.start
            k = bisect_right(cstarts, p) - 1
            if k < 0:
                a = p
            elif p < cends[k]:
                a = ostarts[k]
            else:
                a = p + ostarts[k] + 1 - cends[k]
            p = s.end - 1
            k = bisect_right(cstarts, p) - 1
            if k < 0:
                b = p + 1
            elif p < cends[k]:
                b = ostarts[k] + 1
            else:
                b = p + ostarts[k] + 2 - cends[k]
            out.append((a, b))
        return out


def canonicalise(text: str) -> Canonical:
    if text.isascii():
        return Canonical(text)
    pieces: list[str] = []
    cstarts: list[int] = []
    cends: list[int] = []
    ostarts: list[int] = []
    pos = delta = 0  # delta: canonical position minus original position, before `pos`
    table = TABLE
    for m in _CHANGING_RUN.finditer(text):
        i, j = m.span()
        run = m.group()
        rep = run.translate(table)
        if rep == run:
            continue  # astral characters that do not change
        pieces.append(text[pos:i])
        pieces.append(rep)
        pos = j
        if len(rep) == j - i and (j - i == 1 or _RESIZING.search(run) is None):
            continue  # one for one: offsets run in step
        for k, ch in enumerate(run):
            r = table.get(ord(ch), ch)
            if len(r) != 1:
                c = i + k + delta
                cstarts.append(c)
                cends.append(c + len(r))
                ostarts.append(i + k)
                delta += len(r) - 1
    if not pieces:
        return Canonical(text)
    pieces.append(text[pos:])
    return Canonical("".join(pieces), cstarts or None, cends or None, ostarts or None)


def canonical_text(text: str) -> str:
    """The canonical spelling alone (no offsets): for comparisons, e.g. in tests and audits."""
    return text if text.isascii() else text.translate(TABLE)
