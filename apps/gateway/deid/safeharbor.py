"""The two identifiers that Safe Harbor lets through in part: ZIP3 areas and the age "90 or older".

45 CFR 164.514(b)(2)(i)(B) keeps "the initial three digits of a zip code" when the area formed by
all ZIP codes sharing them holds more than 20,000 people, and changes them to 000 otherwise
(data/zip3_restricted.txt). (C) removes "all ages over 89 ... except that such ages ... may be
aggregated into a single category of age 90 or older".

The engine asks here how an AGE or ZIP span is replaced, per mode:

- redact: an age becomes "90+" ("95岁" becomes "90+岁": a Chinese unit in the span is put back);
  a US ZIP (5 digits, or ZIP+4) its three-digit area and "**"
  ("021**", "000**" for a restricted area; the +4 is dropped). A Chinese 邮编 (6 digits) has no
  Safe Harbor rule and stays "[ZIP]".
- mask: an age becomes "**" ("**岁") whatever its length (three stars would say "100 or older");
  a ZIP is masked like everything else.
- pseudonymise: the token is computed over the Safe Harbor category, not the value: every age over
  89 gets the same token, every US ZIP of one three-digit area the same token ("000" for the
  restricted ones). A 邮编 keeps a token of its own.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

from .spans import AGE, ZIP

AGE_CATEGORY = "90+"
AGE_MASK = "**"
RESTRICTED = "000"
_DATA = Path(__file__).with_name("data")


@lru_cache(maxsize=1)
def restricted_zip3() -> frozenset[str]:
    lines = (_DATA / "zip3_restricted.txt").read_text(encoding="utf-8").splitlines()
    areas = frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    assert all(len(a) == 3 and a.isdigit() for a in areas), "zip3_restricted.txt: three digits a line"
    return areas


def _digits(value: str) -> str:
    """The decimal digits of `value` as ASCII, whatever script they were written in."""
    return "".join(str(unicodedata.decimal(ch)) for ch in value if unicodedata.decimal(ch, None) is not None)


def zip3(value: str) -> str | None:
    """The Safe Harbor three-digit area of a US ZIP or ZIP+4 ("000" if restricted); None otherwise."""
    digits = _digits(value)
    if len(digits) not in (5, 9):
        return None
    area = digits[:3]
    return RESTRICTED if area in restricted_zip3() else area


_AGE_UNITS = ("周岁", "週歲", "岁", "歲")


def split_age_unit(value: str) -> tuple[str, str]:
    """ "95岁" -> ("95", "岁"): the unit a Chinese age span carries, put back after the replacement."""
    for unit in _AGE_UNITS:
        if value.endswith(unit):
            return value[: -len(unit)].rstrip(), unit
    return value, ""


def redacted(kind: str, value: str) -> str | None:
    """The redact-mode replacement where Safe Harbor keeps a part; None: the usual "[TYPE]"."""
    if kind == AGE:
        return AGE_CATEGORY
    if kind == ZIP:
        area = zip3(value)
        return None if area is None else area + "**"
    return None


def masked(kind: str) -> str | None:
    return AGE_MASK if kind == AGE else None


def pseudonym_value(kind: str, value: str) -> str:
    """What the pseudonym is computed over: the Safe Harbor category for AGE and US ZIP."""
    if kind == AGE:
        return AGE_CATEGORY
    if kind == ZIP:
        area = zip3(value)
        if area is not None:
            return area
    return value
