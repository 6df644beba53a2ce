"""Sampling parameters (vLLM's names) with stable error codes, and token sampling from logits.

No Django here: this module ships to Triton hosts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 2.0
#: Tokens considered first for top-p: the nucleus almost always lies inside them (checked, with a
#: fallback to the whole vocabulary, so the result is exact).
NUCLEUS_CANDIDATES = 512


class EngineError(Exception):
    """A request refused before it is admitted; ``str()`` starts with ``[code]``."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"[{code}] {message}")


def _bad(message: str) -> EngineError:
    return EngineError("invalid_sampling_parameters", message)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None  # None = the model's default, bounded by the context
    stop_token_ids: tuple[int, ...] = field(default=())

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


ALLOWED_KEYS = ("temperature", "top_p", "top_k", "seed", "stop", "max_tokens", "stop_token_ids")


def parse_sampling_parameters(
    raw: str | bytes | dict[str, Any] | None,
    *,
    defaults: dict[str, Any] | None = None,
    vocab_size: int | None = None,
) -> SamplingParams:
    """Validate a ``sampling_parameters`` JSON object (vLLM key names); unknown keys are refused.

    ``defaults`` are the model's ``generation_config.json`` (``temperature``, ``top_p``, ``top_k``;
    ``max_new_tokens`` is applied by the engine): they fill the keys the request leaves out.
    """
    if raw is None or raw == "" or raw == b"":
        data: dict[str, Any] = {}
    elif isinstance(raw, dict):
        data = raw
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"sampling_parameters is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _bad("sampling_parameters must be a JSON object")
    unknown = sorted(set(data) - set(ALLOWED_KEYS))
    if unknown:
        raise _bad(f"unknown sampling parameter(s) {', '.join(unknown)}; allowed: {', '.join(ALLOWED_KEYS)}")
    defaults = defaults or {}
    values: dict[str, Any] = {}

    temperature = data.get("temperature", defaults.get("temperature", 1.0))
    temperature = _number("temperature", 1.0 if temperature is None else temperature)
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise _bad(f"temperature must be between 0 and {MAX_TEMPERATURE:g}, got {temperature:g}")
    values["temperature"] = temperature

    top_p = data.get("top_p", defaults.get("top_p", 1.0))
    top_p = _number("top_p", 1.0 if top_p is None else top_p)
    if not 0.0 < top_p <= 1.0:
        raise _bad(f"top_p must be greater than 0 and at most 1, got {top_p:g}")
    values["top_p"] = top_p

    top_k = data.get("top_k", defaults.get("top_k", 0))
    top_k = _integer("top_k", 0 if top_k is None else top_k)
    if top_k < -1:
        raise _bad(f"top_k must be -1 or 0 (off) or at least 1, got {top_k}")
    values["top_k"] = 0 if top_k == -1 else top_k

    if data.get("seed") is not None:
        seed = _integer("seed", data["seed"])
        if not -(2**63) <= seed < 2**64:
            raise _bad("seed must fit in 64 bits")
        values["seed"] = seed % 2**64

    stop = data.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop must be a string or a list of strings")
        if len(stop) > MAX_STOP_STRINGS:
            raise _bad(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}")
        for s in stop:
            if not s or len(s) > MAX_STOP_CHARS:
                raise _bad(f"each stop string must have 1 to {MAX_STOP_CHARS} characters, got {len(s)}")
        values["stop"] = tuple(stop)

    if data.get("max_tokens") is not None:
        max_tokens = _integer("max_tokens", data["max_tokens"])
        if max_tokens < 1:
            raise _bad(f"max_tokens must be at least 1, got {max_tokens}")
        values["max_tokens"] = max_tokens

    ids = data.get("stop_token_ids")
    if ids is not None:
        if not isinstance(ids, list) or len(ids) > 64:
            raise _bad("stop_token_ids must be a list of at most 64 token ids")
        checked = tuple(_integer("stop_token_ids", i) for i in ids)
        limit = vocab_size if vocab_size is not None else 2**31
        bad = [i for i in checked if not 0 <= i < limit]
        if bad:
            raise _bad(f"stop_token_ids outside the vocabulary (0..{limit - 1}): {bad[:5]}")
        values["stop_token_ids"] = checked
    return SamplingParams(**values)


def make_rng(seed: int | None) -> np.random.Generator:
    """A per-request generator: the same seed gives the same tokens whatever else runs alongside."""
    return np.random.Generator(np.random.PCG64(seed))


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token id from one row of logits (float32 [vocab])."""
    if params.greedy:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / params.temperature
    vocab = x.shape[0]
    k = params.top_k if 0 < params.top_k < vocab else vocab
    if k < vocab:
        allowed = np.argpartition(-x, k - 1)[:k]
        x_allowed = x[allowed]
    else:
        allowed = None
        x_allowed = x
    top = x_allowed.max()
    log_norm = top + math.log(float(np.exp(x_allowed - top).sum()))
    if params.top_p < 1.0:
        candidates = None
        n0 = min(NUCLEUS_CANDIDATES, x_allowed.shape[0])
        if n0 < x_allowed.shape[0]:
            local = np.argpartition(-x_allowed, n0 - 1)[:n0]
            order = local[np.argsort(-x_allowed[local], kind="stable")]
            probs = np.exp(x_allowed[order] - log_norm)
            if probs.sum() >= params.top_p:
                candidates = order
        if candidates is None:  # the nucleus is wider than the candidates: sort everything
            candidates = np.argsort(-x_allowed, kind="stable")
            probs = np.exp(x_allowed[candidates] - log_norm)
        cumulative = np.cumsum(probs)
        cut = int(np.searchsorted(cumulative, params.top_p)) + 1  # smallest set reaching top_p
        candidates, probs = candidates[:cut], probs[:cut]
    else:
        candidates = np.arange(x_allowed.shape[0])
        probs = np.exp(x_allowed - log_norm)
    cumulative = np.cumsum(probs)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    pick = min(pick, cumulative.shape[0] - 1)
    local_index = int(candidates[pick])
    return int(allowed[local_index]) if allowed is not None else local_index
