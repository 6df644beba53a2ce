"""The portal's rate limits (docs/access-control.md, "Rate limits"), built on apps/core/ratelimit.py.

Subjects and their settings (SOVEREIGN_RATELIMIT_*, each "N/period"):

- `RATELIMIT_ANONYMOUS`: per client address, every request without credentials;
- `RATELIMIT_AUTH_FAILURES`: per client address, failed authentications (bad or missing tokens,
  refused logins); once spent, the address's anonymous requests are refused too;
- `RATELIMIT_TOKEN`: per API token, every API call presenting it;
- `RATELIMIT_SESSION`: per signed-in user, every portal/API call of the session;
- `RATELIMIT_GATEWAY`: per API token on the gateway, checked after authentication.

RateLimitMiddleware applies the first four to every portal request but static files and /healthz.
The data plane (apps/gateway/dataplane/pipeline.py) applies the last one and the failure budget
itself, with the async twin of the same limiter and the same keys. One Redis round trip per
request; a failed authentication costs a second one.
"""

from __future__ import annotations

import hashlib
from functools import cache

from django.conf import settings
from django.http import JsonResponse

from .errors import ServiceError, _
from .netaddr import limit_key, request_client_address
from .ratelimit import ALLOWED, Check, Decision, MemoryLimiter, Rate, RedisLimiter

_EXEMPT = ("/static/", "/healthz")
_state: dict = {}


def redis_client():
    """One Redis client per process for the limiter and the refusal counters (None without
    REDIS_URL). Short timeouts: a slow Redis must not stall requests (the limiter falls back)."""
    url = settings.REDIS_URL
    if _state.get("url") != url:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) if url else None
        _state.clear()
        _state.update(url=url, client=client)
    return _state["client"]


def limiter() -> RedisLimiter | MemoryLimiter:
    client = redis_client()
    if "limiter" not in _state:
        _state["limiter"] = RedisLimiter(client) if client is not None else MemoryLimiter("sv:rl:")
    return _state["limiter"]


@cache
def rate(text: str) -> Rate:
    return Rate.parse(text)


def _address_key(addr: str | None) -> str:
    return limit_key(addr, settings.RATELIMIT_IPV6_PREFIX)


def failure_check(addr: str | None, cost: int = 1) -> Check:
    return Check(f"fail:{_address_key(addr)}", rate(settings.RATELIMIT_AUTH_FAILURES), cost)


def note_auth_failure(addr: str | None) -> Decision:
    """Charge a failed authentication to the client address."""
    if not settings.RATELIMIT_ENABLED:
        return ALLOWED
    return limiter().hit(failure_check(addr))


def hit_gateway_token(token_id: int) -> Decision:
    """Charge a gateway call to its (authenticated) token: the gateway's one round trip."""
    if not settings.RATELIMIT_ENABLED:
        return ALLOWED
    return limiter().hit(Check(f"gw:{token_id}", rate(settings.RATELIMIT_GATEWAY)))


class RateLimited(ServiceError):
    """429 `rate_limited`; `retry_after` seconds go into the Retry-After header."""

    def __init__(self, decision: Decision, who: str):
        self.retry_after = decision.retry_after_header
        whom = {"token": _("token"), "user": _("user"), "address": _("address")}.get(who, who)
        super().__init__(
            "rate_limited",
            _("too many requests from this %(who)s; retry after %(seconds)s s")
            % {"who": whom, "seconds": self.retry_after},
            429,
        )

    def as_dict(self) -> dict:
        return {**super().as_dict(), "retry_after": int(self.retry_after)}


def rate_limited_response(err: RateLimited) -> JsonResponse:
    response = JsonResponse(err.as_dict(), status=429)
    response["Retry-After"] = err.retry_after
    return response


def _request_checks(request, addr: str | None) -> tuple[tuple[Check, ...], str]:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        # Keyed by what was presented (validity is known only later, in the view); a bad token is
        # also charged to the address as a failed authentication.
        digest = hashlib.sha256(header.encode(errors="replace")).hexdigest()[:32]
        return (Check(f"tok:{digest}", rate(settings.RATELIMIT_TOKEN)),), "token"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return (Check(f"user:{user.pk}", rate(settings.RATELIMIT_SESSION)),), "user"
    anon = Check(f"anon:{_address_key(addr)}", rate(settings.RATELIMIT_ANONYMOUS))
    return (anon, failure_check(addr, cost=0)), "address"


class RateLimitMiddleware:
    """Refuses with 429 before the view when the request's subject is over its rate; after the
    view, charges a failed authentication (a 401, or a login the backends refused) to the address,
    and answers a 401 past the address's failure budget with the 429 instead."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not settings.RATELIMIT_ENABLED or request.path.startswith(_EXEMPT):
            return self.get_response(request)
        addr = request_client_address(request)
        checks, who = _request_checks(request, addr)
        decision = limiter().hit(*checks)
        if not decision.allowed:
            return rate_limited_response(RateLimited(decision, who))
        response = self.get_response(request)
        if response.status_code == 401 or getattr(request, "sv_auth_failed", False):
            decision = note_auth_failure(addr)
            if not decision.allowed and response.status_code == 401:
                # Past the address's failure budget the answer says so (the refusal is already audited).
                return rate_limited_response(RateLimited(decision, "address"))
        return response
