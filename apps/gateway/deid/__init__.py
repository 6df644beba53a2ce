"""De-identification of free text for the gateway (HIPAA Safe Harbor identifiers and the Chinese
identifiers of the 等保 profile). Pure Python: no Django, nothing logged, values never kept.

    deidentify(text, mode, key=None, types=None, budget=None, mapping=None) -> Result(text, found)
    deidentify_tensor(data, datatype, mode, key=None, types=None, budget=None, mapping=None) -> TensorResult
    Reidentifier(mapping).feed(delta) / .finish()   (surrogate mode: the originals back)

    screen_text(answer, mode, allowed=(), types=None) -> Result(text, found)   (answers.py)
    AnswerScreen(mode, allowed=(), types=None): feed(delta) -> str, finish() -> str, found

A Budget(cpu_seconds), one per request, bounds the CPU all its texts may take (BudgetExceeded).

See docs/deidentification.md.
"""

from .answers import SCREEN_MODES, AnswerScreen, screen_text
from .engine import (
    DEFAULT_MAX_LENGTH,
    MASK,
    MODES,
    PSEUDONYMISE,
    REDACT,
    SURROGATE,
    Budget,
    Result,
    deidentify,
    detect,
    pseudonym,
    warm,
)
from .spans import (
    ALL_TYPES,
    UNSTRUCTURED_TYPES,
    BudgetExceeded,
    DeidError,
    InputTooLong,
    InvalidMode,
    InvalidUTF8,
    KeyRequired,
    Span,
    UnknownType,
    UnsupportedDatatype,
)
from .surrogate import MappingRequired, Reidentifier, SurrogateExhausted, SurrogateMap
from .tensor import TensorResult, deidentify_tensor

__all__ = [
    "ALL_TYPES",
    "Budget",
    "BudgetExceeded",
    "SCREEN_MODES",
    "AnswerScreen",
    "DEFAULT_MAX_LENGTH",
    "MASK",
    "MODES",
    "PSEUDONYMISE",
    "REDACT",
    "SURROGATE",
    "MappingRequired",
    "Reidentifier",
    "SurrogateExhausted",
    "SurrogateMap",
    "UNSTRUCTURED_TYPES",
    "DeidError",
    "InputTooLong",
    "InvalidMode",
    "InvalidUTF8",
    "KeyRequired",
    "Result",
    "Span",
    "TensorResult",
    "UnknownType",
    "UnsupportedDatatype",
    "deidentify",
    "deidentify_tensor",
    "detect",
    "pseudonym",
    "warm",
    "screen_text",
]
