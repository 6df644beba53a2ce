"""A chat model's policy as the data plane applies it: plain dicts, pure functions, no ORM.

`load_chat_policies(connection)` reads every ChatPolicy row in one statement for the policy
snapshot; `policy_for(policies, model_id)` answers the model's policy or the defaults; the /v1
adapter calls `check_request(policy, max_tokens, sampling)` before anything reaches Triton and
`system_messages(policy, messages)` to enforce the system prompt. See docs/llm.md, "Governance:
chat policy, quotas, usage, retention".

`allowed_sampling` maps a sampling key (the Triton contract's vLLM names) to:
- `[low, high]`: allowed, the value must lie in the closed range (numbers only);
- `true`: allowed with any value the contract accepts;
- `false` or absent: refused (400 `sampling_not_allowed`) whenever the caller sends it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from apps.core.errors import ServiceError, _

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "seed", "stop")
NUMERIC = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "top_k": (-1, 1_000_000)}  # the contract's bounds
STOP_MAX, STOP_LEN = 4, 64
RETENTIONS = ("none", "digest", "full")
MODES = ("prepend", "replace")

DEFAULT_POLICY: dict = {
    "model_id": None,
    "max_tokens_per_call": 1024,
    "allowed_sampling": {"temperature": [0, 1.5], "top_p": [0.1, 1], "top_k": [0, 100], "seed": True, "stop": True},
    "system_prompt": "",
    "system_prompt_mode": "prepend",
    "retention": "none",
    "retention_days": 30,
}


def validate_allowed_sampling(value) -> dict:
    """The `allowed_sampling` JSON, checked: a dict of known keys to a bool or, for numeric keys, a
    `[low, high]` pair inside the contract's bounds. Raises 400 `invalid_allowed_sampling`."""

    def bad(detail: str) -> ServiceError:
        return ServiceError("invalid_allowed_sampling", detail, field="allowed_sampling")

    if not isinstance(value, dict):
        raise bad(_("allowed_sampling must be an object of sampling key -> true | false | [low, high]"))
    out = {}
    for key, rule in value.items():
        if key not in SAMPLING_KEYS:
            raise bad(
                _("unknown sampling key %(key)s; known: %(sampling_keys)s")
                % {"key": repr(key), "sampling_keys": ", ".join(SAMPLING_KEYS)}
            )
        if isinstance(rule, bool):
            out[key] = rule
            continue
        if key not in NUMERIC:
            raise bad(_("%(key)s takes true or false, not a range") % {"key": key})
        if (
            not isinstance(rule, list)
            or len(rule) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in rule)
        ):
            raise bad(_("%(key)s takes true, false or [low, high]") % {"key": key})
        low, high = rule
        lo, hi = NUMERIC[key]
        if not (lo <= low <= high <= hi):
            raise bad(
                _("%(key)s: the range must satisfy %(lo)s <= low <= high <= %(hi)s") % {"key": key, "lo": lo, "hi": hi}
            )
        out[key] = [low, high]
    return out


def policy_for(policies: Mapping[int, dict], model_id: int) -> dict:
    """The model's policy from `load_chat_policies`, or the defaults (a model without a row)."""
    found = policies.get(model_id)
    return found if found is not None else {**DEFAULT_POLICY, "model_id": model_id}


def _refuse(detail: str, field: str) -> ServiceError:
    return ServiceError("sampling_not_allowed", detail, 400, field=field)


