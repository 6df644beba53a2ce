"""The OpenAI-compatible API on the data plane's pipeline (docs/llm.md):

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models

The same steps as a KServe call — authenticate from the snapshot, rate limit per token, route by
grant, de-identify, forward, audit — plus what a language model needs: the model's chat policy
(maximum tokens, allowed sampling, an enforced system prompt), the chat template, prompt tokens
counted with the model's own tokenizer, a quota reservation settled when the call ends, and a
stream relayed as server-sent events.

Upstream every backend speaks one tensor contract (vLLM's: `text_input`, `sampling_parameters` →
`text_output`, `finish_reason`, token counts) through Triton's `generate_stream`, so nothing here
branches on the backend. A client that goes away closes the upstream stream, which Triton turns
into a cancelled request: generation stops at its next decode step.

Audit: a refused call is one event, like any gateway refusal. A served call is one event written
when it ends (tokens, time to first token, duration, finish reason), also when the client has
gone; a streamed call first writes a `.started` event, awaited before the first byte is sent, so
no answer leaves without a durable record of who asked for it (fail closed), and the completion
event is committed before `[DONE]`: a client that saw `[DONE]` is in the audit log and the usage
table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field

from django.conf import settings

from apps.core.errors import ServiceError, _
from apps.core.netaddr import client_address, trusted_proxies
from apps.core.source import Source
from apps.deployments import slo

from .. import deid
from ..phi import refusal
from . import openai_wire as wire
from .names import public_text
from .pipeline import Call, new_request_id
from .surrogates import CONVERSATION_HEADER, ConversationStore, check_size, conversation_id, surrogate_strings
from .types import Inbound
from .upstream import UpstreamError, UpstreamFailure

logger = logging.getLogger(__name__)

_PATHS = {"/v1/chat/completions": wire.CHAT, "/v1/completions": wire.COMPLETION, "/v1/models": "models"}
EVENT_TYPES = {wire.CHAT: "inference.chat", wire.COMPLETION: "inference.completion", "models": "inference.models"}
STARTED = {wire.CHAT: "inference.chat.started", wire.COMPLETION: "inference.completion.started"}
_CODE = re.compile(r"^\[([a-z_]{1,64})\]\s*(.*)$", re.S)
# Codes the model answers for the caller's own input (400); anything else it says is a 502.
_CALLER_CODES = {"context_length_exceeded", "invalid_sampling_parameters", "invalid_input"}
_FINISH = {"stop": "stop", "length": "length", "cancelled": "stop", "": "stop"}
JSON_HEADERS = [(b"content-type", b"application/json")]


def _header(headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class ModelError(ServiceError):
    """The model refused or failed the request (an `error` in Triton's answer)."""


def model_error(message: str, status: int) -> ServiceError:
    from inference_backend.client import clean_upstream_text

    match = _CODE.match(message or "")
    if match and match.group(1) in _CALLER_CODES:
        return ModelError(match.group(1), clean_upstream_text(match.group(2)), 400)  # i18n-ok: the server's words
    code = "triton_rejected" if 400 <= status < 500 else "triton_error"
    if not message:
        return ModelError(code, _("the inference server failed the request"), 502)
    return ModelError(code, clean_upstream_text(message), 502)  # i18n-ok: the server's words


@dataclass
class Exchange:
    """What one served call produced: for the answer, the usage chunk, the audit event and the
    usage table (the same numbers everywhere)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: str = ""
    text: list[str] = field(default_factory=list)
    ttft_ms: float | None = None
    counted_by_model: bool = False
    disconnected: bool = False
    # The answer screen (deid/answers.py) when the model's policy has one: `text` stays what the
    # model wrote (token counts), `sent` what left the gateway (the answer, and what is retained).
    screen: deid.AnswerScreen | None = None
    sent: list[str] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return "".join(self.sent if self.screen is not None else self.text)

    def answer_deid(self) -> dict | None:
        """For the audit event: the screen's mode and counts per type (never values)."""
        if self.screen is None:
            return None
        return {"mode": self.screen.mode, "found": dict(self.screen.found)}


class OpenAIAdapter:
    """`pipeline`: the data plane's Pipeline (policy snapshot, limiter, audit). `governance`:
    chat policy, quotas, usage and retention (governance.py); `tokens`: counts prompt and answer
    tokens with the model's own tokenizer (tokens.py); `pool`: an upstream pool for streams."""

    def __init__(self, pipeline, *, governance, tokens, pool, conversations=None):
        self.pipeline = pipeline
        self.conversations = conversations or ConversationStore()
        self.governance = governance
        self.tokens = tokens
        self.pool = pool

    async def __call__(self, scope, receive, send) -> None:
        headers = scope["headers"]
        incoming = _header(headers, b"x-request-id") or ""
        request_id = incoming if re.match(r"^[A-Za-z0-9._-]{1,64}$", incoming) else new_request_id()
        kind = _PATHS.get(scope["path"].rstrip("/"))
        if kind is None:
            await self._error(
                send,
                ServiceError("not_found", _("no such URL: %(value)s") % {"value": scope["path"][:200]}, 404),
                request_id,
            )
            return
        method = "GET" if kind == "models" else "POST"
        if scope["method"] != method:
            await self._error(
                send,
                ServiceError("method_not_allowed", _("use %(method)s for this URL") % {"method": method}, 405),
                request_id,
            )
            return
        client = scope.get("client")
        inbound = Inbound(
            kind=EVENT_TYPES[kind],
            model="",
            version=None,
            authorization=_header(headers, b"authorization"),
            peer=client[0] if client else None,
            forwarded_for=_header(headers, b"x-forwarded-for"),
            user_agent=_header(headers, b"user-agent") or "",
            request_id=request_id,
            protocol="openai",
        )
        call = Call(
            inbound, time.perf_counter(), client_address(inbound.peer, inbound.forwarded_for, trusted_proxies())
        )
        try:
            await self.pipeline.admit_caller(call)
            conversation = _header(headers, CONVERSATION_HEADER)
            call.conversation = conversation_id(conversation)
            if kind == "models":
                body = await self._models(call)
                if not await self._audit(call, inbound.kind, 200, None, None):  # as /v2 metadata reads
                    raise _audit_unavailable()
                await self._answer(send, 200, body, request_id)
                return
            raw, body_error = await _read_body(receive, headers)
            if body_error:
                raise _BODY_ERRORS[body_error]
            req = wire.parse_request(
                kind, raw, max_chars=settings.LLM_MAX_PROMPT_CHARS, max_messages=settings.LLM_MAX_MESSAGES
            )
            inbound.model = req.model
            prepared = await self._prepare(call, req)
        except ServiceError as err:
            await self._refused(send, call, err)
            return
        except Exception:
            logger.exception("OpenAI call to %s failed before forwarding", inbound.model)
            await self._refused(send, call, _internal())
            return
        await self._serve(scope, receive, send, call, req, prepared)

    # -- before forwarding -----------------------------------------------------------------------

    async def _models(self, call: Call) -> dict:
        routes = await self.pipeline.policy.invocable(call.caller)
        names = sorted({r.model for r in routes if r.signature.get("kind") == "llm"})
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "sovereign"} for name in names],
        }

    async def _prepare(self, call: Call, req: wire.LLMRequest) -> dict:
        routes = await self.pipeline.policy.route(call.caller, req.model, None, invoke=True)
        route = self.pipeline.balancer.choose(routes, versioned=False)
        call.route, call.routes = route, routes
        signature = route.signature
        if signature.get("kind") != "llm":
            raise wire.bad(
                "not_a_chat_model",
                f"{req.model!r} is not a language model; call it with the KServe v2 API (/v2/models/{req.model}/infer)",
                "model",
            )
        policy = self.governance.policy(route)
        sampling = self.governance.check(policy, req.max_tokens, dict(req.sampling))
        if req.kind == wire.COMPLETION and policy.get("system_prompt"):
            # a raw prompt is the whole model input: it could not carry the enforced system prompt
            raise wire.bad(
                "system_prompt_enforced",
                "this model's policy enforces a system prompt: use /v1/chat/completions",
                "prompt",
            )
        if req.kind == wire.CHAT:
            wire.refuse_control_tokens(req.messages, wire.control_tokens(signature))
        messages, prompt_text = req.messages, req.prompt
        reidentifier = mapping = None
        if route.deid_mode != "off":  # the model's policy: identifiers never reach the model
            key = await self.pipeline.deid_key(route.deid_mode, req.model)
            budget = deid.Budget(settings.DEID_CPU_BUDGET)  # one per request: messages and stops together
            if route.deid_mode in SURROGATE_MODES:
                mapping = await self.conversations.load(
                    key, call.caller.token_id, call.conversation, date_shift=route.deid_mode == "surrogate_shift"
                )
            cleaned, found = await asyncio.to_thread(_deidentify, req.texts(), route.deid_mode, key, budget, mapping)
            call.deid = {"mode": route.deid_mode, "found": found}
            if mapping is not None:
                check_size(mapping)  # bounded: refused before it is stored or anything is forwarded
                await self.conversations.save(key, call.caller.token_id, call.conversation, mapping)
                if await self.pipeline.policy.may_reidentify(call.caller, route.model_id):
                    reidentifier = deid.Reidentifier(mapping)
            if req.kind == wire.CHAT:
                messages = [{**m, "content": text} for m, text in zip(messages, cleaned, strict=True)]
            else:
                prompt_text = cleaned[0]
            stops = sampling.get("stop")
            if stops:  # stop strings travel to the model too: none may carry an identifier
                probe = deid.SurrogateMap() if route.deid_mode in SURROGATE_MODES else None  # a throwaway
                kept, _ = await asyncio.to_thread(_deidentify, list(stops), route.deid_mode, key, budget, probe)
                if kept != list(stops):
                    raise wire.bad(
                        "stop_contains_identifier", "a stop sequence holds an identifier; it was not forwarded", "stop"
                    )
        if req.kind == wire.CHAT:
            messages = self.governance.system_messages(policy, messages)
            prompt_text = wire.render_chat(
                signature.get("chat_template"),
                messages,
                bos_token=signature.get("bos_token", ""),
                eos_token=signature.get("eos_token", ""),
            )
        prompt_tokens = await self.tokens.count(route, prompt_text)
        context = int(signature.get("context_length") or 0)
        if context and prompt_tokens >= context:
            raise wire.bad(
                "context_length_exceeded",
                f"the prompt is {prompt_tokens} tokens; this model's context is {context} tokens",
                "messages" if req.kind == wire.CHAT else "prompt",
            )
        max_tokens = sampling["max_tokens"]  # the caller's, or the policy's limit
        if req.max_tokens is None:
            if context:
                max_tokens = min(max_tokens, context - prompt_tokens)
        elif context and prompt_tokens + max_tokens > context:
            raise wire.bad(
                "context_length_exceeded",
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds this model's context "
                f"of {context} tokens",
                "max_tokens",
            )
        sampling["max_tokens"] = max_tokens
        reservation = await self.governance.reserve(call.caller, route, prompt_tokens + max_tokens)
        return {
            "route": route,
            "prompt": prompt_text,
            "messages": messages,
            "sampling": sampling,
            "prompt_tokens": prompt_tokens,
            "reservation": reservation,
            "policy": policy,
            "reidentifier": reidentifier,
            # the surrogates the gateway itself put in the prompt: the answer screen lets them through
            "answer_allowed": _surrogates(mapping) if mapping is not None else (),
        }

    # -- forwarding --------------------------------------------------------------------------------

    async def _serve(self, scope, receive, send, call: Call, req: wire.LLMRequest, prepared: dict) -> None:
        route = prepared["route"]
        ex = Exchange(prompt_tokens=prepared["prompt_tokens"])
        if route.answer_screen != "off":
            # `answer_allowed`: exact strings the gateway put in the prompt itself (surrogates), which
            # the screen lets through (the re-identifier, if any, comes after the screen).
            ex.screen = deid.AnswerScreen(route.answer_screen, allowed=prepared.get("answer_allowed", ()))
        started_sent = False
        error: ServiceError | None = None
        created = int(time.time())
        # The client leaving closes the upstream stream at once (Triton cancels the request at its
        # next decode step), which ends the loop below: one watcher per call, nothing per event.
        link: dict = {"upstream": None}

        def gone() -> None:
            ex.disconnected = True
            if link["upstream"] is not None:
                link["upstream"].close()

        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        upstream = None
        load = None  # the balancer's record of the replica serving this stream
        # A stream's `.started` event is committed while the model reads the prompt (it is awaited
        # before the first byte leaves, fail closed), not after: off the time to first token.
        started = asyncio.ensure_future(self._started(call)) if req.stream else None
        try:
            upstream, load = await self._connect(call, prepared)
            route = prepared["route"]
            link["upstream"] = upstream
            if ex.disconnected:
                raise ClientGone()
            events = _events(upstream, settings.LLM_IDLE_TIMEOUT)
            first = await anext(events, None)  # errors before any token come here
            if started is not None:
                await started  # durable before the first byte (fail closed)
                started_sent = True
                await _start_stream(send, call.inbound.request_id)
                await _send(
                    send, wire.sse(wire.chunk(req, call.inbound.request_id, req.model, created, role=True, text=""))
                )
            event = first
            reid = prepared.get("reidentifier")
            while event is not None and not ex.disconnected:
                text = self._take(ex, event, call)
                if req.stream:
                    text = _screened(ex, text, final=bool(ex.finish))  # the screen first
                    if text and reid is not None:
                        text = reid.feed(text)  # then the originals back; a possible surrogate's start waits
                    if text:
                        chunk = wire.chunk(req, call.inbound.request_id, req.model, created, text=text)
                        await _send(send, wire.sse(chunk))
                if ex.finish:
                    break
                event = await anext(events, None)
            if ex.disconnected:
                raise ClientGone()
            if not req.stream and ex.finish and ex.screen is not None:
                # the whole answer at once, off the event loop (it can be long)
                result = await asyncio.to_thread(deid.screen_text, "".join(ex.text), ex.screen.mode, ex.screen.allowed)
                ex.sent = [result.text]
                ex.screen.found.update(result.found)
        except ClientGone:
            ex.disconnected, ex.finish = True, "cancelled"
        except Exception as err:
            if ex.disconnected:  # the stream ended because the client left and it was closed
                ex.finish = "cancelled"
            elif isinstance(err, UpstreamFailure):  # the connection broke mid-answer: said, never truncated
                logger.warning("OpenAI call to %s: the stream from %s broke: %s", req.model, route.server_name, err)
                error = interrupted()
                load = self._settle(load, error=f"{err.kind}: stream broken after the answer began")
            elif isinstance(err, ServiceError):
                error = err
                error.detail = public_text(error.detail, route.triton_name, route.model)  # Triton's name for it
            else:
                logger.exception("OpenAI call to %s failed while forwarding", req.model)
                error = _internal()
        finally:
            watcher.cancel()
            if started is not None and not started.done():
                with contextlib.suppress(BaseException):  # written or not, its outcome is settled before the end
                    await started
            if upstream is not None and (ex.disconnected or error is not None or not ex.finish):
                upstream.close()  # Triton sees the stream closed and cancels the request
        if error is None and not ex.disconnected and not ex.finish:
            logger.warning("OpenAI call to %s: %s's stream ended without a final answer", req.model, route.server_name)
            error = interrupted()
            load = self._settle(load, error="the stream ended without a final answer")
        self._settle(load, gone=ex.disconnected)
        if error is None and not ex.counted_by_model:
            ex.completion_tokens = await self.tokens.count(route, "".join(ex.text))
        await self._finish(send, call, req, prepared, ex, error, started_sent, created)

    async def _connect(self, call: Call, prepared: dict):
        """The stream opened on the chosen replica or, if that fails before any answer byte (refused,
        reset, connect timeout, a 5xx status), on one other available replica of the version."""
        balancer = self.pipeline.balancer
        route, tried = prepared["route"], set()
        while True:
            load = balancer.begin(route)
            try:
                upstream = await self._open_upstream(route, prepared)
            except UpstreamError as err:
                balancer.failed(load, err.cause, transport=err.retryable)
                retry, failure, upstream = err.retryable, err, None
            except BaseException:
                balancer.finished(load)
                raise
            else:
                if upstream.status < 500:
                    return upstream, load
                upstream.close()
                balancer.failed(load, f"HTTP {upstream.status} from the server", transport=False)
                retry = True
            other = self.pipeline._failover(call, route, tried | {route.server_id}) if retry and not tried else None
            if other is None:
                if upstream is None:
                    raise failure
                raise ServiceError(
                    "triton_error", _("the inference server answered %(status)s") % {"status": upstream.status}, 502
                )
            tried.add(route.server_id)
            # the attempt failover hides still counts against its version (docs/rollouts.md)
            slo.record(route.model_id, route.version, ok=False, latency_ms=0.0, deployment_id=route.deployment_id)
            logger.warning("OpenAI call to %s: %s failed; opening on %s", route.model, route.server, other.server)
            route = prepared["route"] = call.route = other

    def _settle(self, load, *, error: str | None = None, gone: bool = False):
        """The stream's outcome to the balancer, once (returns None: settled)."""
        if load is None:
            return None
        balancer = self.pipeline.balancer
        if error is not None:
            balancer.failed(load, error, transport=True)
        elif gone:
            balancer.finished(load)
        else:
            balancer.succeeded(load)
        return None

    async def _open_upstream(self, route, prepared: dict):
        body = {
            "text_input": prepared["prompt"],
            "stream": True,
            "sampling_parameters": json.dumps(prepared["sampling"], separators=(",", ":")),
            "exclude_input_in_output": True,
            "return_finish_reason": True,
            "return_num_input_tokens": True,
            "return_num_output_tokens": True,
        }
        url = f"{route.http_url}/v2/models/{route.triton_name}/generate_stream"  # the version's Triton name
        return await self.pool.request(
            "POST",
            url,
            [("Content-Type", "application/json"), ("Accept", "text/event-stream"), *route.upstream_headers()],
            json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
            timeout=settings.LLM_IDLE_TIMEOUT,
            stream=True,
        )

    def _take(self, ex: Exchange, event: dict, call: Call) -> str:
        text = _scalar(event.get("text_output"))
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        text = text or ""
        if text:
            ex.text.append(text)
            if ex.ttft_ms is None:
                ex.ttft_ms = (time.perf_counter() - call.started) * 1000
        n_in, n_out = _scalar(event.get("num_input_tokens")), _scalar(event.get("num_output_tokens"))
        if n_in is not None:
            ex.prompt_tokens = int(n_in)
        if n_out is not None:
            ex.counted_by_model = True
            ex.completion_tokens += int(n_out)
        finish = _scalar(event.get("finish_reason"))
        if finish:
            ex.finish = finish.decode() if isinstance(finish, bytes) else str(finish)
        elif event.get("triton_final_response") or event.get("final"):
            ex.finish = ex.finish or "stop"
        return text

    # -- after ---------------------------------------------------------------------------------------

    async def _finish(self, send, call, req, prepared, ex: Exchange, error, started_sent: bool, created: int) -> None:
        route, inbound = prepared["route"], call.inbound
        reid = prepared.get("reidentifier")
        # what left the screen (surrogates, never re-identified): retained as is; tokens are the model's
        answer_text = ex.answer
        tail = ""
        if reid is not None:
            if req.stream:
                tail = reid.finish() if error is None and not ex.disconnected else ""
            else:
                answer_text = reid.reidentify(answer_text)
            # that re-identification happened, and how many of each type: never values
            call.deid = {**(call.deid or {}), "reidentified": dict(reid.counts)}
        duration_ms = (time.perf_counter() - call.started) * 1000
        used = ex.prompt_tokens + ex.completion_tokens if error is None or ex.text else 0
        try:
            await self.governance.settle(prepared["reservation"], used)
        except Exception:  # noqa: BLE001 - the quota errs on the safe side: the reservation stays
            logger.exception("quota settlement for %s failed", req.model)
        status = error.status_code if error else (499 if ex.disconnected else 200)
        if status == 200 or slo.failed(status):  # not the caller's own 4xx nor a caller who went away (499)
            slo.record(
                route.model_id,
                route.version,
                ok=not slo.failed(status),
                latency_ms=duration_ms,
                deployment_id=route.deployment_id,
            )
        finish = "" if error else ("cancelled" if ex.disconnected else _FINISH.get(ex.finish, ex.finish))
        llm = {
            "prompt_tokens": ex.prompt_tokens,
            "completion_tokens": ex.completion_tokens,
            "ttft_ms": None if ex.ttft_ms is None else round(ex.ttft_ms, 3),
            "duration_ms": round(duration_ms, 3),
            "finish_reason": finish,
            "stream": req.stream,
        }
        if ex.disconnected:
            llm["client_disconnected"] = True
        screened = ex.answer_deid()
        audited = await self._audit(call, EVENT_TYPES[req.kind], status, error, llm, answer_deid=screened)
        if audited:
            try:
                await self.governance.record(
                    call, route, req, ex, status=status, finish=finish, duration_ms=duration_ms,
                    messages=prepared["messages"] if req.kind == wire.CHAT else [
                        {"role": "prompt", "content": prepared["prompt"]}], error=error,
                )  # fmt: skip
            except Exception:  # noqa: BLE001 - the audit event holds the same figures
                logger.exception("usage or retention for %s not recorded", req.model)
        if ex.disconnected:
            return
        request_id = inbound.request_id
        if not started_sent:  # nothing sent yet: an ordinary answer
            if not audited:
                await self._error(send, _audit_unavailable(), request_id)
            elif error is not None:
                await self._error(send, error, request_id)
            else:
                answer = wire.whole_answer(
                    req, request_id, req.model, answer_text, finish, ex.prompt_tokens, ex.completion_tokens
                )
                await self._answer(send, 200, answer, request_id)
            return
        with contextlib.suppress(ClientGone):
            if error is not None or not audited:
                err = error if audited else _audit_unavailable()
                await _send(send, wire.sse(wire.error_body(err)))
            else:
                if tail:
                    await _send(send, wire.sse(wire.chunk(req, request_id, req.model, created, text=tail)))
                await _send(send, wire.sse(wire.chunk(req, request_id, req.model, created, finish=finish)))
                if req.include_usage:
                    await _send(
                        send,
                        wire.sse(
                            wire.usage_chunk(
                                req, request_id, req.model, created, ex.prompt_tokens, ex.completion_tokens
                            )
                        ),
                    )
                await _send(send, wire.SSE_DONE)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _started(self, call: Call) -> None:
        ok = await self._audit(call, STARTED[_kind_of(call)], 200, None, {"stream": True})
        if not ok:
            raise _audit_unavailable()

    async def _audit(
        self, call: Call, event_type: str, status: int, error, llm: dict | None, answer_deid: dict | None = None
    ) -> bool:
        inbound, caller = call.inbound, call.caller
        source = Source(ip=call.ip, user_agent=inbound.user_agent[:300])
        extra = {"protocol": "openai"}
        if llm:
            extra["llm"] = llm
        if answer_deid is not None:
            extra["answer_deid"] = answer_deid  # the screen's mode and counts per type, never values
            if answer_deid["mode"] == "alert" and answer_deid["found"]:
                extra["alert"] = True  # identifiers left in an answer: the event alerts
        try:
            await self.pipeline.audit.record_call(
                event_type,
                model=inbound.model,
                status=status,
                latency_ms=(time.perf_counter() - call.started) * 1000,
                source=source if caller is None else caller.source(source),
                request_id=inbound.request_id,
                caller=caller,
                route=call.route,
                error_code=error.code if error else "",
                deid=call.deid,
                extra=extra,
            )
        except Exception:  # noqa: BLE001 - fail closed
            logger.exception("OpenAI call to %s could not be audited", inbound.model)
            return False
        return True

    async def _refused(self, send, call: Call, err: ServiceError) -> None:
        audited = await self._audit(call, call.inbound.kind, err.status_code, err, None)
        await self._error(send, err if audited else _audit_unavailable(), call.inbound.request_id)

    async def _error(self, send, err: ServiceError, request_id: str) -> None:
        headers = list(JSON_HEADERS)
        retry = getattr(err, "retry_after", None)
        if retry:
            headers.append((b"retry-after", str(retry).encode()))
        await self._answer(send, err.status_code, wire.error_body(err), request_id, headers)

    async def _answer(self, send, status: int, obj, request_id: str, headers=None) -> None:
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        out = [*(headers or JSON_HEADERS), (b"content-length", str(len(body)).encode())]
        if request_id:
            out.append((b"x-request-id", request_id.encode()))
        with contextlib.suppress(ClientGone, OSError):
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})


