"""De-identification of free text for the gateway (HIPAA Safe Harbor identifiers and the Chinese
identifiers of the 等保 profile). Pure Python: no Django, nothing logged, values never kept.

    deidentify(text, mode, key=None, types=None, mapping=None) -> Result(text, found)
    Reidentifier(mapping).feed(delta) / .finish()   (surrogate mode: the originals back)
    deidentify_tensor(data, datatype, mode, key=None, types=None) -> TensorResult(data, found)

See docs/deidentification.md.
"""

from .engine import (
    DEFAULT_MAX_LENGTH,
    MASK,
    MODES,
    PSEUDONYMISE,
    REDACT,
    SURROGATE,
    Result,
    deidentify,
    detect,
    pseudonym,
)
from .spans import (
    ALL_TYPES,
    UNSTRUCTURED_TYPES,
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
]
