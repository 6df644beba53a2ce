from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.response import Response

from ..models import AuditEvent
from ..services import Source, record_event
from ..verify import verify_chain
from .serializers import AuditEventSerializer, VerifyReportSerializer


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first. (Auditor role, search and export arrive with issues 3 and 5.)"""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    action_perms = {"list": "audit.view_auditevent", "retrieve": "audit.view_auditevent"}
    filterset_fields = {
        "event_type": ["exact"],
        "event_group": ["exact"],
        "actor_name": ["exact"],
        "outcome": ["exact"],
        "request_id": ["exact"],
        "target_type": ["exact"],
        "target_id": ["exact"],
        "timestamp": ["gte", "lt"],
    }


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