def _screened(ex: Exchange, text: str, *, final: bool) -> str:
    """A streamed delta through the answer screen: what can be sent now (`final`: and the rest).
    Every delta goes in `sent` as it leaves, so what is retained is what the client received."""
    if ex.screen is None:
        return text
    out = ex.screen.feed(text) if text else ""
    if final:
        out += ex.screen.finish()
    if out:
        ex.sent.append(out)
    return out


def _kind_of(call: Call) -> str:
    return wire.CHAT if call.inbound.kind == EVENT_TYPES[wire.CHAT] else wire.COMPLETION


SURROGATE_MODES = ("surrogate", "surrogate_shift")


def _surrogates(mapping) -> frozenset[str]:
    return surrogate_strings(mapping)  # shared with the /v2 answers (pipeline.py)


def _deidentify(texts: list[str], mode: str, key, budget=None, mapping=None) -> tuple[list[str], dict]:
    found: dict[str, int] = {}
    out = []
    if mode in SURROGATE_MODES:
        mode, key = "surrogate", None  # the key protects the stored mapping, not the surrogates
    for text in texts:
        try:
            result = deid.deidentify(text, mode, key=key, budget=budget, mapping=mapping)
        except deid.DeidError as err:
            raise refusal(err) from None
        out.append(result.text)
        for kind, n in result.found.items():
            found[kind] = found.get(kind, 0) + n
    return out, found


