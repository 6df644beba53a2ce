"""Identifier types, spans and errors of the de-identifier.

A Span holds offsets and a type, never the text it covers: whatever is built on spans (counts for
the audit log, benchmark figures) cannot leak an identifier by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Safe Harbor (45 CFR 164.514(b)(2)) letters in brackets; the last three are the Chinese identifiers.
NAME = "NAME"  # (A)
ZIP = "ZIP"  # (B)
DATE = "DATE"  # (C)
AGE = "AGE"  # (C) ages over 89
PHONE = "PHONE"  # (D)
FAX = "FAX"  # (E)
EMAIL = "EMAIL"  # (F)
SSN = "SSN"  # (G)
MRN = "MRN"  # (H)
HEALTH_PLAN = "HEALTH_PLAN"  # (I)
ACCOUNT = "ACCOUNT"  # (J)
LICENSE = "LICENSE"  # (K)
VEHICLE = "VEHICLE"  # (L) VINs and licence plates
DEVICE = "DEVICE"  # (M)
URL = "URL"  # (N)
IP = "IP"  # (O)
CN_ID = "CN_ID"  # 居民身份证号
CN_MOBILE = "CN_MOBILE"  # mainland mobile numbers
BANK_CARD = "BANK_CARD"  # card numbers that pass Luhn
ADDRESS = "ADDRESS"  # (B) street address, unit, PO box (apps/gateway/deid/geo.py)
GEO = "GEO"  # (B) city, county, town, district, village: subdivisions smaller than a state

ALL_TYPES: tuple[str, ...] = (
    NAME,
    DATE,
    AGE,
    ZIP,
    PHONE,
    FAX,
    EMAIL,
    SSN,
    MRN,
    HEALTH_PLAN,
    ACCOUNT,
    LICENSE,
    VEHICLE,
    DEVICE,
    URL,
    IP,
    CN_ID,
    CN_MOBILE,
    BANK_CARD,
    ADDRESS,
    GEO,
)

# Free text whose recall target is 0.90; every other type is "structured" (target 0.98).
UNSTRUCTURED_TYPES = frozenset({NAME, DATE, ADDRESS, GEO})


@dataclass(frozen=True, slots=True, init=False)
class Span:
    """[start, end) in the text that was scanned, and what kind of identifier lies there."""

    start: int
    end: int
    type: str
    # Higher wins when two candidate spans overlap (validated formats beat context guesses).
    priority: int = field(default=0, compare=False)

    def __init__(self, start: int, end: int, type: str, priority: int = 0):  # noqa: A002 - the field's name
        # Tens of thousands are made per MiB of text: the slots are set through their descriptors,
        # at half the cost of the frozen dataclass's object.__setattr__ calls (same object).
        _SET_START(self, start)
        _SET_END(self, end)
        _SET_TYPE(self, type)
        _SET_PRIORITY(self, priority)


_SET_START, _SET_END, _SET_TYPE, _SET_PRIORITY = (
    Span.__dict__[name].__set__ for name in ("start", "end", "type", "priority")
)


class DeidError(ValueError):
    """Base of the de-identifier's errors. Messages never quote the input."""

    code = "deid_error"


class InputTooLong(DeidError):
    code = "deid_input_too_long"


class BudgetExceeded(DeidError):
    """The request spent its CPU budget in the de-identifier: refused, never forwarded unredacted."""

    code = "deid_budget_exceeded"


class InvalidUTF8(DeidError):
    code = "deid_invalid_utf8"


class UnsupportedDatatype(DeidError):
    code = "deid_unsupported_datatype"


class InvalidMode(DeidError):
    code = "deid_invalid_mode"


class KeyRequired(DeidError):
    code = "deid_key_required"


class UnknownType(DeidError):
    code = "deid_unknown_type"
