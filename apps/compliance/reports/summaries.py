"""Check summaries and remedies in the report's language (issue 17).

A check writes its summary in English when it runs (it is stored with the result, and the JSON and CSV
reports keep it so). The PDF in Chinese shows it translated: each entry of PATTERNS is an English
summary as the checks write it, `{name}` standing for a value (a number, a name, a list), and its
Chinese; a summary that matches none is shown as it was written. tests/compliance/test_report_layout.py
evaluates 等保 level 3 here and fails on any summary the Chinese report would still show in English."""

from __future__ import annotations

import re
from functools import cache

from django.utils import translation

from .summaries_zh import PATTERNS


@cache
def _compiled() -> list[tuple[re.Pattern, str]]:
    out = []
    for english, chinese in PATTERNS.items():
        parts = re.split(r"\{(\w+)\}", english)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
        out.append((re.compile(f"^{regex}$", re.S), chinese))
    return out


def translate_summary(text: str | None, language: str | None = None) -> str:
    """`text` in `language` (default: the active one) when a pattern matches, else `text`."""
    if not text:
        return text or ""
    language = language or translation.get_language() or ""
    if not language.startswith("zh"):
        return text
    for pattern, chinese in _compiled():
        if m := pattern.match(text):
            values = {k: _value(k, v) for k, v in m.groupdict().items()}
            return chinese.format(**values)
    return text


def _value(name: str, value: str) -> str:
    """`items…`: a list of findings ("; "-separated), each translated on its own; `rest`: the rest of a
    remedy, translated as a whole; any other value is carried over as written."""
    if name.startswith("items"):
        return "；".join(translate_summary(piece, "zh-hans") for piece in value.split("; "))
    return translate_summary(value, "zh-hans") if name == "rest" else value


def untranslated(texts) -> list[str]:
    """The texts whose Chinese still holds English prose (three words in a row), for the test."""
    return [
        t for t in texts if t and re.search(r"[A-Za-z]{2,} [A-Za-z]{2,} [A-Za-z]{2,}", translate_summary(t, "zh-hans"))
    ]