def _scalar(value):
    if isinstance(value, list):
        return value[0] if value else None
    return value


class ClientGone(Exception):
    """The client closed the connection."""


async def _watch_disconnect(receive, on_gone) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_gone()
            return


async def _events(upstream, idle: float):
    """Triton's generate_stream answer as JSON events; an `error` event (or an error status)
    raises the model's error."""
    chunks = upstream.iter_chunks()
    buffer = b""
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(chunks, None)
        except TimeoutError:
            raise ServiceError("triton_timeout", _("the model sent nothing for too long"), 504) from None
        if chunk is None:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event = _parse_block(block)
            if event is None:
                continue
            if "error" in event:
                raise model_error(str(event["error"]), upstream.status)
            if upstream.status >= 400:
                raise model_error(json.dumps(event)[:500], upstream.status)
            yield event
    if buffer.strip():
        event = _parse_block(buffer)
        if event is not None:
            if "error" in event:
                raise model_error(str(event["error"]), upstream.status)
            yield event
    if upstream.status >= 400:
        raise model_error(buffer.decode(errors="replace")[:500], upstream.status)


def _parse_block(block: bytes) -> dict | None:
    data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
    if not data:
        stripped = block.strip()
        if stripped.startswith(b"{"):  # a plain JSON error body
            data = [stripped]
        else:
            return None
    try:
        event = json.loads(b"\n".join(data))
    except ValueError:
        raise ServiceError("triton_error", _("the model's stream is malformed"), 502) from None
    return event if isinstance(event, dict) else None


