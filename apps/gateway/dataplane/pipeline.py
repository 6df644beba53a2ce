"""The data plane's one pipeline, shared by every protocol adapter:

    authenticate → route → rate limit → check + de-identify → forward → meter → audit → answer

Authentication and routing read the in-memory policy snapshot (snapshot.py); the rate limit is one
Redis round trip (apps/core/ratelimit.py's async twin); forwarding uses pooled keep-alive
connections (upstream.py); the audit event is committed together with whatever other calls'
events arrived meanwhile (auditsink.py) and awaited before the answer is released: no durable
event, no answer (503 `audit_unavailable`). The refusals and their codes are those of the
control plane's access policy (apps/registry/access.py through apps/gateway/routing.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.accounts.services import TokenRejected
from apps.core.errors import ServiceError, _
from apps.core.netaddr import client_address, limit_key, trusted_proxies
from apps.core.ratelimit import Check, Decision
from apps.core.source import Source
from apps.core.throttling import RateLimited, rate
from apps.deployments import slo
from apps.keys.services import pseudonym_key
from inference_backend.client import clean_upstream_text
from inference_backend.kek import KekError

from ..deid import Budget, Reidentifier, SurrogateMap
from ..phi import answer_outputs, deidentify_request
from ..protocol import HEADER_LENGTH, check_against_signature, parse_infer_header, refuse_numeric_inputs
from .balancer import Balancer
from .names import public_infer_answer, public_metadata_answer, public_text
from .snapshot import TokenMiss
from .surrogates import surrogate_strings
from .types import EVENT_TYPES, INFER, READY, Inbound, Outbound
from .upstream import UpstreamBusy, UpstreamError

logger = logging.getLogger(__name__)
JSON = "application/json"
_PASS_HEADERS = ("content-type", HEADER_LENGTH.lower(), "content-encoding")
_HEADER_NAMES = {
    "content-type": "Content-Type",
    HEADER_LENGTH.lower(): HEADER_LENGTH,
    "content-encoding": "Content-Encoding",
}


_BODY_ERRORS = {
    "too_large": ServiceError(
        "request_too_large", _("the inference request exceeds SOVEREIGN_MAX_REQUEST_BODY_BYTES"), 413
    ),
    "timeout": ServiceError(
        "request_timeout", _("the request body did not arrive within SOVEREIGN_GATEWAY_BODY_TIMEOUT"), 408
    ),
    "disconnected": ServiceError("client_disconnected", _("the client went away before sending the whole body"), 400),
}
# A de-identified model's body over SOVEREIGN_DEID_MAX_REQUEST_BYTES: refused before it is read or parsed.
_DEID_TOO_LARGE = ServiceError(
    "deid_budget_exceeded",
    _(
        "the request is larger than a de-identified model accepts (SOVEREIGN_DEID_MAX_REQUEST_BYTES): it could not be "
        "de-identified within its CPU budget; nothing was forwarded"
    ),
    413,
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def error_outbound(err: ServiceError) -> Outbound:
    body = json.dumps({"error": err.detail, **err.as_dict()}, separators=(",", ":")).encode()  # as json_error
    return Outbound(
        err.status_code,
        body,
        [("Content-Type", JSON)],
        error=err,
        retry_after=getattr(err, "retry_after", None),
    )


def _model_url(route, inbound: Inbound) -> str:
    """Triton's URL of the route's version: its own Triton name ("triage--v2"), inside which the
    version directory is the registry version, so a versioned call keeps /versions/<n>."""
    url = f"{route.http_url}/v2/models/{route.triton_name}"
    return url if inbound.version is None else f"{url}/versions/{route.version}"


def _answered_by_triton(upstream) -> bool:
    """A 5xx whose body is Triton's own JSON error ({"error": ...}): the server is up and answering. A
    proxy's or a dying server's 502/503/504 has no such body."""
    return upstream.body[:1].startswith(b"{") and b'"error"' in upstream.body[:256]


def _unloaded(upstream, inbound: Inbound) -> bool:
    """Triton does not (or no longer) serve the route's model: "unknown model" (400 or 404; 503
    while it is being unloaded). Only an unversioned call may then go to another route."""
    return (
        inbound.version is None
        and upstream.status in (400, 404, 503)
        and b"unknown model" in upstream.body[:512].lower()
    )


@dataclass
class Call:
    """What one call learned, for its audit event."""

    inbound: Inbound
    started: float
    ip: str | None
    caller: object | None = None  # the snapshot's Caller
    route: object | None = None  # the snapshot's Route (the replica that answered, after a failover)
    routes: object | None = None  # every Route the policy allowed (a failover chooses among them)
    deid: dict | None = None
    conversation: str | None = None  # X-Sovereign-Conversation (surrogate mode)
    answer: Answer | None = None  # what the answer goes through (None: relayed as it comes)
    answer_deid: dict | None = None  # the answer screen's mode and counts, for the audit event


@dataclass
class Answer:
    """A /v2 answer's treatment: the model's answer screen, the strings the gateway itself put in the
    request (surrogates, which pass the screen), and the re-identifier of a caller holding
    `reidentify` on a surrogate model. Screen first, then re-identify."""

    screen: str  # off | redact | alert
    allowed: frozenset = frozenset()
    reidentifier: Reidentifier | None = None


class Pipeline:
    """One per data-plane process. `policy` answers authenticate/route (snapshot.py), `audit`
    takes events (auditsink.py), `limiter` is an async rate limiter, `pool` the upstream pool."""

    def __init__(self, *, policy, audit, limiter, failure_limiter=None, pool, refusals=None, balancer=None):
        self.policy = policy
        self.balancer = balancer or Balancer()  # replica choice, load, circuit breakers (balancer.py)
        if pool is not None and hasattr(pool, "abandon"):
            self.balancer.on_open = lambda state: pool.abandon(state.http_url, "the gateway opened its circuit")
        self.audit = audit
        self.limiter = limiter
        self.pool = pool
        self.refusals = refusals  # async refusal collapse for unauthenticated callers

    # -- the pipeline ----------------------------------------------------------------------
    async def handle(self, inbound: Inbound) -> Outbound:
        call = Call(
            inbound, time.perf_counter(), client_address(inbound.peer, inbound.forwarded_for, trusted_proxies())
        )
        if not inbound.request_id:
            inbound.request_id = new_request_id()
        try:
            route = await self._admit(call)
            out = await self._act(call, route)
            error = None
        except ServiceError as err:
            out, error = error_outbound(err), err
        except Exception:
            logger.exception("gateway call to %s failed", inbound.model)
            error = ServiceError(
                "internal_error", _("the gateway failed; quote the X-Request-ID header to the operator"), 500
            )
            out = error_outbound(error)
        return await self._audited(call, out, error)

    async def refuse(self, inbound: Inbound, err: ServiceError) -> Outbound:
        """An adapter's own refusal (a gRPC message that is malformed, over the size limit or cannot
        be translated): the caller is authenticated as for any call, so a bad token is answered as
        such and the event names who was refused (an unauthenticated caller's refusals are
        collapsed); then `err` is audited and answered. Nothing is routed or forwarded."""
        call = Call(
            inbound, time.perf_counter(), client_address(inbound.peer, inbound.forwarded_for, trusted_proxies())
        )
        if not inbound.request_id:
            inbound.request_id = new_request_id()
        try:
            await self._authenticate(call)
            raise err
        except ServiceError as refused:
            return await self._audited(call, error_outbound(refused), refused)

    async def _authenticate(self, call: Call):
        """The snapshot's answer. A token it does not know (issued since the last rebuild, or
        made up) is charged to the address's failure budget first and then looked up in the
        database, so random tokens cannot each turn into a query; a refusal is charged once."""
        authorization = call.inbound.authorization
        try:
            call.caller = await self.policy.authenticate(authorization, call.ip)
        except TokenMiss:
            await self._charge_failure(call.ip)
            call.caller = await self.policy.authenticate_miss(authorization, call.ip)
        except TokenRejected:
            await self._charge_failure(call.ip)
            raise
        return call.caller

    async def _charge_failure(self, ip: str | None) -> None:
        decision = await self._hit(self._failure_check(ip))
        if not decision.allowed:
            raise RateLimited(decision, _("address")) from None

    async def admit_caller(self, call: Call):
        """Authenticate, then the token's rate limit: what every adapter does first."""
        caller = await self._authenticate(call)
        if settings.RATELIMIT_ENABLED:
            decision = await self.limiter.hit(Check(f"gw:{caller.token_id}", rate(settings.RATELIMIT_GATEWAY)))
            if not decision.allowed:
                raise RateLimited(decision, _("token"))
        return caller

    async def _admit(self, call: Call):
        inbound = call.inbound
        caller = await self.admit_caller(call)
        routes = await self.policy.route(caller, inbound.model, inbound.version, invoke=inbound.kind == INFER)
        call.routes = routes
        call.route = self.balancer.choose(routes, versioned=inbound.version is not None)
        return call.route

    async def forward_as_routed(self, inbound: Inbound, route) -> tuple[Outbound, dict | None]:
        """The stages after admission — check + de-identify → forward → answer — for a route the
        caller built, with nothing authenticated, rate-limited or audited: the compliance probe of
        de-identification (apps/gateway/deidprobe.py) pushes its synthetic text through exactly the
        code real calls take up to Triton. Returns the answer and the de-identification counts."""
        call = Call(inbound, time.perf_counter(), None)
        call.route, call.routes = route, [route]
        return await self._act(call, route), call.deid

    def _failure_check(self, ip: str | None) -> Check:
        return Check(f"fail:{limit_key(ip, settings.RATELIMIT_IPV6_PREFIX)}", rate(settings.RATELIMIT_AUTH_FAILURES))

    async def _hit(self, check: Check) -> Decision:
        if not settings.RATELIMIT_ENABLED:
            return Decision(True)
        return await self.limiter.hit(check)

    async def _act(self, call: Call, route) -> Outbound:
        inbound = call.inbound
        if inbound.kind == INFER:
            body, header_length = await self._prepare(call, route)
            headers = [("Content-Type", inbound.content_type or JSON)]
            if header_length is not None:
                headers.append((HEADER_LENGTH, str(header_length)))
            upstream = await self._forward(call, route, "POST", "/infer", headers, body)
            out = public_infer_answer(
                self._relay_version(upstream, call, call.route), call.route.triton_name, call.route.model
            )
            if call.answer is None:  # no screen, nothing to re-identify: the upstream's bytes as they are
                return out
            return await self._answer(call, out)
        if inbound.kind == READY:
            return self._relay(await self._forward(call, route, "GET", "/ready", [], b""), call.route)
        upstream = await self._forward(call, route, "GET", "", [], b"")
        return public_metadata_answer(
            self._relay_version(upstream, call, call.route), call.route.triton_name, call.route.model
        )

    async def _forward(self, call: Call, route, method: str, suffix: str, headers: list, body: bytes):
        """Send to `route`'s server; on a failure before any answer byte (refused, reset, closed, connect
        timeout, its pool full), a 5xx answer, or — on an unversioned call — Triton's "unknown model" (the
        version was unloaded after this process's policy snapshot was read), once more to another
        available replica (inference is idempotent; nothing has reached the caller). Every outcome goes
        to the balancer (load, breaker). `call.route` ends as the replica that answered."""
        balancer = self.balancer
        tried: set[int] = set()  # servers that failed this call
        skipped: set[int] = set()  # deployments whose version their server no longer serves
        while True:
            call.route = route
            state = balancer.begin(route)
            sent = time.perf_counter()
            try:
                upstream = await self.pool.request(
                    method,
                    _model_url(route, call.inbound) + suffix,
                    [*headers, *route.upstream_headers()],
                    body,
                    timeout=settings.TRITON_TIMEOUT,
                )
            except UpstreamError as err:
                balancer.failed(state, err.cause, transport=err.retryable)
                self._attempt_figures(call, route, sent, ok=False)
                if err.retryable and not tried:
                    tried.add(route.server_id)
                    route = self._failover(call, route, tried)
                    if route is not None:
                        continue
                raise
            except UpstreamBusy:
                balancer.finished(state)
                if not tried:
                    tried.add(route.server_id)
                    route = self._failover(call, route, tried)
                    if route is not None:
                        continue
                raise
            except BaseException:  # cancelled, or refused by the server policy: no verdict on the server
                balancer.finished(state)
                raise
            if upstream.status >= 500:
                self._attempt_figures(call, route, sent, ok=False)
                model_error = _answered_by_triton(upstream)
                if model_error:
                    # Triton itself answered (its JSON error): about this model or this request — a
                    # caller's bad input makes some backends answer 500 — not about the server, so no
                    # verdict that would close the server to every other model on it.
                    balancer.finished(state)
                else:
                    balancer.failed(state, f"HTTP {upstream.status} from the server", transport=False)
                if not tried:
                    tried.add(route.server_id)
                    # the version's own error: another version with the same signature first (a failing
                    # canary's calls are answered by the live version while the rollout rolls it back)
                    other = self._failover(call, route, tried, other_version=model_error)
                    if other is not None:
                        logger.warning(
                            "%s: server %s answered %s; retrying on %s",
                            call.inbound.model,
                            route.server_name,
                            upstream.status,
                            other.server_name,
                        )
                        route = other
                        continue
                return upstream
            if _unloaded(upstream, call.inbound):  # about this version here, not about the server
                balancer.finished(state)
                if not tried and not skipped:
                    skipped.add(route.deployment_id)
                    other = self._failover(call, route, tried, skipped)
                    if other is not None:
                        route = other
                        continue
                return upstream
            balancer.succeeded(state)
            if upstream.status < 400:
                self._attempt_figures(call, route, sent, ok=True)
            return upstream

    @staticmethod
    def _attempt_figures(call: Call, route, sent: float, *, ok: bool) -> None:
        """The figures a rollout judges a version by (docs/rollouts.md): each attempt of an unversioned
        inference call that reached the version's server — answered (2xx: ok; 5xx or a broken
        connection: failed, even when failover then answers from elsewhere), timed from sending to the
        answer. Not counted: the gateway's own refusals and Triton's 4xx (the caller's request, not
        the version), and versioned calls (a caller may aim those at a canary at will; its weight
        decides only the unversioned ones)."""
        if call.inbound.kind == INFER and call.inbound.version is None:
            latency_ms = (time.perf_counter() - sent) * 1000
            slo.record(route.model_id, route.version, ok=ok, latency_ms=latency_ms, deployment_id=route.deployment_id)

    def _failover(
        self, call: Call, failed, tried: set[int], skipped: set[int] = frozenset(), *, other_version: bool = False
    ):
        """Another available replica for a call that failed on `failed`, or None."""
        try:
            return self.balancer.choose(
                call.routes or [failed],
                versioned=call.inbound.version is not None,
                exclude=frozenset(tried),
                like=failed,
                skip=frozenset(skipped),
                other_version=other_version,
            )
        except ServiceError:
            return None

    async def _prepare(self, call: Call, route) -> tuple[bytes, int | None]:
        inbound = call.inbound
        mode = route.deid_mode
        # A de-identified model takes no more than its budget can cover: refused on the Content-Length,
        # or as soon as the body grows past it, before any of it is parsed.
        deid_limit = settings.DEID_MAX_REQUEST_BYTES if mode != "off" else None
        if inbound.read_body is not None:  # only now: the caller is authenticated and may use this model
            inbound.body, inbound.body_error = await inbound.read_body(limit=deid_limit)
            inbound.read_body = None
        if deid_limit is not None and (
            inbound.body_error == "too_large"
            and deid_limit < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            or len(inbound.body) > deid_limit
        ):
            raise _DEID_TOO_LARGE
        if inbound.body_error is not None or len(inbound.body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise _BODY_ERRORS[inbound.body_error or "too_large"]
        header_length = None if inbound.header_length is None else str(inbound.header_length)
        body = inbound.body
        header = parse_infer_header(body, header_length)
        check_against_signature(header, route.signature, route.max_batch_size)
        if route.numeric_refused:
            refuse_numeric_inputs(header)
        mapping = None
        if mode != "off":  # the model's policy: identifiers never reach Triton
            key = await self.deid_key(mode, inbound.model)
            budget = Budget(settings.DEID_CPU_BUDGET)
            if mode in ("surrogate", "surrogate_shift"):  # one mapping for this call (no conversations on /v2)
                mapping = SurrogateMap.with_date_shift() if mode == "surrogate_shift" else SurrogateMap()
            # off the event loop: up to the budget of CPU, during which other calls go on
            body, header_length, found = await asyncio.to_thread(
                deidentify_request, body, header, header_length, mode, key, budget, mapping
            )
            call.deid = {"mode": mode, "found": found}
        if route.answer_screen != "off" or mapping is not None:  # else the fast path: nothing awaited
            call.answer = await self._answer_plan(call, route, mapping)
        return body, None if header_length is None else int(header_length)

    async def _answer_plan(self, call: Call, route, mapping: SurrogateMap | None) -> Answer | None:
        """None (the fast path: the answer is relayed untouched, never parsed) unless the model screens
        its answers, or the request got surrogates and the caller may see the originals."""
        reidentifier = None
        if mapping is not None and len(mapping) and await self.policy.may_reidentify(call.caller, route.model_id):
            reidentifier = Reidentifier(mapping)
        if route.answer_screen == "off" and reidentifier is None:
            return None
        allowed = surrogate_strings(mapping) if mapping is not None and len(mapping) else frozenset()
        return Answer(route.answer_screen, allowed, reidentifier)

    async def _answer(self, call: Call, out: Outbound) -> Outbound:
        """The BYTES outputs of a /v2 answer screened, then re-identified (phi.answer_outputs), with the
        body and its Inference-Header-Content-Length rebuilt when a text changed. Counts for the audit
        event, never values. An answer that is not KServe v2 JSON passes as it came (audited as such)."""
        plan = call.answer
        length = next((v for n, v in out.headers if n == HEADER_LENGTH), None)
        outcome = await asyncio.to_thread(
            answer_outputs, out.body, length, plan.screen, plan.allowed, plan.reidentifier
        )
        if plan.screen != "off":
            screened = {"mode": plan.screen, "found": outcome.found}
            if outcome.unscreened:
                screened["unscreened"] = outcome.unscreened  # non-UTF-8 BYTES elements (alert mode)
            if not outcome.parsed:
                screened["unparsed"] = True  # not a KServe v2 answer: nothing screened
            call.answer_deid = screened
        if plan.reidentifier is not None:
            call.deid = {**(call.deid or {}), "reidentified": outcome.reidentified}
        if outcome.body is out.body:
            return out
        headers = [(n, v) for n, v in out.headers if n != HEADER_LENGTH]
        if outcome.header_length is not None:
            headers.append((HEADER_LENGTH, outcome.header_length))
        return Outbound(out.status, outcome.body, headers)

    async def deid_key(self, mode: str, model: str) -> bytes | None:
        """The pseudonymisation key for `mode` (None for redact and mask; surrogate modes encrypt their
        conversation mappings under a key derived from it), or 503 `deid_unavailable`:
        fail closed, nothing is forwarded."""
        if mode not in ("pseudonymise", "surrogate", "surrogate_shift"):
            return None
        try:
            # unwrapped once per process (it may read the database and the HSM): off the event loop
            return await sync_to_async(pseudonym_key, thread_sensitive=True)()
        except (KekError, OSError, ValueError, KeyError) as err:
            logger.error("de-identification key for %s unavailable: %s: %s", model, type(err).__name__, err)
            raise ServiceError(
                "deid_unavailable",
                _(
                    "de-identification is unavailable, so nothing was forwarded; quote the X-Request-ID header "
                    "to the operator"
                ),
                503,
            ) from err

    def _relay(self, upstream, route=None) -> Outbound:
        if upstream.status >= 400:
            try:
                message = json.loads(upstream.body).get("error") or upstream.body.decode(errors="replace")
            except (ValueError, AttributeError):
                message = upstream.body.decode(errors="replace")
            status = 400 if upstream.status < 500 else 502
            code = "triton_rejected" if status == 400 else "triton_error"
            message = clean_upstream_text(str(message))
            if route is not None:  # Triton names the version's internal name; the caller knows the model's
                message = public_text(message, route.triton_name, route.model)
            raise ServiceError(code, message, status)  # i18n-ok: the server's words
        headers = [(_HEADER_NAMES[n], upstream.headers[n]) for n in _PASS_HEADERS if n in upstream.headers]
        return Outbound(upstream.status, upstream.body, headers)

    def _relay_version(self, upstream, call: Call, route) -> Outbound:
        """Triton's "unknown model version" (404 for a version it never had, 503 for one it no
        longer has loaded) on a versioned call is the gateway's own 404: the route said the server
        serves that version, Triton says it does not."""
        inbound = call.inbound
        if inbound.version is not None and (
            upstream.status == 404 or (upstream.status == 503 and b"unknown model" in upstream.body)
        ):
            logger.warning(
                "%s version %s is routed to server %s, whose Triton does not serve it",
                inbound.model,
                inbound.version,
                route.server_name,
            )
            raise ServiceError(
                "model_version_not_deployed",
                _("version %(version)s of %(model)s is not deployed")
                % {"version": inbound.version, "model": repr(inbound.model)},
                404,
            )
        return self._relay(upstream, route)

    # -- audit -------------------------------------------------------------------------------
    @staticmethod
    def _extra(call: Call) -> dict | None:
        extra = None if call.inbound.protocol == "http" else {"protocol": call.inbound.protocol}
        screened = call.answer_deid
        if screened is not None:
            extra = {**(extra or {}), "answer_deid": screened}  # the screen's mode and counts, never values
            if screened["mode"] != "off" and (
                (screened["mode"] == "alert" and screened["found"])
                or screened.get("unscreened")
                or screened.get("unparsed")
            ):
                extra["alert"] = True  # identifiers left in an answer, or an answer the screen could not read
        return extra

    async def _audited(self, call: Call, out: Outbound, error: ServiceError | None) -> Outbound:
        inbound, caller = call.inbound, call.caller
        source = Source(ip=call.ip, user_agent=inbound.user_agent[:300])
        try:
            # An unauthenticated caller's refusals are collapsed per (address, code, minute).
            await self.audit.record_call(
                EVENT_TYPES[inbound.kind],
                model=inbound.model,
                status=out.status,
                latency_ms=(time.perf_counter() - call.started) * 1000,
                source=source if caller is None else caller.source(source),
                request_id=inbound.request_id,
                caller=caller,
                route=call.route,
                error_code=error.code if error else "",
                deid=call.deid,  # the mode and counts per identifier type, never values
                extra=None if inbound.protocol == "http" and call.answer_deid is None else self._extra(call),
            )
        except Exception:  # noqa: BLE001 - fail closed: no audit record, no answer
            logger.exception("gateway call to %s could not be audited", inbound.model)
            return error_outbound(
                ServiceError("audit_unavailable", _("the call could not be audited and was refused"), 503)
            )
        return out
