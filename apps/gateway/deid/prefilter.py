"""One Hyperscan pass over a long text that tells every pattern where a match can start.

On a long text the de-identifier's cost is about a hundred whole-text searches, each entering
Python's `re` matcher at every character that can begin its pattern (5–15 ms per MiB each). Here
every such pattern is also written, once, as a Hyperscan expression that matches a *superset* of
what it matches, and one Hyperscan scan of the text (all expressions together, in C, at hundreds
of MB/s) reports where each can start; `finditer` then calls the pattern's own `match` only at
those positions — in the way cues.py's gates do — and so yields exactly what `finditer` over the
whole text yields (tests/gateway/test_deid_prefilter.py compares them on the corpora, the
adversarial spellings and a fuzz).

The superset, from the parsed pattern (`_Writer`):

- look-arounds, anchors and word boundaries consume nothing and are dropped: a match of the
  pattern still matches without them;
- a character class keeps its ASCII members exactly; beyond ASCII it keeps an explicit
  uncased range or literal (Han characters …) and otherwise admits every non-ASCII character
  (categories such as `\\d`/`\\w`/`\\s` under Unicode, negated classes, and any case-insensitive
  class, since `re` folds ſ, K, İ, ı to ASCII letters and cased letters beyond ASCII to others);
  an ASCII letter under IGNORECASE admits both cases and the non-ASCII characters that fold to it;
- a back-reference is written as the group it refers to; an atomic group or possessive/lazy
  repeat as a plain one; a conditional group as both of its branches;
- only a prefix is needed (a match's start is the start of a match of any prefix of the
  pattern): the expression stops after a bounded amount of pattern, and a repetition bounded
  above by more than a few copies is written without the upper bound (a wider set, and far
  cheaper for Hyperscan to compile).

Hyperscan reports where matches *end*; to learn every start, the expressions are written
reversed and run over the reversed text, so that each reported end is a start of the original
(every start, not only the leftmost one per end). UTF-8 byte offsets are turned into character
offsets with one cumulative count of continuation bytes.

A pattern is entered in the Hyperscan database the first time it is searched over a long text
(`warm()` does this for every detector at a server's start), and left out again if its starts
turn out dense (more than one every DENSE characters: the whole-text search costs less then).
When Hyperscan is not installed, the text is short, or it cannot be encoded (a lone surrogate),
every search is the pattern's own.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from functools import lru_cache
from re import _constants as C  # noqa: N812 - sre opcodes
from re import _parser

try:
    import hyperscan as _hs
except ImportError:  # pragma: no cover - the plain searches are always right
    _hs = None

try:
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None

# Below this many characters the pattern's own search is used (one scan costs less than the pass).
MIN_LENGTH = 4096
# More than one start every DENSE characters: the pattern is searched over the whole text instead.
DENSE = 48
# How much of a pattern is written (in items of its parsed form, nested ones counted) before the
# expression stops: enough to be selective, small enough to compile fast.
_PREFIX_ITEMS = 12
# A repetition with more than this many copies allowed is written with no upper bound.
_SMALL_REPEAT = 20

_NON_ASCII = "\\x{80}-\\x{10ffff}"
_LETTERS = "A-Za-z"
_ASCII_FOLDS = {"i": (0x130, 0x131), "k": (0x212A,), "s": (0x17F,)}
_CATEGORY_TESTS = {
    "DIGIT": str.isdigit,
    "SPACE": str.isspace,
    "WORD": lambda c: c.isalnum() or c == "_",
}


class Unsupported(Exception):
    """The pattern holds something this writer does not handle: it is not prefiltered."""


def _esc(cp: int) -> str:
    return f"\\x{{{cp:x}}}"


def _cased(ch: str) -> bool:
    return ch.lower() != ch or ch.upper() != ch


class _Class:
    """A character class being built: exact ASCII members, explicit ranges beyond, or all beyond."""

    def __init__(self):
        self.ascii: set[int] = set()
        self.beyond: list[tuple[int, int]] = []
        self.all_beyond = False

    def add_ascii(self, cp: int, ignorecase: bool) -> None:
        ch = chr(cp)
        self.ascii.add(cp)
        if ignorecase and _cased(ch):
            low = ch.lower()
            self.ascii.update((ord(low), ord(low.upper())))
            for f in _ASCII_FOLDS.get(low, ()):
                self.beyond.append((f, f))

    def add_beyond(self, lo: int, hi: int, ignorecase: bool) -> None:
        if ignorecase:  # a cased character beyond ASCII may fold to an ASCII letter or to others
            self.all_beyond = True
            self.ascii.update(range(ord("A"), ord("Z") + 1))
            self.ascii.update(range(ord("a"), ord("z") + 1))
        else:
            self.beyond.append((lo, hi))

    def write(self) -> str:
        parts = [_esc(c) for c in sorted(self.ascii)]
        if self.all_beyond:
            parts.append(_NON_ASCII)
        else:
            parts.extend(_esc(lo) if lo == hi else f"{_esc(lo)}-{_esc(hi)}" for lo, hi in sorted(set(self.beyond)))
        if not parts:
            raise Unsupported("empty class")
        return "[" + "".join(parts) + "]"


def _category(name: str) -> tuple[set[int], bool]:
    """(ASCII members, negated) of an sre category."""
    negated = "_NOT_" in name
    base = name.rsplit("_", 1)[-1]
    test = _CATEGORY_TESTS.get(base)
    if test is None or not ("UNI" in name or name.startswith("CATEGORY_")):
        raise Unsupported(name)
    members = {c for c in range(128) if test(chr(c))}
    if negated:
        members = set(range(128)) - members
    return members, negated


def _in(items, ignorecase: bool) -> str:
    cls = _Class()
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            if av < 0x80:
                cls.add_ascii(av, ignorecase)
            elif ignorecase and _cased(chr(av)):
                cls.add_beyond(av, av, True)
            else:
                cls.add_beyond(av, av, False)
        elif op is C.RANGE:
            lo, hi = av
            for cp in range(lo, min(hi, 0x7F) + 1):
                cls.add_ascii(cp, ignorecase)
            if hi >= 0x80:
                cls.add_beyond(max(lo, 0x80), hi, ignorecase)
        elif op is C.CATEGORY:
            members, _negated = _category(str(av))
            cls.ascii |= members
            cls.all_beyond = True  # whatever the category holds beyond ASCII, admitted
        else:
            raise Unsupported(str(op))
    if negate:
        # every character not surely excluded: the ASCII non-members, and everything beyond ASCII
        # (a negated class excludes only what it lists, and its ASCII part is exact)
        if ignorecase:
            for cp in list(cls.ascii):
                if _cased(chr(cp)):
                    cls.ascii.update((ord(chr(cp).lower()), ord(chr(cp).upper())))
        out = _Class()
        out.ascii = set(range(128)) - cls.ascii
        out.all_beyond = True
        return out.write()
    return cls.write()


def _literal(cp: int, ignorecase: bool) -> str:
    if ignorecase and _cased(chr(cp)):
        return _in([(C.LITERAL, cp)], True)
    return _esc(cp)


class _Writer:
    """Writes a parsed pattern's prefix as a (reversed) Hyperscan expression: see the module docstring."""

    def __init__(self):
        self.left = _PREFIX_ITEMS
        self.groups: dict[int, tuple] = {}

    def sequence(self, items, flags: int) -> tuple[list[str], bool]:
        """(pieces in forward order, complete): incomplete when the prefix stopped inside."""
        out: list[str] = []
        for op, av in items:
            if self.left <= 0:
                return out, False
            if op is not C.LITERAL:  # literals cost Hyperscan little and make the expression selective
                self.left -= 1
            try:
                piece, complete = self.item(op, av, flags)
            except Unsupported:  # the prefix so far is still a prefix of every match
                return out, False
            out.append(piece)
            if not complete:
                return out, False
        return out, True

    def item(self, op, av, flags: int) -> tuple[str, bool]:
        ignorecase = bool(flags & C.SRE_FLAG_IGNORECASE)
        if op in (C.ASSERT, C.ASSERT_NOT, C.AT):
            return "", True
        if op is C.LITERAL:
            return _literal(av, ignorecase), True
        if op is C.NOT_LITERAL:
            return _in([(C.NEGATE, None), (C.LITERAL, av)], ignorecase), True
        if op is C.ANY:
            return ("[\\x{0}-\\x{10ffff}]" if flags & C.SRE_FLAG_DOTALL else "[^\\n]"), True
        if op is C.IN:
            return _in(av, ignorecase), True
        if op is C.SUBPATTERN:
            group, add_flags, del_flags, sub = av
            inner = (flags | add_flags) & ~del_flags
            pieces, complete = self.sequence(sub.data, inner)
            if group is not None and complete:
                self.groups[group] = (sub.data, inner)
            return self.group(pieces), complete
        if op is C.ATOMIC_GROUP:
            pieces, complete = self.sequence(av.data, flags)
            return self.group(pieces), complete
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, body = av
            saved = self.left
            pieces, complete = self.sequence(body.data, flags)
            if not complete:  # a prefix of the body: a prefix of every match with one copy or more
                return (self.group(pieces) if lo else ""), False
            self.left = min(self.left, saved - 1)
            written = self.group(pieces)
            if hi == C.MAXREPEAT or hi > _SMALL_REPEAT:
                return f"{written}{{{min(lo, _SMALL_REPEAT)},}}", True
            return (f"{written}{{{lo}}}" if lo == hi else f"{written}{{{lo},{hi}}}"), True
        if op is C.BRANCH:
            alternatives = []
            complete = True
            saved = self.left
            lowest = saved
            for alt in av[1]:
                self.left = saved
                pieces, done = self.sequence(alt.data, flags)
                lowest = min(lowest, self.left)
                alternatives.append(self.group(pieces))
                complete = complete and done
            self.left = lowest
            if not complete:
                # an alternative stopped early: what follows the branch cannot be appended to it
                return "(?:" + "|".join(alternatives) + ")", False
            return "(?:" + "|".join(alternatives) + ")", True
        if op is C.GROUPREF:
            if av not in self.groups:
                raise Unsupported("reference to a group not written")
            data, inner = self.groups[av]
            pieces, complete = self.sequence(data, inner)
            return self.group(pieces), complete
        if op is C.GROUPREF_EXISTS:
            _group, yes, no = av
            saved = self.left
            a, done_a = self.sequence(yes.data, flags)
            self.left = saved
            b, done_b = self.sequence(no.data, flags) if no else ([], True)
            return f"(?:{self.group(a)}|{self.group(b)})", done_a and done_b
        raise Unsupported(str(op))

    @staticmethod
    def group(pieces: list[str]) -> str:
        return "(?:" + "".join(reversed(pieces)) + ")"


