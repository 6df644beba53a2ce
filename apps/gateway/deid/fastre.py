"""Compiled patterns that skip, in C, the positions where they cannot start.

Python's `re` searches fast only when a pattern starts with a literal or a character class: it
then skips, in C, every position whose character cannot begin a match. A pattern that starts
with a look-behind (`(?<![A-Za-z])(?:MRN|chart|…)`, `(?<![0-9])\\d{3}…`) — nearly every pattern of
the de-identifier, so that a run of digits or letters is tried once, at its start — gets no such
hint, and the matcher is entered at every character of the text: about 80 ns a character a
pattern, the whole cost of the de-identifier (six seconds a MiB).

`compile(pattern, flags)` compiles the pattern as `re.compile` does and adds the hint that `re`
could not find itself: the set of characters a match can start with, worked out from the parsed
pattern (look-arounds and anchors consume nothing and are stepped over; optional items add the
first characters of what follows; under IGNORECASE both cases of every letter and
the characters beyond ASCII that fold to an ASCII letter — U+0130, U+0131, U+017F, U+212A — are
added, and for a cased non-ASCII character every character beyond ASCII and every ASCII letter).
The hint only lets the search skip characters outside that set, so what matches, and where,
is exactly what `re.compile` gives; `accelerate(namespace)` recompiles a module's patterns in
place (held alone or in a tuple, list or dict). Patterns whose first character can be anything
(`.`, `[^…]`, a back-reference) or that can match the empty string are left as they are, and
on a Python whose `re` internals differ everything falls back to `re.compile`.
"""

from __future__ import annotations

import re
import sys

try:  # CPython 3.11+ internals; anything unexpected -> plain re.compile
    import _sre
    from re import _compiler, _parser
    from re._constants import (
        ASSERT,
        ASSERT_NOT,
        AT,
        ATOMIC_GROUP,
        BRANCH,
        CATEGORY,
        IN,
        INFO,
        LITERAL,
        MAX_REPEAT,
        MIN_REPEAT,
        NEGATE,
        POSSESSIVE_REPEAT,
        RANGE,
        SRE_FLAG_IGNORECASE,
        SRE_FLAG_LOCALE,
        SRE_INFO_CHARSET,
        SRE_INFO_LITERAL,
        SRE_INFO_PREFIX,
        SUBPATTERN,
    )

    _AVAILABLE = sys.implementation.name == "cpython" and sys.version_info >= (3, 11)
except ImportError:  # pragma: no cover - another interpreter
    _AVAILABLE = False

_NON_ASCII = (0x80, sys.maxunicode)


class _Unrestricted(Exception):
    """The first character of a match can be anything: no hint."""


def _cased(cp: int) -> bool:
    return chr(cp).lower() != chr(cp) or chr(cp).upper() != chr(cp)


# The only characters beyond ASCII that `re` (IGNORECASE, Unicode) matches with an ASCII letter:
# İ and ı with i, ſ with s, the Kelvin sign with k (checked over every code point by the tests).
_ASCII_FOLDS = {"i": (0x130, 0x131), "k": (0x212A,), "s": (0x17F,)}


def _ascii_letter(cp: int) -> list:
    """Both cases of an ASCII letter and the non-ASCII characters that fold to it."""
    low = chr(cp).lower()
    return [(LITERAL, ord(low)), (LITERAL, ord(low.upper()))] + [(LITERAL, f) for f in _ASCII_FOLDS.get(low, ())]


def _literal(cp: int, ignorecase: bool) -> list:
    if not ignorecase or not _cased(cp):
        return [(LITERAL, cp)]
    if cp < 0x80:
        return _ascii_letter(cp)
    # ſ matches s, K (Kelvin sign) k: any ASCII letter may fold to a cased non-ASCII character
    return [(LITERAL, cp), (RANGE, _NON_ASCII), (RANGE, (ord("a"), ord("z"))), (RANGE, (ord("A"), ord("Z")))]


def _charset(items, ignorecase: bool) -> list:
    out = []
    for op, av in items:
        if op is NEGATE:
            raise _Unrestricted
        if op is LITERAL:
            out.extend(_literal(av, ignorecase))
        elif op is RANGE:
            out.append((RANGE, av))
            if ignorecase:
                for cp in range(av[0], min(av[1], 0x7F) + 1):
                    if _cased(cp):
                        out.extend(_ascii_letter(cp))
                if av[1] >= 0x80:  # a cased character beyond ASCII may fold to one outside the range
                    out.extend([(RANGE, _NON_ASCII), (RANGE, (ord("a"), ord("z"))), (RANGE, (ord("A"), ord("Z")))])
        elif op is CATEGORY:
            out.append((CATEGORY, av))
        else:
            raise _Unrestricted
    return out


