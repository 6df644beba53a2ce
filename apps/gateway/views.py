"""The inference gateway: Triton's own HTTP/REST protocol (KServe v2 plus the binary tensor
extension), so an unmodified tritonclient works once it sends `Authorization: Bearer <token>`.

Per call: one token lookup, one route lookup, the upstream request over a pooled connection,
one audit insert. If the audit insert fails the caller gets an error, never the result.
"""

from __future__ import annotations

import json
import logging
import random
import time

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.models import Scope
from apps.accounts.services import TokenRejected, authenticate_bearer
from apps.audit.models import Outcome
from apps.audit.refusals import record_refusal
from apps.audit.services import Source, record_event
from apps.core.errors import ServiceError, json_error
from apps.core.netaddr import request_client_address
from apps.core.throttling import RateLimited, hit_gateway_token, note_auth_failure
from apps.deployments.models import Deployment, Desired, Observed
from apps.keys.services import pseudonym_key
from apps.registry.selectors import catalogue_visible_to, models_invokable_by, models_visible_to
from inference_backend.client import clean_upstream_text
from inference_backend.kek import KekError

from .phi import deidentify_request
from .protocol import HEADER_LENGTH, check_against_signature, parse_infer_header
from .routing import invokable_deployments
from .upstream import forward

logger = logging.getLogger(__name__)
_PASS_HEADERS = ("Content-Type", HEADER_LENGTH, "Content-Encoding")


class _Call:
    """What one gateway call learned, for its audit event."""

    __slots__ = ("event", "name", "source", "started", "user", "dep", "deid")

    def __init__(self, request, event: str, name: str):
        self.event, self.name, self.started = event, name, time.perf_counter()
        self.source = Source(
            ip=request_client_address(request), user_agent=request.META.get("HTTP_USER_AGENT", "")[:300]
        )
        self.user = self.dep = self.deid = None

    def finish(self, response: HttpResponse, error: ServiceError | None = None) -> HttpResponse:
        details = {
            "model": self.name,
            "status": response.status_code,
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }
        if self.dep is not None:
            details.update(version=self.dep.model_version.version, server=self.dep.server.name, deployment=self.dep.pk)
        if self.deid is not None:
            details["deid"] = self.deid  # the mode and counts per identifier type, never values
        if self.user is not None and self.user.is_superuser:
            details["alert"] = True  # the sealed break-glass account: its every call alerts (access-control.md)
        outcome = (
            Outcome.SUCCESS
            if error is None
            else (Outcome.DENIED if response.status_code in (401, 403, 404, 429) else Outcome.FAILURE)
        )
        try:
            # An unauthenticated caller's refusals are collapsed per (address, code, minute).
            record = record_event if self.user is not None else record_refusal
            record(
                self.event,
                source=self.source,
                target_type="registry.model",
                target_id=str(self.dep.model_id) if self.dep else "",
                target_display=self.name[:200],
                outcome=outcome,
                error_code=error.code if error else "",
                details=details,
                **({"actor": self.user} if self.user is not None else {}),
            )
        except Exception:  # noqa: BLE001 - fail closed: no audit record, no answer
            return json_error(ServiceError("audit_unavailable", "the call could not be audited and was refused", 503))
        return response


def _route(call: _Call, request, version: str | None, invoke: bool) -> Deployment:
    """Authenticate, then find an ACTIVE deployment the caller may use. Inference needs an
    `invoke_model` grant and the token's `invoke` scope; metadata and readiness need the model to
    be visible and `invoke` or `read`. A model the caller cannot see is a 404."""
    try:
        user, token = authenticate_bearer(request.META.get("HTTP_AUTHORIZATION"), call.source.ip, lean=True)
    except TokenRejected:
        decision = note_auth_failure(call.source.ip)  # per address; a valid token never pays this
        if not decision.allowed:
            raise RateLimited(decision, "address") from None
        raise
    call.user = user
    call.source = call.source.with_token(token)  # the token and its issuer, read by the lookup above
    decision = hit_gateway_token(token.pk)  # the call's one Redis round trip
    if not decision.allowed:
        raise RateLimited(decision, "token")
    if not (token.has_scope(Scope.INVOKE) or (not invoke and token.has_scope(Scope.READ))):
        raise ServiceError("insufficient_scope", f"this token lacks the '{Scope.INVOKE}' scope", 403)
    deps = candidate_deployments(user, token, call.name, invoke)
    if not deps:
        raise _why_not(user, token, call.name, _scope(user, token, invoke))
    if version is not None:
        # Choose among the servers serving that version, not among all and then refuse.
        deps = [d for d in deps if str(d.model_version.version) == version]
        if not deps:
            raise ServiceError("model_version_not_deployed", f"version {version} of {call.name!r} is not deployed", 404)
    call.dep = random.choice(deps) if len(deps) > 1 else deps[0]
    return call.dep