def expression(regex: re.Pattern) -> str:
    """The reversed Hyperscan expression whose matches' ends, in the reversed text, are a superset
    of the starts of `regex`'s matches in the text."""
    parsed = _parser.parse(regex.pattern, regex.flags)
    if parsed.getwidth()[0] == 0:
        raise Unsupported("can match the empty string")
    writer = _Writer()
    pieces, _complete = writer.sequence(parsed.data, parsed.state.flags | regex.flags)
    written = writer.group(pieces)
    if written.replace("(?:", "").replace(")", "") == "":
        raise Unsupported("nothing to search for")
    return written


class Prefiltered:
    """A compiled pattern whose searches over a long text go through the shared Hyperscan pass;
    everything else is the pattern's own (bound methods, no extra call)."""

    def __init__(self, regex: re.Pattern):
        self.regex = regex
        self.pattern, self.flags, self.groups, self.groupindex = (
            regex.pattern,
            regex.flags,
            regex.groups,
            regex.groupindex,
        )
        self.match, self.fullmatch, self.sub, self.subn, self.split = (
            regex.match,
            regex.fullmatch,
            regex.sub,
            regex.subn,
            regex.split,
        )
        self.scanner = regex.scanner
        self.state = _NEW
        self.index = -1

    def __repr__(self) -> str:
        return f"Prefiltered({self.regex!r})"

    def finditer(self, text, *args) -> Iterator[re.Match]:
        if args or len(text) < MIN_LENGTH or not isinstance(text, str):
            return self.regex.finditer(text, *args)
        found = starts(self, text)
        if found is None:
            return self.regex.finditer(text)
        return confirm(self.regex.match, text, found)

    def search(self, text, *args) -> re.Match | None:
        if args or len(text) < MIN_LENGTH or not isinstance(text, str):
            return self.regex.search(text, *args)
        found = starts(self, text)
        if found is None:
            return self.regex.search(text)
        return next(confirm(self.regex.match, text, found), None)

    def findall(self, text, *args):
        if args or len(text) < MIN_LENGTH or not isinstance(text, str):
            return self.regex.findall(text, *args)
        out = []
        for m in self.finditer(text):
            g = m.groups()
            out.append(m.group() if not g else g[0] if len(g) == 1 else g)
        return out


