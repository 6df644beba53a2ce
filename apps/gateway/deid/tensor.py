"""De-identification of KServe v2 tensors: BYTES element by element, numeric tensors untouched.

`data` is either the JSON `data` of a KServe v2 input (a flat or nested list) or a numpy array.
BYTES elements may be str (JSON) or bytes (numpy object arrays, binary tensor extension); bytes
are decoded as strict UTF-8 and re-encoded after replacement, so each element keeps its type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .engine import DEFAULT_MAX_LENGTH, _check_mode, _check_types, check_length, deidentify
from .spans import DeidError, InvalidUTF8, UnsupportedDatatype

NUMERIC_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16"}
)
MAX_NESTING = 64


@dataclass(frozen=True)
class TensorResult:
    """The tensor data with identifiers replaced, and counts by type over all its elements."""

    data: object
    found: dict[str, int] = field(default_factory=dict)


class _Walker:
    def __init__(self, mode, key, kinds, max_length, budget=None, mapping=None):
        self.mode, self.key, self.kinds, self.max_length, self.budget = mode, key, kinds, max_length, budget
        self.mapping = mapping
        self.found: Counter[str] = Counter()
        self.index = 0

    def element(self, value):
        index, self.index = self.index, self.index + 1
        if isinstance(value, bytes | bytearray):
            check_length(len(value), self.max_length)
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError as err:
                raise InvalidUTF8(
                    f"BYTES element {index} is not valid UTF-8 (byte {err.start}); only UTF-8 text can be de-identified"
                ) from None
            return self._text(text).encode("utf-8")
        if isinstance(value, str):
            return self._text(value)
        raise DeidError(f"BYTES element {index} is a {type(value).__name__}, expected a string")

    def _text(self, text: str) -> str:
        result = deidentify(text, self.mode, self.key, self.kinds, self.max_length, self.budget, self.mapping)
        self.found.update(result.found)
        return result.text

    def walk(self, data, depth=0):
        if depth > MAX_NESTING:
            raise DeidError(f"tensor data nested deeper than {MAX_NESTING} levels")
        if isinstance(data, list | tuple):
            return [self.walk(item, depth + 1) for item in data]
        return self.element(data)


def deidentify_tensor(
    data,
    datatype: str,
    mode: str = "redact",
    key: bytes | None = None,
    types=None,
    max_length=DEFAULT_MAX_LENGTH,
    budget=None,
    mapping=None,
) -> TensorResult:
    """De-identify a BYTES tensor element by element; return numeric tensors as they came."""
    if datatype in NUMERIC_DATATYPES:
        return TensorResult(data, {})
    if datatype != "BYTES":
        raise UnsupportedDatatype(f"unknown KServe v2 datatype {datatype!r}")
    walker = _Walker(_check_mode(mode, key, mapping), key, _check_types(types), max_length, budget, mapping)
    if type(data).__module__ == "numpy" and type(data).__name__ == "ndarray":
        return TensorResult(_numpy(walker, data), dict(walker.found))
    return TensorResult(walker.walk(data), dict(walker.found))


def _numpy(walker: _Walker, array):
    import numpy as np

    out = np.empty(array.shape, dtype=object)
    flat_in, flat_out = array.reshape(-1), out.reshape(-1)
    for i, value in enumerate(flat_in):
        if isinstance(value, np.bytes_ | np.str_):
            value = value.item()
        flat_out[i] = walker.element(value)
    return out