def candidate_deployments(user, token, name: str, invoke: bool) -> list[Deployment]:
    """The ACTIVE deployments of `name` this caller may use, in one query."""
    if invoke:
        return invokable_deployments(user, token, name)  # the hot path: fixed SQL, no query building
    # No ordering: one is picked at random, and an ORDER BY costs a measurable share (bench/RESULTS.md).
    return list(
        Deployment.objects.select_related("server", "model_version")
        .filter(
            model__name=name,
            model__in=_scope(user, token, invoke),
            desired_state=Desired.ACTIVE,
            observed_state=Observed.ACTIVE,
        )
        .order_by()
    )


def _scope(user, token, invoke: bool):
    allowed = models_invokable_by(user) if invoke else models_visible_to(user)
    if token.restricted:
        allowed = allowed.filter(pk__in=token.allowed_models.values("pk"))
    return allowed


def _why_not(user, token, name: str, allowed) -> ServiceError:
    """Only on the error path: tell "not deployed" from "not allowed" from "does not exist"."""
    if allowed.filter(name=name).exists():
        return ServiceError("model_not_deployed", f"model {name!r} has no active deployment", 409)
    # The catalogue includes every model the user can see. A restricted token knows only its models.
    known = catalogue_visible_to(user)
    if token.restricted:
        known = known.filter(pk__in=token.allowed_models.values("pk"))
    if known.filter(name=name).exists():
        return ServiceError(
            "invoke_not_permitted", f"you may not invoke {name!r}; ask a security officer for a grant", 403
        )
    return ServiceError("model_not_found", f"unknown model {name!r}", 404)


def _relay(upstream) -> HttpResponse:
    if upstream.status >= 400:
        try:
            message = json.loads(upstream.data).get("error") or upstream.data.decode(errors="replace")
        except (ValueError, AttributeError):
            message = upstream.data.decode(errors="replace")
        status = 400 if upstream.status < 500 else 502
        code = "triton_rejected" if status == 400 else "triton_error"
        raise ServiceError(code, clean_upstream_text(str(message)), status)
    response = HttpResponse(upstream.data, status=upstream.status)
    for header in _PASS_HEADERS:
        value = upstream.headers.get(header)
        if value is not None:
            response[header] = value
    return response


def _handle(request, event: str, name: str, version: str | None, act) -> HttpResponse:
    call = _Call(request, event, name)
    try:
        dep = _route(call, request, version, invoke=event == "inference.infer")
        return call.finish(act(dep, call))
    except ServiceError as err:
        response = json_error(err)
        if isinstance(err, RateLimited):
            response["Retry-After"] = err.retry_after
        return call.finish(response, err)
    except Exception:
        logger.exception("gateway call to %s failed", name)
        err = ServiceError("internal_error", "the gateway failed; quote the X-Request-ID header to the operator", 500)
        return call.finish(json_error(err), err)


def _deid_unavailable(name: str, err: Exception) -> ServiceError:
    """The reason (KEK ids, keystore paths, token labels) goes to the server log, never into the
    answer: the caller is an integrator, not the key custodian."""
    logger.error("de-identification key for %s unavailable: %s: %s", name, type(err).__name__, err)
    return ServiceError(
        "deid_unavailable",
        "de-identification is unavailable, so nothing was forwarded; quote the X-Request-ID header to the operator",
        503,
    )


@csrf_exempt
@require_POST
def infer(request, name: str, version: str | None = None) -> HttpResponse:
    def act(dep: Deployment, call: _Call) -> HttpResponse:
        try:
            body = request.body
        except RequestDataTooBig:
            raise ServiceError(
                "request_too_large", "the inference request exceeds SOVEREIGN_MAX_REQUEST_BODY_BYTES", 413
            ) from None
        header_length = request.headers.get(HEADER_LENGTH)
        header = parse_infer_header(body, header_length)
        check_against_signature(header, dep.model_version.signature, dep.max_batch_size)
        mode = dep.deid_mode  # read with the route (apps/gateway/routing.py)
        if mode != "off":  # the model's policy: identifiers never reach Triton
            try:
                key = pseudonym_key() if mode == "pseudonymise" else None
            except (KekError, OSError, ValueError, KeyError) as err:  # fail closed: nothing is forwarded
                raise _deid_unavailable(name, err) from err
            body, header_length, found = deidentify_request(body, header, header_length, mode, key)
            call.deid = {"mode": mode, "found": found}
        headers = {"Content-Type": request.content_type or "application/json"}
        if header_length is not None:
            headers[HEADER_LENGTH] = header_length
        return _relay(forward("POST", f"{dep.server.http_url}/v2/models/{name}/infer", body, headers))

    return _handle(request, "inference.infer", name, version, act)


@require_GET
def metadata(request, name: str, version: str | None = None) -> HttpResponse:
    return _handle(
        request,
        "inference.metadata",
        name,
        version,
        lambda dep, call: _relay(forward("GET", f"{dep.server.http_url}/v2/models/{name}")),
    )


@require_GET
def ready(request, name: str, version: str | None = None) -> HttpResponse:
    return _handle(
        request,
        "inference.ready",
        name,
        version,
        lambda dep, call: _relay(forward("GET", f"{dep.server.http_url}/v2/models/{name}/ready")),
    )