def confirm(match, text: str, starts) -> Iterator[re.Match]:
    """What finditer over the whole text yields, given every position where a match can start."""
    last = 0
    for s in starts:
        if s >= last:
            m = match(text, s)
            if m:
                yield m
                last = m.end()


_NEW, _IN, _OUT = "new", "in", "out"  # not searched at warm-up / in the database / left out
_PATTERNS: list[Prefiltered] = []
_LOCK = threading.Lock()
_RECORDING: list[bool] = [False]
# In build()'s sample (prose dense in identifiers): one start every this many characters or more.
_SAMPLE_DENSE = 48
_GROUP = 8  # patterns per database: compile time grows faster than linearly with a database's size


def wrap(regex: re.Pattern) -> Prefiltered | re.Pattern:
    """`regex` with prefiltered searches; the pattern itself if it cannot be written or Hyperscan is
    not installed."""
    if _hs is None or _np is None or not isinstance(regex.pattern, str):
        return regex
    try:
        written = expression(regex)
    except (Unsupported, RecursionError):
        return regex
    p = Prefiltered(regex)
    p.expression = written
    _PATTERNS.append(p)
    return p


class _Database:
    def __init__(self, members: list[Prefiltered]):
        self.members = members
        self.db = _hs.Database()
        self.db.compile(
            expressions=[p.expression.encode() for p in members],
            ids=list(range(len(members))),
            elements=len(members),
            flags=_hs.HS_FLAG_UTF8,
        )
        self.scratch = _hs.Scratch(self.db)


