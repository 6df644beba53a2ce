from rest_framework import viewsets

from ..models import AuditEvent
from .serializers import AuditEventSerializer


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
