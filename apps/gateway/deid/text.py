"""Normalisation for detection, with a map back to the caller's offsets.

Detection runs on an NFKC form of the text (full-width digits and letters become ASCII, full-width
punctuation becomes ASCII punctuation) with invisible format characters (zero-width spaces, joiners,
bidirectional marks, soft hyphens, BOM) removed, so that "１３８\u200b0013 8000" is seen as a
mobile number. Replacements are applied to the original text through the offset map, so what the
caller gets back keeps its own characters everywhere outside the identifiers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Unicode category Cf characters that appear inside text to hide or reorder it.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")


@dataclass(slots=True)
class Normalised:
    """`text` is what detectors scan; `starts[i]`/`ends[i]` give the original slice for text[i]."""

    text: str
    starts: list[int] | None = None  # None: identity mapping
    ends: list[int] | None = None

    def original(self, start: int, end: int) -> tuple[int, int]:
        if self.starts is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def normalise(text: str) -> Normalised:
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and not _INVISIBLE.search(text)):
        return Normalised(text)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    cache: dict[str, str] = {}
    for i, ch in enumerate(text):
        if ch < "\x80":
            out.append(ch)
            starts.append(i)
            ends.append(i + 1)
            continue
        norm = cache.get(ch)
        if norm is None:
            norm = "" if _INVISIBLE.match(ch) else unicodedata.normalize("NFKC", ch)
            cache[ch] = norm
        for piece in norm:
            out.append(piece)
            starts.append(i)
            ends.append(i + 1)
    return Normalised("".join(out), starts, ends)
