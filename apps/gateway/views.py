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

from apps.accounts.services import TokenRejected, authenticate_bearer
from apps.audit.models import Outcome
from apps.audit.services import Source, record_event, record_refusal
from apps.core.errors import ServiceError, json_error
from apps.core.netaddr import request_client_address
from apps.core.throttling import RateLimited, hit_gateway_token, note_auth_failure
from apps.deployments.models import Deployment
from apps.keys.services import pseudonym_key
from inference_backend.client import clean_upstream_text
from inference_backend.kek import KekError

from .phi import deidentify_request
from .protocol import HEADER_LENGTH, check_against_signature, parse_infer_header
from .routing import route
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
    """Authenticate, then find an ACTIVE deployment the caller may use (apps/gateway/routing.py).
    Inference needs an `invoke_model` grant and the token's `invoke` scope; metadata and readiness
    need the model to be visible and `invoke` or `read`. A model the caller cannot see is a 404."""
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
    deps = route(user, token, call.name, invoke=invoke)  # one statement; the access policy decides
    if version is not None:
        # Choose among the servers serving that version, not among all and then refuse.
        deps = [d for d in deps if str(d.model_version.version) == version]
        if not deps:
            raise _version_not_deployed(call.name, version)
    call.dep = random.choice(deps) if len(deps) > 1 else deps[0]
    return call.dep


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


def _triton_model_url(dep: Deployment, name: str, version: str | None) -> str:
    """The model's URL on the deployment's Triton. A call that names a version is forwarded to
    that version (Triton's version directory is the catalogue version), so Triton itself refuses
    it if the server does not serve that version, rather than answering with another one."""
    url = f"{dep.server.http_url}/v2/models/{name}"
    return url if version is None else f"{url}/versions/{dep.model_version.version}"


def _relay_version(upstream, dep: Deployment, name: str, version: str | None) -> HttpResponse:
    """_relay, except that Triton's "unknown model version" (404 for a version it never had, 503
    for one it no longer has loaded) on a versioned call is the gateway's own 404: the route
    said the server serves that version, Triton says it does not."""
    if version is not None and (
        upstream.status == 404 or (upstream.status == 503 and b"unknown model" in upstream.data)
    ):
        logger.warning(
            "%s version %s is routed to server %s, whose Triton does not serve it", name, version, dep.server
        )
        raise _version_not_deployed(name, version)
    return _relay(upstream)


def _version_not_deployed(name: str, version: str) -> ServiceError:
    return ServiceError("model_version_not_deployed", f"version {version} of {name!r} is not deployed", 404)


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
        upstream = forward("POST", f"{_triton_model_url(dep, name, version)}/infer", body, headers)
        return _relay_version(upstream, dep, name, version)

    return _handle(request, "inference.infer", name, version, act)


@require_GET
def metadata(request, name: str, version: str | None = None) -> HttpResponse:
    return _handle(
        request,
        "inference.metadata",
        name,
        version,
        lambda dep, call: _relay_version(forward("GET", _triton_model_url(dep, name, version)), dep, name, version),
    )


@require_GET
def ready(request, name: str, version: str | None = None) -> HttpResponse:
    return _handle(
        request,
        "inference.ready",
        name,
        version,
        lambda dep, call: _relay(forward("GET", f"{_triton_model_url(dep, name, version)}/ready")),
    )
