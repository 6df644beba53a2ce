"""KServe v2 / Triton HTTP request checks done before anything is forwarded.

Only the JSON header is parsed; with Triton's binary tensor extension the tensor bytes that
follow it are forwarded untouched.
"""

from __future__ import annotations

import json

from apps.core.errors import ServiceError, _

HEADER_LENGTH = "Inference-Header-Content-Length"


def parse_infer_header(body: bytes, header_length: str | None) -> dict:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 < n <= len(body):
            raise ServiceError(
                "invalid_request",
                _("%(header_length)s must be between 1 and the body length") % {"header_length": HEADER_LENGTH},
            )
        raw = body[:n]
    else:
        raw = body
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ServiceError(
            "invalid_request", _("the inference request is not valid JSON: %(err)s") % {"err": err}
        ) from None
    except RecursionError:  # arrays nested thousands deep
        raise ServiceError("invalid_request", _("the inference request is nested too deeply")) from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ServiceError("invalid_request", _("the inference request must be an object with an 'inputs' list"))
    return header


SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def _refuse_shared_memory(params, where: str) -> None:
    """A shared-memory region is looked up on the Triton host: a caller naming one would read or
    write memory registered there by someone else. The gateway forwards tensors in the request only."""
    if isinstance(params, dict) and any(key in params for key in SHARED_MEMORY):
        raise ServiceError(
            "shared_memory_not_supported",
            _("%(where)s names a shared-memory region: the gateway forwards tensors only in the request")
            % {"where": where},
        )


PHI_NUMERIC_INPUTS_UNDECLARED = "phi_numeric_inputs_undeclared"


def refuse_numeric_inputs(header: dict) -> None:
    """A model that receives PHI takes text only, unless its policy declares its numeric inputs: the
    de-identifier reads BYTES elements, and a numeric tensor (pre-tokenised `input_ids`, encoded
    features) would carry identifiers to Triton unseen. 403, nothing forwarded."""
    numeric = sorted(
        f"{str(t.get('name'))[:100]} ({t.get('datatype')})"
        for t in header.get("inputs") or []
        if isinstance(t, dict) and t.get("datatype") != "BYTES"
    )
    if numeric:
        raise ServiceError(
            PHI_NUMERIC_INPUTS_UNDECLARED,
            _(
                "this model receives PHI and only its text (BYTES) inputs are de-identified; numeric "
                "input(s) %(numeric)s are refused until a security officer declares in the model's "
                "compliance policy (numeric_inputs_reason) why they carry no identifiers"
            )
            % {"numeric": ", ".join(numeric)},
            403,
        )


def check_against_signature(header: dict, signature: dict, max_batch_size: int) -> None:
    """Refuse unknown, missing or mistyped tensors with a precise code before Triton sees them,
    and shared-memory parameters anywhere."""
    _refuse_shared_memory(header.get("parameters"), "the request")
    for kind in ("inputs", "outputs"):
        for tensor in header.get(kind) or []:
            if isinstance(tensor, dict):
                _refuse_shared_memory(tensor.get("parameters"), f"{kind[:-1]} {str(tensor.get('name'))[:100]!r}")
    if signature.get("kind") == "llm":  # a language model: its contract is the OpenAI API's
        raise ServiceError(
            "not_a_kserve_model",
            _("this is a language model: call it with the OpenAI-compatible API (POST /v1/chat/completions)"),
            400,
        )
    specs = {s["name"]: s for s in signature["inputs"]}
    seen = set()
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict):
            raise ServiceError("invalid_request", _("each input must be an object"))
        name = tensor.get("name")
        spec = specs.get(name)
        if spec is None:
            raise ServiceError(
                "unknown_input",
                _("the model has no input named %(name)s; its inputs are %(specs)s")
                % {"name": repr(name), "specs": ", ".join(sorted(specs))},
                field="inputs",
            )
        seen.add(name)
        if tensor.get("datatype") != spec["datatype"]:
            raise ServiceError(
                "wrong_datatype",
                _("input %(name)s must be %(datatype)s, got %(get)s")
                % {"name": repr(name), "datatype": spec["datatype"], "get": repr(tensor.get("datatype"))},
                field="inputs",
            )
        _check_shape(name, tensor.get("shape"), spec["shape"], signature.get("batch_dynamic"), max_batch_size)
    missing = set(specs) - seen
    if missing:
        raise ServiceError(
            "missing_input",
            _("missing input(s): %(missing)s") % {"missing": ", ".join(sorted(missing))},
            field="inputs",
        )
    outputs = {s["name"] for s in signature["outputs"]}
    for out in header.get("outputs") or []:
        if not isinstance(out, dict) or out.get("name") not in outputs:
            name = out.get("name") if isinstance(out, dict) else out
            raise ServiceError(
                "unknown_output",
                _("the model has no output named %(name)s; its outputs are %(outputs)s")
                % {"name": repr(name), "outputs": ", ".join(sorted(outputs))},
                field="outputs",
            )


def _check_shape(name, shape, expected, batch_dynamic, max_batch_size) -> None:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ServiceError(
            "wrong_shape",
            _("input %(name)s needs a shape of non-negative integers") % {"name": repr(name)},
            field="inputs",
        )
    if len(shape) != len(expected) or any(e >= 0 and d != e for d, e in zip(shape, expected, strict=True)):
        raise ServiceError(
            "wrong_shape",
            _("input %(name)s has shape %(shape)s; the model expects %(expected)s (-1 = any size)")
            % {"name": repr(name), "shape": shape, "expected": expected},
            field="inputs",
        )
    if batch_dynamic and max_batch_size and shape and shape[0] > max_batch_size:
        raise ServiceError(
            "batch_too_large",
            _("input %(name)s has batch %(value)s; this deployment accepts at most %(max_batch_size)s")
            % {"name": repr(name), "value": shape[0], "max_batch_size": max_batch_size},
            field="inputs",
        )
