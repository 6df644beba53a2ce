"""Refuse requests that a browser sends on behalf of another site, for views that DRF exempts
from Django's CSRF check (a view with no session authentication, such as the API login).

Login CSRF: a page on another site posts a form to the login endpoint with the attacker's
credentials; the victim's browser then holds a session of the attacker's account, and whatever
the victim does next (uploads, prompts) lands in an account the attacker reads. Django's
CsrfViewMiddleware protects the admin login; the API login is exempt (no session yet), so it
checks, in this order, what browsers send on every cross-origin POST:

1. `Sec-Fetch-Site: cross-site` refuses outright;
2. an `Origin` header must be this site's own origin (scheme, host, port) or one of
   CSRF_TRUSTED_ORIGINS (`https://*.example.org` wildcards as Django reads them); `null` (a
   sandboxed frame, a redirect chain) is refused;
3. without an Origin, a `Referer` must name this site or a trusted origin.

A client without any of these headers (curl, a script, a CI job) is not a browser that can be
driven by another site, and passes. The view also accepts JSON bodies only: a cross-site HTML
form cannot send `application/json`, and a cross-site script can only after a CORS preflight,
which the portal never grants.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.utils.http import is_same_domain
from rest_framework.permissions import BasePermission

from apps.core.errors import _

from .errors import ServiceError

CROSS_SITE = "cross_site_request"


def _trusted(origin: str, request) -> bool:
    if origin == f"{request.scheme}://{request.get_host()}":
        return True
    parts = urlsplit(origin)
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        allowed = urlsplit(trusted)
        wildcard = allowed.netloc.startswith("*")  # Django's reading: `*.example.org` is any subdomain
        if trusted == origin or (
            wildcard and allowed.scheme == parts.scheme and is_same_domain(parts.netloc, allowed.netloc.lstrip("*"))
        ):
            return True
    return False


def cross_site_reason(request) -> str | None:
    """Why `request` looks like a cross-site browser request, or None if it does not."""
    if request.META.get("HTTP_SEC_FETCH_SITE", "").lower() == "cross-site":
        return "Sec-Fetch-Site says cross-site"
    origin = request.META.get("HTTP_ORIGIN")
    if origin is not None:
        return None if origin != "null" and _trusted(origin, request) else "the Origin is another site"
    referer = request.META.get("HTTP_REFERER")
    if referer:
        parts = urlsplit(referer)
        if not parts.scheme or not parts.netloc or not _trusted(f"{parts.scheme}://{parts.netloc}", request):
            return "the Referer is another site"
    return None


class SameOriginOnly(BasePermission):
    """DRF permission: 403 `cross_site_request` for a request another site's page made."""

    def has_permission(self, request, view) -> bool:
        reason = cross_site_reason(request._request)
        if reason:
            raise ServiceError(
                CROSS_SITE,
                _("refused: this endpoint takes requests from this site's own pages or from API clients (%(reason)s)")
                % {"reason": reason},
                403,
            )
        return True
