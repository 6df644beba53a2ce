"""De-identification of inference requests before they reach Triton (issue 6), and of their
answers on the way back (issue 14).

For a model whose policy asks for it, every BYTES input tensor is de-identified element by
element (apps/gateway/deid); numeric tensors pass untouched. Both request encodings are handled:
JSON `data` lists, and Triton's binary tensor extension, where a BYTES tensor is a sequence of
4-byte little-endian lengths each followed by that many bytes, after the JSON header. The request
is rebuilt (new header length) and forwarded; what was found is returned as counts per
identifier type, never the values.

Answers (`answer_outputs`): every BYTES output of Triton's response, in either encoding, goes
through the answer screen (redact / alert) and then, for a caller allowed to see the originals,
the surrogate re-identifier; numeric outputs are left as they are. The response is rebuilt only if
a text changed (new header length, new binary sizes); otherwise the upstream bytes are returned.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field

from apps.core.errors import ServiceError, _

from .deid import (
    Budget,
    BudgetExceeded,
    DeidError,
    InputTooLong,
    Reidentifier,
    SurrogateMap,
    deidentify_tensor,
    screen_text,
)
from .protocol import HEADER_LENGTH


def _split_bytes(raw: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise ServiceError("invalid_request", _("a BYTES tensor's binary data is truncated"))
        (n,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + n > len(raw):
            raise ServiceError("invalid_request", _("a BYTES tensor's binary data is truncated"))
        out.append(raw[i : i + n])
        i += n
    return out


def _join_bytes(items) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def refusal(err: DeidError) -> ServiceError:
    """The gateway's answer to a de-identifier error: nothing is forwarded. Over its CPU budget or
    its length limit the request is too large to de-identify (413); other errors are bad input."""
    status = 413 if isinstance(err, BudgetExceeded | InputTooLong) else 400
    return ServiceError(
        getattr(err, "code", "deid_error"), _("de-identification refused the input: %(err)s") % {"err": err}, status
    )


def _deid(values, mode: str, key: bytes | None, found: Counter, budget: Budget | None = None, mapping=None):
    try:
        result = deidentify_tensor(values, "BYTES", mode, key=key, budget=budget, mapping=mapping)
    except DeidError as err:
        raise refusal(err) from None
    found.update(result.found)
    return result.data


def deidentify_request(
    body: bytes,
    header: dict,
    header_length: str | None,
    mode: str,
    key: bytes | None,
    budget: Budget | None = None,
    mapping: SurrogateMap | None = None,
) -> tuple[bytes, str | None, dict[str, int]]:
    """Return (body, header length, {identifier type: count}) with every BYTES input de-identified,
    all of them within one CPU `budget` (BudgetExceeded -> 413 deid_budget_exceeded). Surrogate
    modes fill `mapping` (a new one of this call if None): the answer's re-identifier reads it."""
    found: Counter = Counter()
    if mode in ("surrogate", "surrogate_shift"):  # KServe v2: one mapping per call
        if mapping is None:
            mapping = SurrogateMap.with_date_shift() if mode == "surrogate_shift" else SurrogateMap()
        mode, key = "surrogate", None
    else:
        mapping = None
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
            raise ServiceError(
                "invalid_request",
                _("binary_data_size without the %(header_length)s header") % {"header_length": HEADER_LENGTH},
            )
        raw = tail[offset : offset + int(size)]
        if len(raw) != int(size):
            raise ServiceError("invalid_request", _("the binary tensor data is shorter than binary_data_size"))
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


# -- answers ---------------------------------------------------------------------------------------

ANSWER_UNSCREENABLE = "answer_unscreenable"


@dataclass
class AnswerOutcome:
    """What screening and re-identifying a KServe v2 answer did: counts only, never values.
    `body`/`header_length` are the upstream's own objects when nothing changed (no copy)."""

    body: bytes
    header_length: str | None
    found: dict[str, int] = field(default_factory=dict)  # identifiers the screen found, by type
    reidentified: dict[str, int] = field(default_factory=dict)  # surrogates put back, by type
    unscreened: int = 0  # BYTES elements that are not UTF-8 text (alert mode: passed as they are)
    parsed: bool = True  # False: not a KServe v2 answer (passed as it came)


