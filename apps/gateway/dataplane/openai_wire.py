"""The OpenAI wire format, without I/O: parsing and checking a request, rendering the prompt,
and the shapes of answers, chunks and errors. The adapter (openai.py) does the I/O.

Only what Sovereign can honour is accepted: a parameter OpenAI defines but this gateway cannot
apply (n > 1, tools, logprobs, penalties, JSON mode…) is refused with `unsupported_parameter`
rather than silently ignored, so a client never believes it got what it did not.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

from apps.core.errors import ServiceError, _

CHAT, COMPLETION = "chat", "completion"
ROLES = frozenset({"system", "user", "assistant"})
MAX_STOP = 4
MAX_STOP_CHARS = 64
# Accepted and ignored: they change nothing the caller could observe (or are metadata).
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
_NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "n": 1, "logprobs": False, "echo": False, "best_of": 1}
_UNSUPPORTED = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "logit_bias",
        "top_logprobs",
        "suffix",
        "audio",
        "modalities",
        "prediction",
        "reasoning_effort",
        "web_search_options",
    }
)
_CHAT_KEYS = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p"}
    | {"top_k", "seed", "stop", "response_format"}
)
_COMPLETION_KEYS = frozenset({"model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p"}) | {
    "top_k",
    "seed",
    "stop",
}

# OpenAI's error `type` for each HTTP status (the stable `code` is ours).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(err: ServiceError) -> dict:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    kind = _ERROR_TYPES.get(err.status_code, "server_error" if err.status_code >= 500 else "invalid_request_error")
    return {"error": {"message": err.detail, "type": kind, "param": err.field, "code": err.code}}


def bad(code: str, detail: str, param: str | None = None, status: int = 400) -> ServiceError:
    return ServiceError(code, detail, status, field=param)


@dataclass
class LLMRequest:
    kind: str  # CHAT | COMPLETION
    model: str
    messages: list[dict] = field(default_factory=list)  # CHAT: [{"role", "content"}], content a str
    prompt: str = ""  # COMPLETION
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    sampling: dict = field(default_factory=dict)  # temperature, top_p, top_k, seed, stop (vLLM names)

    def texts(self) -> list[str]:
        return [m["content"] for m in self.messages] if self.kind == CHAT else [self.prompt]


def _number(body: dict, key: str, low: float, high: float, *, integer: bool = False):
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise bad(
            "invalid_parameter",
            _("%(key)s must be %(value)s") % {"key": key, "value": "an integer" if integer else "a number"},
            key,
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise bad("invalid_parameter", _("%(key)s must be finite") % {"key": key}, key)
    if not low <= value <= high:
        raise bad(
            "invalid_parameter",
            _("%(key)s must be between %(low)s and %(high)s") % {"key": key, "low": low, "high": high},
            key,
        )
    return value


def _content(message: dict, index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": …}]: text parts only
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(
                    "unsupported_content",
                    _("messages[%(index)s].content: only text parts are supported") % {"index": index},
                    f"messages[{index}].content",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise bad(
        "invalid_message",
        _("messages[%(index)s].content must be a string") % {"index": index},
        f"messages[{index}].content",
    )


def parse_request(kind: str, raw: bytes, *, max_chars: int, max_messages: int) -> LLMRequest:
    """The request, checked; ServiceError (400) with a stable code and the offending `param`."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested thousands deep
        raise bad("invalid_json", _("the request body is not valid JSON")) from None
    if not isinstance(body, dict):
        raise bad("invalid_json", _("the request body must be a JSON object"))
    allowed = _CHAT_KEYS if kind == CHAT else _COMPLETION_KEYS
    for key, value in body.items():
        if key in _IGNORED:
            continue
        if key in _NEUTRAL:
            if value is not None and value != _NEUTRAL[key]:
                raise bad(
                    "unsupported_parameter",
                    _("%(key)s=%(value)s is not supported by this gateway") % {"key": key, "value": repr(value)},
                    key,
                )
            continue
        if key in _UNSUPPORTED or key not in allowed:
            raise bad("unsupported_parameter", _("%(key)s is not supported by this gateway") % {"key": key}, key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model_required", _("model is required"), "model")
    req = LLMRequest(kind=kind, model=model)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad("invalid_parameter", _("stream must be a boolean"), "stream")
    req.stream = bool(stream)
    options = body.get("stream_options")
    if options is not None:
        if not req.stream:
            raise bad("invalid_parameter", _("stream_options is only allowed with stream=true"), "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise bad("invalid_parameter", _("stream_options accepts include_usage only"), "stream_options")
        req.include_usage = bool(options.get("include_usage"))
    if kind == CHAT:
        fmt = body.get("response_format")
        if fmt is not None and fmt != {"type": "text"}:
            raise bad(
                "unsupported_parameter", _("only response_format {'type': 'text'} is supported"), "response_format"
            )
        req.messages = _messages(body.get("messages"), max_messages)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise bad("invalid_prompt", _("prompt must be a string (or a list of one string)"), "prompt")
        if not prompt:
            raise bad("empty_prompt", _("prompt is empty"), "prompt")
        req.prompt = prompt
    size = sum(len(t) for t in req.texts())
    if size > max_chars:
        raise bad(
            "prompt_too_large",
            _("the messages hold %(size)s characters; the limit is %(max_chars)s")
            % {"size": size, "max_chars": max_chars},
            "messages",
            413,
        )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise bad("invalid_parameter", _("max_tokens must be a positive integer"), "max_tokens")
        req.max_tokens = max_tokens
    sampling = {}
    for key, low, high, integer in (
        ("temperature", 0, 2, False),
        ("top_p", 0, 1, False),
        ("top_k", -1, 1000, True),
        ("seed", -(2**63), 2**63 - 1, True),
    ):
        value = _number(body, key, low, high, integer=integer)
        if value is not None:
            sampling[key] = value
    if sampling.get("top_p") == 0:
        raise bad("invalid_parameter", _("top_p must be greater than 0"), "top_p")
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > MAX_STOP
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
        ):
            raise bad(
                "invalid_parameter",
                _(
                    "stop must be a string or a list of at most %(max_stop)s non-empty strings of ≤ "
                    "%(max_stop_chars)s characters"
                )
                % {"max_stop": MAX_STOP, "max_stop_chars": MAX_STOP_CHARS},
                "stop",
            )
        if stops:
            sampling["stop"] = stops
    req.sampling = sampling
    return req


def _messages(messages, max_messages: int) -> list[dict]:
    if not isinstance(messages, list):
        raise bad("messages_required", _("messages must be a list"), "messages")
    if not messages:
        raise bad("empty_messages", _("messages is empty"), "messages")
    if len(messages) > max_messages:
        raise bad(
            "too_many_messages", _("at most %(max_messages)s messages") % {"max_messages": max_messages}, "messages"
        )
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad(
                "invalid_message", _("messages[%(index)s] must be an object") % {"index": index}, f"messages[{index}]"
            )
        role = message.get("role")
        if role not in ROLES:
            raise bad(
                "unknown_role",
                _("messages[%(index)s].role must be one of %(roles)s")
                % {"index": index, "roles": ", ".join(sorted(ROLES))},
                f"messages[{index}].role",
            )
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise bad(
                "unsupported_parameter",
                _("messages[%(index)s] has unsupported keys: %(extra)s")
                % {"index": index, "extra": ", ".join(sorted(extra))},
                f"messages[{index}]",
            )
        out.append({"role": role, "content": _content(message, index)})
    if all(not m["content"].strip() for m in out):
        raise bad("empty_messages", _("every message is empty"), "messages")
    return out


def control_tokens(signature: dict) -> list[str]:
    """The model's control tokens (from its tokenizer; else its BOS/EOS and ChatML's markers)."""
    found = [t for t in signature.get("special_tokens") or [] if isinstance(t, str) and t]
    if not found:
        found = [t for t in (signature.get("bos_token"), signature.get("eos_token")) if t]
        found += ["<|im_start|>", "<|im_end|>"]
    return found


def refuse_control_tokens(messages: list[dict], tokens: list[str]) -> None:
    """A message holding a control token's text would be tokenised as that token: a forged turn, a
    forged system prompt past the enforced one. Refused (400 `control_token_in_content`)."""
    for index, message in enumerate(messages):
        content = message["content"]
        for token in tokens:
            if token in content:
                raise bad(
                    "control_token_in_content",
                    _("messages[%(index)s].content holds the model's control token %(token)s")
                    % {"index": index, "token": repr(token)},
                    f"messages[{index}].content",
                )


# --- the prompt ---------------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class TemplateError(Exception):
    pass


@lru_cache(maxsize=64)
def _compiled(source: str):
    """The chat template compiled as Hugging Face's apply_chat_template does: a sandboxed,
    immutable Jinja environment (a template cannot reach Python objects or change state)."""
    from jinja2 import TemplateError as JinjaError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except JinjaError as err:
        raise TemplateError(f"the model's chat template does not compile: {err}") from None


def render_chat(template: str | None, messages: list[dict], *, bos_token: str = "", eos_token: str = "") -> str:
    """The prompt text for `messages` with the model's chat template (ChatML when it has none)."""
    from jinja2 import TemplateError as JinjaError

    try:
        return _compiled(template or CHATML).render(
            messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
        )
    except TemplateError as err:
        raise bad(
            "invalid_messages", _("the model's chat template refused the messages: %(err)s") % {"err": err}, "messages"
        ) from None
    except JinjaError as err:
        raise ServiceError(
            "chat_template_failed", _("the model's chat template failed: %(err)s") % {"err": err}, 500
        ) from None


# --- answers ------------------------------------------------------------------------------------


def completion_id(kind: str, request_id: str) -> str:
    return ("chatcmpl-" if kind == CHAT else "cmpl-") + request_id


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def whole_answer(
    req: LLMRequest, request_id: str, model: str, text: str, finish: str, prompt: int, completion: int
) -> dict:
    created = int(time.time())
    if req.kind == CHAT:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {
        "id": completion_id(req.kind, request_id),
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(prompt, completion),
    }


def chunk(req: LLMRequest, request_id: str, model: str, created: int, *, text=None, role=False, finish=None) -> dict:
    if req.kind == CHAT:
        delta: dict = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    body = {"id": completion_id(req.kind, request_id), "object": obj, "created": created, "model": model}
    body["choices"] = [choice]
    return body


def usage_chunk(req: LLMRequest, request_id: str, model: str, created: int, prompt: int, completion: int) -> dict:
    obj = "chat.completion.chunk" if req.kind == CHAT else "text_completion"
    return {
        "id": completion_id(req.kind, request_id),
        "object": obj,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(prompt, completion),
    }


def sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
