"""De-identification of inference requests before they reach Triton (issue 6).

For a model whose policy asks for it, every BYTES input tensor is de-identified element by
element (apps/gateway/deid); numeric tensors pass untouched. Both request encodings are handled:
JSON `data` lists, and Triton's binary tensor extension, where a BYTES tensor is a sequence of
4-byte little-endian lengths each followed by that many bytes, after the JSON header. The request
is rebuilt (new header length) and forwarded; what was found is returned as counts per
identifier type, never the values.
"""

from __future__ import annotations

import json
import struct
from collections import Counter

from apps.core.errors import ServiceError

from .deid import Budget, BudgetExceeded, DeidError, InputTooLong, SurrogateMap, deidentify_tensor
from .protocol import HEADER_LENGTH


def _split_bytes(raw: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise ServiceError("invalid_request", "a BYTES tensor's binary data is truncated")
        (n,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + n > len(raw):
            raise ServiceError("invalid_request", "a BYTES tensor's binary data is truncated")
        out.append(raw[i : i + n])
        i += n
    return out


def _join_bytes(items) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def refusal(err: DeidError) -> ServiceError:
    """The gateway's answer to a de-identifier error: nothing is forwarded. Over its CPU budget or
    its length limit the request is too large to de-identify (413); other errors are bad input."""
    status = 413 if isinstance(err, BudgetExceeded | InputTooLong) else 400
    return ServiceError(getattr(err, "code", "deid_error"), f"de-identification refused the input: {err}", status)


def _deid(values, mode: str, key: bytes | None, found: Counter, budget: Budget | None = None, mapping=None):
    try:
        result = deidentify_tensor(values, "BYTES", mode, key=key, budget=budget, mapping=mapping)
    except DeidError as err:
        raise refusal(err) from None
    found.update(result.found)
    return result.data


def deidentify_request(
    body: bytes, header: dict, header_length: str | None, mode: str, key: bytes | None, budget: Budget | None = None
) -> tuple[bytes, str | None, dict[str, int]]:
    """Return (body, header length, {identifier type: count}) with every BYTES input de-identified,
    all of them within one CPU `budget` (BudgetExceeded -> 413 deid_budget_exceeded)."""
    found: Counter = Counter()
    mapping = None
    if mode in ("surrogate", "surrogate_shift"):  # KServe v2: one mapping per call, answers not re-identified
        mapping = SurrogateMap.with_date_shift() if mode == "surrogate_shift" else SurrogateMap()
        mode, key = "surrogate", None
    binary_at = int(header_length) if header_length is not None else None
    tail = body[binary_at:] if binary_at is not None else b""
    new_tail, offset = [], 0
    for tensor in header.get("inputs", []):
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size")
        datatype = tensor.get("datatype")
        if size is None:
            if datatype == "BYTES" and "data" in tensor:
                tensor["data"] = _deid(tensor["data"], mode, key, found, budget, mapping)
            continue
        if binary_at is None:
            raise ServiceError("invalid_request", f"binary_data_size without the {HEADER_LENGTH} header")
        raw = tail[offset : offset + int(size)]
        if len(raw) != int(size):
            raise ServiceError("invalid_request", "the binary tensor data is shorter than binary_data_size")
        offset += int(size)
        if datatype == "BYTES":
            items = _deid(_split_bytes(raw), mode, key, found, budget, mapping)
            raw = _join_bytes(i if isinstance(i, bytes) else i.encode("utf-8") for i in items)
            params["binary_data_size"] = len(raw)
        new_tail.append(raw)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if binary_at is None:
        return head, None, dict(found)
    return head + b"".join(new_tail) + tail[offset:], str(len(head)), dict(found)