def check_request(policy: Mapping, max_tokens: int | None, sampling: Mapping) -> dict:
    """Apply a model's policy to one call. Returns the sampling parameters to send to Triton
    (the contract's names, `max_tokens` always set: the caller's, or the policy's maximum when
    absent). Raises ServiceError 400 `max_tokens_exceeded` (above the policy) or
    `sampling_not_allowed` (a key the policy refuses, a value outside its range or of the wrong
    type); `field` names the parameter. Keys with a None value count as absent."""
    limit = int(policy["max_tokens_per_call"])
    if max_tokens is None:
        max_tokens = limit
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ServiceError("invalid_max_tokens", _("max_tokens must be a positive integer"), 400, field="max_tokens")
    if max_tokens > limit:
        raise ServiceError(
            "max_tokens_exceeded",
            _("max_tokens %(max_tokens)s is above this model's limit of %(limit)s per call")
            % {"max_tokens": max_tokens, "limit": limit},
            400,
            field="max_tokens",
        )
    allowed = policy.get("allowed_sampling") or {}
    out: dict = {}
    for key, value in sampling.items():
        if value is None:
            continue
        if key not in SAMPLING_KEYS:
            raise _refuse(_("%(key)s is not a sampling parameter this gateway accepts") % {"key": repr(key)}, key)
        rule = allowed.get(key, False)
        if rule is False:
            raise _refuse(_("this model's policy does not allow %(key)s") % {"key": key}, key)
        out[key] = _checked(key, value, rule)
    out["max_tokens"] = max_tokens
    return out


def _checked(key: str, value, rule):
    if key in NUMERIC:
        number = key == "top_k"
        ok = isinstance(value, int) if number else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or not math.isfinite(value):
            raise _refuse(
                _("%(key)s must be %(value)s") % {"key": key, "value": "an integer" if number else "a number"}, key
            )
        lo, hi = rule if isinstance(rule, list) else NUMERIC[key]
        if not lo <= value <= hi:
            raise _refuse(
                _("%(key)s %(value)s is outside this model's allowed range [%(lo)s, %(hi)s]")
                % {"key": key, "value": value, "lo": lo, "hi": hi},
                key,
            )
        return value
    if key == "seed":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise _refuse(_("seed must be a non-negative integer"), key)
        return value
    stops = [value] if isinstance(value, str) else value  # OpenAI accepts a string or a list
    if not isinstance(stops, list) or not all(isinstance(s, str) and 0 < len(s) <= STOP_LEN for s in stops):
        raise _refuse(
            _("stop must be a string or a list of non-empty strings of at most %(stop_len)s characters")
            % {"stop_len": STOP_LEN},
            key,
        )
    if len(stops) > STOP_MAX:
        raise _refuse(_("at most %(stop_max)s stop sequences") % {"stop_max": STOP_MAX}, key)
    return stops


def system_messages(policy: Mapping, messages: Sequence[Mapping]) -> list[dict]:
    """The messages with the policy's system prompt enforced: `prepend` puts it first (the caller's
    own system messages follow it); `replace` drops every system message of the caller and puts
    it first. No system prompt in the policy: the messages unchanged."""
    prompt = policy.get("system_prompt") or ""
    if not prompt:
        return [dict(m) for m in messages]
    kept = [dict(m) for m in messages if policy.get("system_prompt_mode") != "replace" or m.get("role") != "system"]
    return [{"role": "system", "content": prompt}, *kept]


def load_chat_policies(connection) -> dict[int, dict]:
    """{model id: policy dict} for every ChatPolicy row, in one statement on `connection` (a Django
    connection; call it inside the snapshot's read transaction). Models without a row are absent:
    `policy_for` gives them the defaults."""
    from .models import ChatPolicy

    table = connection.ops.quote_name(ChatPolicy._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT model_id, max_tokens_per_call, allowed_sampling, system_prompt, system_prompt_mode,"  # noqa: S608
            f" retention, retention_days FROM {table}"
        )
        rows = cursor.fetchall()
    return {
        model_id: {
            "model_id": model_id,
            "max_tokens_per_call": int(limit),
            "allowed_sampling": json.loads(sampling) if isinstance(sampling, str | bytes) else sampling,
            "system_prompt": prompt,
            "system_prompt_mode": mode,
            "retention": retention,
            "retention_days": int(days),
        }
        for model_id, limit, sampling, prompt, mode, retention, days in rows
    }
