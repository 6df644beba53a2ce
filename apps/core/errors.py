"""One error shape for the whole product: JSON with a stable machine `code`, a human `detail`
and, where one is at fault, the `field`.

Services raise ServiceError; DRF views render it through api_exception_handler; the plain
Django views of the gateway render it with json_error (which also carries KServe's `error` key
so that tritonclient shows the message).

A `detail` is written for people, in the language of whoever asked (issue 17): raise sites translate
it with `_` from this module — `_("No model named %(name)s.") % {"name": name}` — which is Django's
gettext returning a `Refusal`, a str that also remembers its English (`.en`: the msgid with the same
parameters). The code never changes with the language. The data plane and Celery tasks activate no
language and answer in English as before; an API client sending `Accept-Language: zh-hans` reads
Chinese. Records that must stay searchable and exportable whatever the actor's language (audit
events, a job's stored failure) take `err.detail_en`. tests/core/test_refusal_i18n.py fails on a raise
site whose detail is not a `_()` call.
"""

from __future__ import annotations

import json

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpResponse
from django.utils.translation import gettext as django_gettext
from rest_framework import exceptions, status
from rest_framework.response import Response


class Refusal(str):
    """A translated text that remembers its English: `en` is the msgid, with the same parameters."""

    en: str

    def __mod__(self, params):
        out = Refusal(str.__mod__(self, params))
        if isinstance(params, dict):
            out.en = self.en % {key: getattr(value, "en", value) for key, value in params.items()}
        else:
            out.en = self.en % params
        return out


def _(message: str) -> Refusal:
    """gettext for a refusal's detail (makemessages extracts `_("…")` calls, as Django's own)."""
    text = Refusal(django_gettext(message))
    text.en = message
    return text


def english(text) -> str:
    """The English of a text made with `_` (the text itself otherwise)."""
    return str(getattr(text, "en", text))


class ServiceError(Exception):
    """A business rule refused the operation. Nothing has been saved when this is raised."""

    def __init__(self, code: str, detail: str, status_code: int = 400, field: str | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status_code = status_code
        self.field = field

    @property
    def detail_en(self) -> str:
        """The detail in English whatever language raised it: for audit events and stored failures."""
        return english(self.detail)

    def as_dict(self) -> dict:
        body = {"code": self.code, "detail": self.detail}
        if self.field:
            body["field"] = self.field
        return body


class NotFound(ServiceError):
    def __init__(self, code: str, detail: str):
        super().__init__(code, detail, status.HTTP_404_NOT_FOUND)


def get_or_404(source, code: str, detail: str, **lookup):
    """The one row of `source` (a model class or a QuerySet, e.g. with select_for_update) matching
    `lookup`, or NotFound(code, detail). The caller keeps its own stable code and message."""
    queryset = source._default_manager.all() if isinstance(source, type) else source
    obj = queryset.filter(**lookup).first()
    if obj is None:
        raise NotFound(code, detail)
    return obj


class Conflict(ServiceError):
    def __init__(self, code: str, detail: str, field: str | None = None):
        super().__init__(code, detail, status.HTTP_409_CONFLICT, field)


def json_error(err: ServiceError) -> HttpResponse:
    body = {"error": err.detail, **err.as_dict()}
    return HttpResponse(json.dumps(body), status=err.status_code, content_type="application/json")


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "parse_error",
    exceptions.Throttled: "throttled",
}


def api_exception_handler(exc, context):
    """Render ServiceError and DRF's own exceptions in the one error shape."""
    from rest_framework.views import exception_handler  # late: rest_framework.views imports our auth classes

    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status_code)
    # DRF converts these two Django exceptions into a response but not the exception itself,
    # and the rendering below reads the DRF exception's `detail`.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, messages = _first_field_error(exc.detail)
        body = {"code": "invalid", "detail": messages, "field": field, "errors": exc.detail}
        if field is None:
            body.pop("field")
        response.data = body
        return response
    detail_code = getattr(exc.detail, "code", None)  # e.g. a permission class's own `code`
    if detail_code == getattr(exc, "default_code", None):
        detail_code = None
    code = (
        getattr(exc, "code", None) or detail_code or _DRF_CODES.get(type(exc)) or getattr(exc, "default_code", "error")
    )
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    response.data = {"code": str(code), "detail": str(detail)}
    return response


def _first_field_error(detail) -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            msg = value[0] if isinstance(value, list) and value else value
            field = None if key == "non_field_errors" else key
            return field, f"{key}: {msg}" if field else str(msg)
    if isinstance(detail, list) and detail:
        return None, str(detail[0])
    return None, str(detail)
