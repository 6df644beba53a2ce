import re

from .context import new_request_id, request_id_var, request_var

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Assigns every request a correlation id (or accepts a well-formed X-Request-ID) that the
    audit log records and Celery tasks inherit, and echoes it in the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        rid = incoming if _VALID.match(incoming) else new_request_id()
        token = request_id_var.set(rid)
        request_token = request_var.set(request)
        request.request_id = rid
        try:
            response = self.get_response(request)
        finally:
            request_var.reset(request_token)
            request_id_var.reset(token)
        response["X-Request-ID"] = rid
        return response
