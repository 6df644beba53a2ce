"""Checks of the API's gate: every route refuses a caller without a session or a token.

The check does not trust the configured default permission class (a view can override it): it
walks the live URLconf and asks each API route, in process, to answer an anonymous request for
every method it handles. Permission checks run before any handler, so nothing is read or written;
a route that answers anything but 401/403 is open."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver

from . import FAIL, PASS, CheckResult, register

API_PREFIX = "api/"
METHODS = ("get", "post", "put", "patch", "delete")
_PARAM = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?:[^()]|\([^()]*\))*\)")
_DUMMY = {"int": "0", "uuid": "00000000-0000-0000-0000-000000000000", "path": "x", "slug": "x", "str": "x"}
LIST_LIMIT = 50
# Routes that are public by design, each with its reason; anything else must refuse an anonymous caller.
PUBLIC_API_ROUTES = {
    "api/v1/accounts/login/": "the login itself (same-origin JSON only, locked out by django-axes)",
}


def _walk(patterns, prefix=""):
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, route)
        elif isinstance(p, URLPattern):
            yield route, p.callback


def _concrete(route: str) -> tuple[str, dict] | None:
    """(path, view kwargs) for a route: `api/v1/models/<int:pk>/` -> `/api/v1/models/0/`, {"pk": "0"};
    a router's regex `api/v1/^events/(?P<pk>[^/.]+)/$` the same way. None for a regex that is more
    than anchors and named groups (e.g. a format suffix), which the plain route covers."""
    kwargs = {m.group("name"): "0" for m in _GROUP.finditer(route)}
    path = _GROUP.sub("0", route).replace("^", "").replace("$", "")
    kwargs |= {m.group("name"): _DUMMY.get(m.group("conv") or "str", "x") for m in _PARAM.finditer(path)}
    path = _PARAM.sub(lambda m: _DUMMY.get(m.group("conv") or "str", "x"), path)
    if re.search(r"[\\()\[\]?*+|{}]", path):
        return None
    return "/" + path, kwargs


def api_routes() -> list[tuple[str, object]]:
    return [(r, cb) for r, cb in _walk(get_resolver(settings.ROOT_URLCONF).url_patterns) if r.startswith(API_PREFIX)]


def _methods(callback) -> list[str]:
    actions = getattr(callback, "actions", None)  # a DRF viewset route maps methods to actions
    if actions:
        return [m for m in METHODS if m in actions]
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view_class is not None:
        return [m for m in METHODS if hasattr(view_class, m)]
    return ["get"]


@register("access.api_requires_auth", proof="probe")
def api_requires_auth(ctx) -> CheckResult:
    factory = RequestFactory()
    probed, open_routes, skipped = 0, [], []
    for route, callback in api_routes():
        if route in PUBLIC_API_ROUTES:
            continue
        concrete = _concrete(route)
        if concrete is None:
            skipped.append(route)
            continue
        path, kwargs = concrete
        for method in _methods(callback):
            request = getattr(factory, method)(path, data={} if method == "get" else None)
            request.user = AnonymousUser()
            request.session = {}
            probed += 1
            try:
                status = callback(request, **kwargs).status_code
            except Exception as exc:  # noqa: BLE001 - the handler ran for an anonymous caller: open
                status = f"raised {type(exc).__name__}"
            if status not in (401, 403):
                open_routes.append(f"{method.upper()} {path} -> {status}")
    evidence = {
        "probed": f"{probed} anonymous requests to the API routes of {settings.ROOT_URLCONF}",
        "answered_without_credentials": open_routes[:LIST_LIMIT],
        "not_probed_regex_routes": skipped[:LIST_LIMIT],
        "public_by_design": PUBLIC_API_ROUTES,
        "DEFAULT_PERMISSION_CLASSES": settings.REST_FRAMEWORK.get("DEFAULT_PERMISSION_CLASSES", []),
    }
    if open_routes or not probed:
        return CheckResult(
            FAIL,
            f"{len(open_routes)} API route(s) answer a caller without a session or a token"
            if probed
            else "no API route was found to probe",
            evidence,
            "Give each listed view ActionPermission (or IsAuthenticated) instead of AllowAny or an empty "
            "permission list.",
        )
    return CheckResult(PASS, f"all {probed} anonymous API requests were refused (401/403)", evidence)
