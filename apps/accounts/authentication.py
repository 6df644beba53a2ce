from rest_framework import authentication, exceptions

from apps.audit.services import Source

from .services import TokenRejected, authenticate_bearer, note_break_glass_use, note_superuser_use, record_denied


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """DRF authentication with Sovereign API tokens (`Authorization: Bearer svt_...`). A refusal
    is 401, except one about the account rather than the token (`password_expired`): 403."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None
        try:
            user, token = authenticate_bearer(header, request.META.get("REMOTE_ADDR"))
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
