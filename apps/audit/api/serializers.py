from rest_framework import serializers

from ..chain import ROW_FIELDS
from ..models import AuditEvent
from ..offline_verify import PROBLEM_KINDS


class AuditEventSerializer(serializers.ModelSerializer):
    """An event as the chain records it (the fields its hash covers, its id and its hash)."""

    class Meta:
        model = AuditEvent
        fields = list(ROW_FIELDS)
        read_only_fields = fields


class VerifyProblemSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="One of: " + ", ".join(PROBLEM_KINDS))
    sequence = serializers.IntegerField()
    detail = serializers.CharField()


class VerifyReportSerializer(serializers.Serializer):
    """What `audit_verify` and GET /api/v1/audit/verify/ answer."""

    ok = serializers.BooleanField()
    status = serializers.ChoiceField(
        choices=["ok", "empty", "tampered", "unsupported"],
        help_text="unsupported: an event uses an encoding version this portal does not know",
    )
    detail = serializers.CharField()
    hash_alg = serializers.CharField()
    events_checked = serializers.IntegerField()
    links_checked = serializers.IntegerField()
    checkpoints_checked = serializers.IntegerField()
    first_sequence = serializers.IntegerField(allow_null=True)
    last_sequence = serializers.IntegerField(allow_null=True)
    last_checkpoint_sequence = serializers.IntegerField(allow_null=True)
    unsigned_tail = serializers.IntegerField(allow_null=True, help_text="Sealed events after the last checkpoint")
    pending = serializers.IntegerField(help_text="Events not sealed yet")
    problem = VerifyProblemSerializer(allow_null=True)
