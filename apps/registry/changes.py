"""The words of a signature's breaking changes in the reader's language. inference_backend.signature
(no Django) records them as English sentences of a fixed shape on the version (`breaking_changes`); a
Chinese page showed them as they were ("output 'PROBABILITIES' removed or renamed"). Each shape is
matched here and said again through gettext; a sentence of no known shape is shown unchanged."""

from __future__ import annotations

import re

from django.utils.translation import gettext

_NOUNS = {"input": lambda: gettext("input"), "output": lambda: gettext("output")}
_SHAPES = [
    (
        re.compile(r"^(input|output) '(.+)' removed or renamed$"),
        lambda m: gettext("%(noun)s %(name)s removed or renamed"),
    ),
    (re.compile(r"^(input) '(.+)' added$"), lambda m: gettext("%(noun)s %(name)s added")),
    (
        re.compile(r"^(input|output) '(.+)' datatype (\S+) → (\S+)$"),
        lambda m: gettext("%(noun)s %(name)s: datatype %(before)s → %(after)s"),
    ),
    (
        re.compile(r"^(input|output) '(.+)' rank (\d+) → (\d+)$"),
        lambda m: gettext("%(noun)s %(name)s: rank %(before)s → %(after)s"),
    ),
    (
        re.compile(r"^(input|output) '(.+)' shape (\[.*\]) → (\[.*\])$"),
        lambda m: gettext("%(noun)s %(name)s: shape %(before)s → %(after)s"),
    ),
]


def describe(change: str) -> str:
    """One recorded breaking change, in the active language."""
    if change == "batching: the first dimension is no longer dynamic":
        return gettext("batching: the first dimension is no longer dynamic")
    kind = re.match(r"^kind changed: (\S+) → (\S+)$", change)
    if kind:
        return gettext("kind changed: %(before)s → %(after)s") % {"before": kind[1], "after": kind[2]}
    for pattern, text in _SHAPES:
        m = pattern.match(change)
        if m:
            groups = m.groups()
            values = {"noun": _NOUNS[groups[0]](), "name": f"'{groups[1]}'"}
            if len(groups) == 4:
                values.update(before=groups[2], after=groups[3])
            return text(m) % values
    return change


def describe_all(changes: list[str]) -> str:
    return "; ".join(describe(c) for c in changes)