class _Answer:
    def __init__(self, screen: str, allowed, reidentifier):
        self.screen, self.allowed, self.reid = screen, allowed, reidentifier
        self.found: Counter = Counter()
        self.unscreened = 0
        self.changed = False

    def text(self, text: str) -> str:
        out = text
        if self.screen != "off":
            result = screen_text(out, self.screen, self.allowed)
            self.found.update(result.found)
            out = result.text
        if self.reid is not None:
            self.reid.prev = ""  # each element is a text of its own: no word runs on from the last one
            out = self.reid.reidentify(out)
        self.changed |= out != text
        return out

    def element(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                return self._unscreenable(value)
            out = self.text(text)
            return value if out == text else out.encode("utf-8")
        return value  # a number or null in a BYTES output's JSON: not text

    def _unscreenable(self, value: bytes) -> bytes:
        if self.screen == "redact":  # fail closed: what cannot be read cannot be let through
            raise ServiceError(
                ANSWER_UNSCREENABLE,
                _(
                    "the model answered a BYTES output that is not UTF-8 text, which this model's answer screen "
                    "cannot check; nothing was returned"
                ),
                502,
            )
        if self.screen == "alert":
            self.unscreened += 1
        return value

    def walk(self, data, depth: int = 0):
        if isinstance(data, list):
            if depth > 64:
                return data
            return [self.walk(item, depth + 1) for item in data]
        return self.element(data)


def answer_outputs(
    body: bytes, header_length: str | None, screen: str, allowed=(), reidentifier: Reidentifier | None = None
) -> AnswerOutcome:
    """Screen (`screen`: off | redact | alert, with `allowed` strings passing) then re-identify every
    BYTES output of a KServe v2 infer answer, JSON or binary. An answer that is not KServe v2 JSON
    (or whose binary part does not match its header) is returned as it came, `parsed` False.
    Raises ServiceError 502 `answer_unscreenable` for a non-UTF-8 BYTES element under `redact`."""
    unparsed = AnswerOutcome(body, header_length, parsed=False)
    binary_at = None
    if header_length is not None:
        try:
            binary_at = int(header_length)
        except ValueError:
            return unparsed
        if not 0 < binary_at <= len(body):
            return unparsed
    try:
        header = json.loads(body[:binary_at] if binary_at is not None else body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return unparsed
    outputs = header.get("outputs") if isinstance(header, dict) else None
    if not isinstance(outputs, list):
        return unparsed
    work = _Answer(screen, allowed, reidentifier)
    tail = body[binary_at:] if binary_at is not None else b""
    new_tail, offset = [], 0
    for output in outputs:
        if not isinstance(output, dict):
            continue
        params = output.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            if output.get("datatype") == "BYTES" and "data" in output:
                output["data"] = work.walk(output["data"])
            continue
        if binary_at is None or not isinstance(size, int) or size < 0 or offset + size > len(tail):
            return unparsed
        raw = tail[offset : offset + size]
        offset += size
        if output.get("datatype") == "BYTES":
            try:
                items = _split_bytes(raw)
            except ServiceError:
                return unparsed
            new = [work.element(item) for item in items]
            if any(a is not b for a, b in zip(new, items, strict=True)):
                raw = _join_bytes(new)
                params["binary_data_size"] = len(raw)
        new_tail.append(raw)
    found = dict(work.found)
    reidentified = dict(reidentifier.counts) if reidentifier is not None else {}
    if not work.changed:
        return AnswerOutcome(body, header_length, found, reidentified, work.unscreened)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if binary_at is None:
        return AnswerOutcome(head, None, found, reidentified, work.unscreened)
    new_body = head + b"".join(new_tail) + tail[offset:]
    return AnswerOutcome(new_body, str(len(head)), found, reidentified, work.unscreened)
