"""The public model name in answers that Triton gives under its internal one.

A version is loaded on Triton as triton_model_name(model, version) ("triage--v2"), so that several
versions of one model can run side by side on one server (apps/deployments/models.py). Callers
never see that name: they call /v2/models/triage[/versions/2], and Triton's answer is rewritten
before it is relayed —

- an inference answer: `"model_name":"triage--v2"` in its JSON head (the whole body, or the first
  Inference-Header-Content-Length bytes of a binary-tensor answer, whose length is adjusted);
- a metadata answer: its top-level `"name":"triage--v2"`;
- an error text that names the internal name.

`model_version` needs no rewrite: the version directory inside the Triton model is the registry
version, so Triton already answers with it.

The fast path stays fast: Triton writes compact JSON with `model_name` before `outputs`, so the
key is found by one bytes search that stops at its first match inside the JSON head, and the body
is never parsed. The needle carries the quotes around key and value: inside a JSON string value
(a request id, a BYTES output) a quote is escaped, so the needle can only match the key itself.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..protocol import HEADER_LENGTH
from .types import Outbound


@lru_cache(maxsize=1024)
def _needles(key: str, internal: str, public: str) -> tuple[bytes, bytes]:
    return f'"{key}":"{internal}"'.encode(), f'"{key}":"{public}"'.encode()


def _replace_in_head(body: bytes, end: int, key: str, internal: str, public: str) -> tuple[bytes, int]:
    """`body` with the first `"key":"internal"` before `end` replaced; and the change in length."""
    needle, replacement = _needles(key, internal, public)
    at = body.find(needle, 0, end)
    if at < 0:
        return body, 0
    # one copy of the body (a memoryview tail is not sliced first: 1 MiB in ~0.1 ms, not several ms)
    return b"".join((body[:at], replacement, memoryview(body)[at + len(needle) :])), len(replacement) - len(needle)


def public_infer_answer(out: Outbound, internal: str, public: str) -> Outbound:
    """An inference answer with its `model_name` rewritten from `internal` to `public` (and its
    Inference-Header-Content-Length adjusted); the same object when there is nothing to rewrite."""
    if internal == public or out.status >= 400:
        return out
    length = None
    for name, value in out.headers:
        if name == HEADER_LENGTH:
            length = value
            break
    end = len(out.body)
    if length is not None:
        if not length.isdigit() or int(length) > end:
            return out  # not a head we can read: relayed as Triton sent it
        end = int(length)
    body, delta = _replace_in_head(out.body, end, "model_name", internal, public)
    if not delta and body is out.body:
        return out
    headers = out.headers
    if length is not None:
        headers = [(n, str(end + delta) if n == HEADER_LENGTH else v) for n, v in out.headers]
    return Outbound(out.status, body, headers, out.error, out.retry_after)


def public_metadata_answer(out: Outbound, internal: str, public: str) -> Outbound:
    """A model metadata answer with its top-level `name` rewritten (Triton writes it first)."""
    if internal == public or out.status >= 400:
        return out
    body, _ = _replace_in_head(out.body, len(out.body), "name", internal, public)
    if body is out.body:
        return out
    return Outbound(out.status, body, out.headers, out.error, out.retry_after)


@lru_cache(maxsize=1024)
def _name_pattern(internal: str) -> re.Pattern:
    # the whole name only: "m--v1" is not rewritten inside "m--v12" or "xm--v1"
    return re.compile(rf"(?<![A-Za-z0-9_.-]){re.escape(internal)}(?![A-Za-z0-9_.-])")


def public_text(text: str, internal: str, public: str) -> str:
    """An upstream error text with the internal Triton name replaced by the public model name."""
    if internal == public or internal not in text:
        return text
    return _name_pattern(internal).sub(public, text)