async def _start_stream(send, request_id: str) -> None:
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
        (b"x-request-id", request_id.encode()),
    ]
    await _send_raw(send, {"type": "http.response.start", "status": 200, "headers": headers})


async def _send(send, data: bytes) -> None:
    await _send_raw(send, {"type": "http.response.body", "body": data, "more_body": True})


async def _send_raw(send, message) -> None:
    """Send, or ClientGone: the client left, or stopped reading for SOVEREIGN_LLM_SEND_TIMEOUT (a reader
    that never reads would otherwise hold its upstream stream, its quota reservation and its audit
    event open for ever)."""
    try:
        async with asyncio.timeout(settings.LLM_SEND_TIMEOUT):
            await send(message)
    except (OSError, TimeoutError) as err:  # uvicorn: ClientDisconnected
        raise ClientGone() from err


async def _read_body(receive, headers) -> tuple[bytes, str | None]:
    limit = settings.LLM_MAX_REQUEST_BYTES
    declared = _header(headers, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"", "too_large"
    parts, size = [], 0
    try:
        async with asyncio.timeout(settings.GATEWAY_BODY_TIMEOUT):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return b"", "disconnected"
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return b"", "too_large"
                parts.append(chunk)
                if not message.get("more_body"):
                    return b"".join(parts), None
    except TimeoutError:
        return b"", "timeout"


_BODY_ERRORS = {
    "too_large": ServiceError("request_too_large", _("the request exceeds SOVEREIGN_LLM_MAX_REQUEST_BYTES"), 413),
    "timeout": ServiceError(
        "request_timeout", _("the request body did not arrive within SOVEREIGN_GATEWAY_BODY_TIMEOUT"), 408
    ),
    "disconnected": ServiceError("client_disconnected", _("the client went away before sending the whole body"), 400),
}


def interrupted() -> ServiceError:
    """A stream that broke after it began (the server died, the connection was cut): the caller is told
    so — an error event in the SSE stream, or the error answer — never handed a truncated answer as whole."""
    return ServiceError(
        "upstream_interrupted",
        _(
            "the model's server stopped answering before the answer was complete; "
            "the answer is incomplete, retry the call"
        ),
        502,
    )


def _internal() -> ServiceError:
    return ServiceError("internal_error", _("the gateway failed; quote the X-Request-ID header to the operator"), 500)


def _audit_unavailable() -> ServiceError:
    return ServiceError("audit_unavailable", _("the call could not be audited and was refused"), 503)
