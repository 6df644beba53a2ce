"""Screening of a model's answer: identifiers the model echoes or invents, found by the same engine
as the prompt's (detect), replaced (`redact`) or only counted (`alert`) — streaming included.

    screen_text(text, mode, allowed=(), types=None) -> Result(text, found)
    s = AnswerScreen(mode, allowed=(), types=None); s.feed(delta) -> str ...; s.finish() -> str; s.found

What is not an identifier of the answer:
- the de-identifier's own placeholders, which the model saw in place of the caller's identifiers and
  may repeat: "[NAME]", pseudonym tokens "[NAME-1a2b3c4d]", Safe Harbor's "90+" and "021**", masked
  runs of stars ("***-**-****"); a test screens the output of every mode over the dev corpus;
- `allowed`: exact strings the gateway itself put in the prompt (the surrogates of the `surrogate`
  mode, re-identified after this screen for the callers allowed to see the originals), where they
  stand as whole words: a surrogate age "96" inside "555-0196" is part of a phone number.
Both are blanked (same length, spaces) in the text the detectors scan, so that neither they nor a
cue before them ("MRN: [MRN-61f3c0cc]") makes a span.

Streaming. Text once sent cannot be taken back, and an identifier can be split across deltas
("555-01" + "43") or be recognised only from what follows it ("刘洋" + "，男"). So the screen keeps
the answer's unreleased tail (`pending`) and releases a prefix of it only when

1. at least `hold` characters (64, or the longest allowed value + 1 if longer) follow the cut:
   whatever is released was scanned with that much right context, more than any cue or identifier
   of the engine needs (the longest are addresses and e-mails; an identifier still growing at the
   end of the text — a long URL — is a span that reaches the cut, see 3);
2. the cut lies on a boundary: not between two letters or digits of an alphabetic script (between
   two Han characters is a boundary: Chinese has no spaces);
3. no identifier found in `context + pending` spans the cut (the cut moves back to its start).
The scan sees the last `context` (96) characters already released as left context, so cues such as
"MRN:" or "患者" before a cut still count. Detection runs only after `step` (16) new characters,
not per token: one detect() over at most ~300 characters per 16 characters of answer.

Worst-case hold-back: normally `hold + step` characters (80, about 20 tokens), plus the rest of a
word. A tail with no safe cut (a run of letters or digits, or an identifier still growing) is held
until `max_pending` (512) characters, then cut regardless at `len - hold`; an identifier split by
that forced cut is replaced in both parts, counted once (its rest, when the bounded left context
no longer shows the detectors its start, runs to the next whitespace). `finish()` releases everything screened
with no right context left to wait for. In `alert` mode the answer is not changed, so deltas pass
at once (no hold-back) and the screen only counts.

Nothing is logged and no value is kept beyond the screen's own window (`context` + `pending`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from . import safeharbor
from .engine import DEFAULT_MAX_LENGTH, Result, detect
from .spans import ALL_TYPES, InvalidMode, Span

OFF, REDACT, ALERT = "off", "redact", "alert"
SCREEN_MODES = (OFF, REDACT, ALERT)

HOLD = 64
CONTEXT = 96
STEP = 16
MAX_PENDING = 512

# redact's "[NAME]" and Safe Harbor's "90+" / "021**", pseudonymise's "[NAME-1a2b3c4d]", mask's stars.
_PLACEHOLDER = re.compile(
    r"\[(?:" + "|".join(ALL_TYPES) + r")(?:-[0-9a-f]{8})?\]"
    r"|(?<![0-9])90\+"
    r"|(?<![0-9])[0-9]{3}\*\*(?![0-9*])"
    r"|\*+(?:[-:.@/() ]{0,3}\*+)*"
)


_SPACE = re.compile(r"\s")


def _han(ch: str) -> bool:
    o = ord(ch)
    return 0x2E80 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3FFFF or 0xAC00 <= o <= 0xD7AF


def _joined(ch: str) -> bool:
    """A character that, next to another such, is inside a word or number."""
    return ch.isalnum() and not _han(ch)


def _replacement(kind: str, value: str) -> str:
    return safeharbor.redacted(kind, value) or f"[{kind}]"


def check_mode(mode: str) -> str:
    if mode not in SCREEN_MODES:
        raise InvalidMode(f"unknown answer screening mode {mode!r}; use one of {', '.join(SCREEN_MODES)}")
    return mode


class AnswerScreen:
    """One answer's screen, fed the model's deltas in order. `found` counts the identifiers found
    so far by type (released ones only, never values)."""

    def __init__(
        self,
        mode: str,
        allowed: Iterable[str] = (),
        types=None,
        *,
        hold: int = HOLD,
        context: int = CONTEXT,
        step: int = STEP,
        max_pending: int = MAX_PENDING,
    ):
        self.mode = check_mode(mode)
        self.allowed = tuple(sorted({a for a in allowed if a}, key=len, reverse=True))
        self.types = types
        self.hold = max(hold, max((len(a) for a in self.allowed), default=0) + 1)
        self.context = context
        self.step = step
        self.max_pending = max(max_pending, self.hold + step)
        self.found: dict[str, int] = {}
        self._ctx = ""  # the last `context` characters released (as the model wrote them)
        self._pending = ""
        self._scanned_at = 0  # len(pending) at the last scan that released nothing
        self._carry: str | None = None  # the type of an identifier split by a forced cut
        self._done = False
        if types is not None:
            detect("", types)  # unknown types: the error now, not at the first scan

    # -- streaming -------------------------------------------------------------------------------

    def feed(self, delta: str) -> str:
        """The text that can be sent now (possibly empty)."""
        if self._done:
            raise ValueError("the answer screen is finished")
        if self.mode == OFF or not delta:
            return delta
        self._pending += delta
        released = ""
        n = len(self._pending)
        if (n >= self.hold + self.step and n - self._scanned_at >= self.step) or n > self.max_pending:
            released = self._release(final=False)
        return delta if self.mode == ALERT else released

    def finish(self) -> str:
        """The rest of the answer, screened to the end."""
        if self._done:
            return ""
        self._done = True
        if self.mode == OFF:
            return ""
        released = self._release(final=True) if self._pending else ""
        return "" if self.mode == ALERT else released

    @property
    def held(self) -> int:
        """Characters received and not yet released (0 in alert mode, whose deltas pass at once)."""
        return 0 if self.mode == ALERT else len(self._pending)

    # -- scanning --------------------------------------------------------------------------------

    def _blanked(self, text: str) -> str:
        """`text` with placeholders and allowed values turned into spaces (same offsets)."""
        chars = None
        for match in _PLACEHOLDER.finditer(text):
            chars = chars or list(text)
            chars[match.start() : match.end()] = " " * (match.end() - match.start())
        for value in self.allowed:
            start = text.find(value)
            while start != -1:
                end = start + len(value)
                # only where it stands as a whole word: a short surrogate ("96", "Lee") inside a longer
                # run of letters or digits is part of something else (a phone number, an SSN, a name)
                glued = (start > 0 and _joined(value[0]) and _joined(text[start - 1])) or (
                    end < len(text) and _joined(value[-1]) and _joined(text[end])
                )
                if not glued:
                    chars = chars or list(text)
                    chars[start:end] = " " * len(value)
                start = text.find(value, start + 1 if glued else end)
        return text if chars is None else "".join(chars)

    def _cut(self, spans, base: int) -> int:
        pending = self._pending
        n = len(pending)
        cut = n - self.hold
        while cut > 0 and _joined(pending[cut - 1]) and _joined(pending[cut]):
            cut -= 1
        for span in reversed(spans):  # no identifier across the cut
            start, end = span.start - base, span.end - base
            if start < cut < end:
                cut = max(start, 0)
        if n - cut > self.max_pending:  # no safe cut for too long: cut anyway, split spans are replaced
            cut = n - self.hold
        return cut

    def _release(self, *, final: bool) -> str:
        text = self._ctx + self._pending
        base = len(self._ctx)
        spans = detect(self._blanked(text), self.types, max_length=max(DEFAULT_MAX_LENGTH, len(text)))
        if self._carry and not any(s.start < base < s.end for s in spans):
            # A forced cut split an identifier whose start the detectors no longer see (left context
            # is bounded): its rest runs to the next whitespace, and is replaced too (fail closed).
            space = _SPACE.search(self._pending)
            end = base + (space.start() if space else len(self._pending))
            spans = [Span(base - 1, end, self._carry)] + [s for s in spans if s.start >= end]
        cut = len(self._pending) if final else self._cut(spans, base)
        if cut <= 0:
            self._scanned_at = len(self._pending)
            return ""
        pending = self._pending
        pieces: list[str] = []
        pos = 0
        carry = None
        for span in spans:
            start, end = span.start - base, span.end - base
            if end <= 0:
                continue
            if start >= cut:
                break
            start, stop = max(start, 0), min(end, cut)
            if not (span.start < base and self._carry):  # the rest of one counted before the forced cut
                self.found[span.type] = self.found.get(span.type, 0) + 1
            pieces.append(pending[pos:start])
            whole = pending[start:stop] if span.start >= base and end <= cut else ""
            pieces.append(_replacement(span.type, whole) if whole else f"[{span.type}]")
            pos = stop
            carry = span.type if end > cut else None
        pieces.append(pending[pos:cut])
        self._carry = carry
        self._ctx = (self._ctx + pending[:cut])[-self.context :] if self.context else ""
        self._pending = pending[cut:]
        self._scanned_at = 0
        return "".join(pieces)


def screen_text(text: str, mode: str, allowed: Iterable[str] = (), types=None) -> Result:
    """A whole answer screened at once: the text to send (unchanged unless `redact`) and the counts."""
    screen = AnswerScreen(mode, allowed, types)
    if screen.mode == OFF or not text:
        return Result(text, {})
    screen._pending = text
    out = screen._release(final=True)
    screen._done = True
    return Result(text if screen.mode == ALERT else out, dict(screen.found))
