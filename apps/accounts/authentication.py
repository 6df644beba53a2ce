from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions

from apps.audit.services import Source
from apps.core.netaddr import request_client_address

from .services import TokenRejected, authenticate_bearer, note_break_glass_use, note_superuser_use, record_denied


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication, refused for a request a browser made for another site (Fetch
    Metadata `Sec-Fetch-Site: cross-site` or `same-site`). The API's GETs that are themselves
    audited (a report download, an audit export or search) took the console's session cookie, so a
    link or an image on another site, or on a sibling host the SameSite=Lax cookie still reaches,
    made the person's browser write `compliance.report.download` or `audit.export` in their name
    (review 18). The portal's own pages send `same-origin`, a typed address `none`, API clients
    with a token nothing: they pass."""

    def authenticate(self, request):
        found = super().authenticate(request)
        site = request._request.META.get("HTTP_SEC_FETCH_SITE", "").lower()
        if found is not None and site in ("cross-site", "same-site"):
            exc = exceptions.PermissionDenied(
                _(
                    "refused: the console's session answers the portal's own pages only; "
                    "another site's page asked for this (Sec-Fetch-Site: %(site)s)"
                )
                % {"site": site}
            )
            exc.code = "cross_site_request"
            raise exc
        return found


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """DRF authentication with Sovereign API tokens (`Authorization: Bearer svt_...`). A refusal
    is 401, except one about the account rather than the token (`password_expired`): 403."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        try:
            user, token = authenticate_bearer(header, request_client_address(request))
        except TokenRejected as err:
            # The Django request, not DRF's: reading DRF's request.auth here would re-run this method.
            record_denied(err, source=Source.from_request(request._request), details={"path": request.path})
            exc_class = exceptions.PermissionDenied if err.status_code == 403 else exceptions.AuthenticationFailed
            exc = exc_class(err.detail)
            exc.code = err.code
            raise exc from None
        source = Source.from_request(request._request, token=token)
        note_break_glass_use(user, source, request.path)
        if user.is_superuser:
            note_superuser_use(user, source=source, via="token", path=request.path)
        return user, token

    def authenticate_header(self, request):
        return 'Bearer realm="sovereign"'