def _first(items, flags: int) -> tuple[list, bool]:
    """(charset items one of which starts every match of the sequence, whether it can be empty)."""
    acc: list = []
    for op, av in items:
        found, nullable = _first_item(op, av, flags)
        acc.extend(found)
        if not nullable:
            return acc, False
    return acc, True


def _first_item(op, av, flags: int) -> tuple[list, bool]:
    ignorecase = bool(flags & SRE_FLAG_IGNORECASE)
    if op is ASSERT or op is ASSERT_NOT or op is AT:
        return [], True
    if op is LITERAL:
        return _literal(av, ignorecase), False
    if op is IN:
        return _charset(av, ignorecase), False
    if op is SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        return _first(sub.data, _compiler._combine_flags(flags, add_flags, del_flags))
    if op is ATOMIC_GROUP:
        return _first(av.data, flags)
    if op is MAX_REPEAT or op is MIN_REPEAT or op is POSSESSIVE_REPEAT:
        lo, hi, body = av
        if hi == 0:
            return [], True
        found, nullable = _first(body.data, flags)
        return found, nullable or lo == 0
    if op is BRANCH:
        acc: list = []
        any_nullable = False
        for alternative in av[1]:
            found, nullable = _first(alternative.data, flags)
            acc.extend(found)
            any_nullable = any_nullable or nullable
        return acc, any_nullable
    raise _Unrestricted  # ANY, NOT_LITERAL, GROUPREF, GROUPREF_EXISTS, …


def compile(pattern: str, flags: int = 0) -> re.Pattern:  # noqa: A001 - the re.compile of this module
    plain = re.compile(pattern, flags)
    if not _AVAILABLE or not isinstance(pattern, str):
        return plain
    try:
        return _with_hint(pattern, flags) or plain
    except Exception:  # noqa: BLE001 - internals not as expected: the plain pattern is always right
        return plain


def _with_hint(pattern: str, flags: int) -> re.Pattern | None:
    p = _parser.parse(pattern, flags)
    all_flags = p.state.flags | flags
    if all_flags & SRE_FLAG_LOCALE:
        return None
    code = _compiler._code(p, flags)
    if code[0] is not INFO and code[0] != INFO:
        return None
    info_end = 1 + code[1]
    mask, lo, hi = code[2], code[3], code[4]
    if mask & (SRE_INFO_PREFIX | SRE_INFO_LITERAL | SRE_INFO_CHARSET) or lo == 0:
        return None  # re found its own hint, or the pattern can match the empty string
    try:
        items, nullable = _first(p.data, all_flags)
    except _Unrestricted:
        return None
    if nullable or not items:
        return None
    charset, _hascased = _compiler._optimize_charset(items)
    info = [INFO, 0, mask | SRE_INFO_CHARSET, lo, hi]
    _compiler._compile_charset(charset, all_flags, info)
    info[1] = len(info) - 1
    code = info + code[info_end:]
    groupindex = p.state.groupdict
    indexgroup = [None] * p.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    return _sre.compile(pattern, all_flags, code, p.state.groups - 1, groupindex, tuple(indexgroup))


def accelerate(namespace: dict) -> None:
    """Recompile, with the hint, every pattern a module holds at top level (alone or in a tuple,
    list or dict of patterns), and route its searches over long texts through the shared Hyperscan
    pass (prefilter.py)."""
    for name, value in list(namespace.items()):
        if isinstance(value, re.Pattern):
            namespace[name] = _again(value)
        elif isinstance(value, tuple | list) and value and all(isinstance(v, re.Pattern) for v in value):
            namespace[name] = type(value)(_again(v) for v in value)
        elif isinstance(value, dict) and value and all(isinstance(v, re.Pattern) for v in value.values()):
            namespace[name] = {k: _again(v) for k, v in value.items()}


def _again(rx: re.Pattern):
    if not isinstance(rx.pattern, str):
        return rx
    from . import prefilter

    # re.compile adds UNICODE to a str pattern's flags; pass only what the caller chose
    return prefilter.wrap(compile(rx.pattern, rx.flags & ~re.UNICODE))
