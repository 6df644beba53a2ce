from django.db import transaction
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import ServiceError, _

from ..export import EXPORT_FORMATS, audited_export
from ..filters import AuditEventFilter, unknown_params
from ..models import AuditEvent
from ..selectors import events_visible_to
from ..services import Source, record_event
from ..verify import verify_chain
from .serializers import AuditEventSerializer, VerifyReportSerializer


class AuditCursorPagination(CursorPagination):
    """Stable pages over a log that grows while it is read; newest first unless ?ordering=timestamp."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = ("-timestamp", "-id")

    def get_ordering(self, request, queryset, view):
        wanted = request.query_params.get("ordering", "-timestamp")
        if wanted not in ("timestamp", "-timestamp"):
            raise ServiceError("invalid", _("ordering must be 'timestamp' or '-timestamp'"), field="ordering")
        return ("timestamp", "id") if wanted == "timestamp" else ("-timestamp", "-id")


def _refuse_unknown(request) -> None:
    unknown = unknown_params(request.query_params)
    if unknown:
        raise ServiceError(
            "unknown_filter",
            _("not a filter of the audit log: %(unknown)s") % {"unknown": ", ".join(unknown)},
            field=unknown[0],
        )


def filtered_events(request):
    """The caller's visible events narrowed by the query's filters (400 on a malformed one)."""
    _refuse_unknown(request)
    filterset = AuditEventFilter(request.query_params, queryset=events_visible_to(request.user), request=request)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset.qs, {k: v for k, v in request.query_params.items() if k in AuditEventFilter.base_filters}


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Search the audit log: filters on time range, actor, event type or group, target, outcome,
    error code, request id, source address and text in the details; cursor pages in time order.
    The auditor reads every event; the security officer reads the `keys` group."""

    serializer_class = AuditEventSerializer
    pagination_class = AuditCursorPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditEventFilter
    action_perms = {"list": None, "retrieve": None}  # scoped by events_visible_to

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return AuditEvent.objects.none()
        return events_visible_to(self.request.user)

    def list(self, request, *args, **kwargs):
        _refuse_unknown(request)
        response = super().list(request, *args, **kwargs)
        self._audit_read({k: v for k, v in request.query_params.items() if k != "cursor"})
        return response

    def retrieve(self, request, *args, **kwargs):
        response = super().retrieve(request, *args, **kwargs)
        self._audit_read({"id": kwargs.get("pk")})
        return response

    def _audit_read(self, query: dict) -> None:
        """Reading the log is itself recorded (who looked at what, HIPAA 164.312(b))."""
        with transaction.atomic():
            record_event(
                "audit.search", actor=self.request.user, source=Source.from_request(self.request), details=query
            )


class AuditExportView(APIView):
    """Export the filtered selection (same filters as the events list) as JSON Lines or CSV,
    streamed, with the checkpoints and chain links that verify it offline
    (`python apps/audit/offline_verify.py FILE --key KEY.pem`). The export is itself audited
    (`audit.export`); a selection above the caller's row limit is refused (413 `export_too_large`)."""

    action_perms = {"get": None}  # scoped by events_visible_to

    @extend_schema(
        parameters=[
            OpenApiParameter("file_format", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(EXPORT_FORMATS))
        ],
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, file_format: str):
        if file_format not in EXPORT_FORMATS:
            raise ServiceError(
                "invalid_format",
                _("export format must be one of: %(export_formats)s") % {"export_formats": ", ".join(EXPORT_FORMATS)},
            )
        queryset, selection = filtered_events(request)
        return audited_export(queryset, selection, file_format, actor=request.user, source=Source.from_request(request))


class AuditVerifyViewSet(viewsets.ViewSet):
    """Verify the hash chain and every checkpoint signature (auditor role). Always 200: the body
    says whether the log is intact, empty or tampered, and where the first damage is."""

    action_perms = {"list": "audit.view_auditevent"}

    @extend_schema(responses={200: VerifyReportSerializer})
    def list(self, request):
        report = verify_chain()
        problem = report["problem"]
        record_event(
            "audit.verify",
            actor=request.user,
            source=Source.from_request(request),
            outcome="success" if report["ok"] else "failure",
            error_code=f"audit_{problem['kind']}" if problem else "",
            details={"status": report["status"], "last_sequence": report["last_sequence"], "problem": problem},
        )
        return Response(VerifyReportSerializer(report).data)