def _databases(members: list[Prefiltered]) -> list[_Database]:
    out = []
    for i in range(0, len(members), _GROUP):
        group = members[i : i + _GROUP]
        try:
            out.append(_Database(group))
        except Exception:  # noqa: BLE001 - one Hyperscan refuses (too large …): the others alone
            for p in group:
                try:
                    out.append(_Database([p]))
                except Exception:  # noqa: BLE001 - searched whole
                    p.state = _OUT
    return out


_DBS: list[tuple[_Database, ...] | None] = [None]


def build(run, sample: str) -> None:
    """Enter in the databases every pattern that `run()` (the detectors over `sample`, a long text)
    searches whole, less those that Hyperscan refuses or whose starts are dense in `sample`.
    Called by engine.warm(), which builds once a process; until then every search is the pattern's own."""
    if _hs is None or _np is None or len(sample) < MIN_LENGTH or _DBS[0] is not None:
        return  # once a process: warm() is called again by every data plane that starts
    with _LOCK:
        _scan.cache_clear()
        _RECORDING[0] = True
        try:
            run()
        finally:
            _RECORDING[0] = False
        wanted = [p for p in _PATTERNS if p.state == _IN]
        _DBS[0] = tuple(_databases(wanted))
    found = _scan(sample)
    if found is not None:
        # the sample is dense in identifiers: left out only what fires at every few characters
        for starts, p in zip(found[0], found[2], strict=True):
            if starts is None and len(found[3][p]) * _SAMPLE_DENSE > len(sample):
                p.state = _OUT
    with _LOCK:
        _DBS[0] = tuple(_databases([p for p in _PATTERNS if p.state == _IN]))
        _scan.cache_clear()
    bind()


def bind() -> None:
    """A pattern left out of the databases gets its own searches as they are (bound methods: no
    Python call in between, on short texts either); one in them, or any before they are built (so
    that build() sees which patterns are searched whole), the prefiltered ones."""
    built = _DBS[0] is not None
    for p in _PATTERNS:
        for name in ("finditer", "search", "findall"):
            if p.state == _IN or not built:
                p.__dict__.pop(name, None)
            else:
                setattr(p, name, getattr(p.regex, name))


def serves(p) -> bool:
    """Whether the Hyperscan pass gives `p`'s starts on long texts (built, and `p` in it)."""
    return isinstance(p, Prefiltered) and p.state == _IN and bool(_DBS[0]) and not _RECORDING[0]


def starts(p: Prefiltered, text: str):
    if p.state != _IN:
        if _RECORDING[0] and p.state == _NEW:
            p.state = _IN
        return None
    if _RECORDING[0]:
        return None
    found = _scan(text)
    if found is None:
        return None
    return found[1].get(p)


@lru_cache(maxsize=2)
def _scan(text: str):
    """(starts per member in database order, {pattern: sorted starts} without the dense ones,
    members, {pattern: reported ends}), or None: one pass of every database over the reversed text."""
    databases = _DBS[0]
    if not databases:
        return None
    try:
        reversed_bytes = text[::-1].encode("utf-8")
    except UnicodeEncodeError:
        return None
    members: list[Prefiltered] = []
    ends: list[list[int]] = []
    with _LOCK:  # one scratch space per database, used by one scan at a time
        for database in databases:
            group = [[] for _ in database.members]
            appenders = [e.append for e in group]

            def on_match(i, _from, to, _flags, _context, appenders=appenders):
                appenders[i](to)

            database.db.scan(reversed_bytes, match_event_handler=on_match, scratch=database.scratch)
            members.extend(database.members)
            ends.extend(group)
    n = len(text)
    limit = n // DENSE + 1
    ascii_only = len(reversed_bytes) == n
    if not ascii_only:
        arr = _np.frombuffer(reversed_bytes, dtype=_np.uint8)
        continuation = _np.zeros(len(arr) + 1, dtype=_np.int64)
        _np.cumsum((arr & 0xC0) == 0x80, out=continuation[1:])
    every: list[list[int] | None] = []
    usable: dict[Prefiltered, list[int]] = {}
    counts = {}
    for p, e in zip(members, ends, strict=True):
        counts[p] = e
        if len(e) > limit:  # dense: one whole-text search costs less than trying every start
            every.append(None)
            continue
        if ascii_only:
            starts = sorted({n - t for t in e})
        else:
            a = _np.asarray(e, dtype=_np.int64)
            starts = sorted(set((n - (a - continuation[a])).tolist()))
        every.append(starts)
        usable[p] = starts
    return every, usable, members, counts


def registered() -> list[Prefiltered]:
    return list(_PATTERNS)
