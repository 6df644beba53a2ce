from rest_framework import serializers

from ..models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "timestamp",
            "sequence",
            "actor_name",
            "token_id",
            "source_ip",
            "user_agent",
            "request_id",
            "event_type",
            "event_group",
            "target_type",
            "target_id",
            "target_display",
            "outcome",
            "error_code",
            "details",
        ]
        read_only_fields = fields
