from rest_framework import serializers

from apps.registry.models import Model

from ..models import (
    AnswerScreen,
    Attestation,
    ComplianceReport,
    ControlResult,
    DeidMode,
    EvaluationRun,
    ModelPolicy,
    ProfileAttachment,
)


class ControlSpecSerializer(serializers.Serializer):
    id = serializers.CharField()
    framework = serializers.CharField()
    family = serializers.DictField(child=serializers.CharField())
    summary = serializers.DictField(child=serializers.CharField())
    checks = serializers.ListField(child=serializers.CharField())
    evidence = serializers.DictField(child=serializers.CharField())
    remedy = serializers.DictField(child=serializers.CharField())
    option = serializers.CharField(allow_null=True)
    preconditions = serializers.ListField(child=serializers.CharField())


class ProfileSpecSerializer(serializers.Serializer):
    id = serializers.CharField()
    framework = serializers.CharField()
    name = serializers.DictField(child=serializers.CharField())
    default_language = serializers.CharField()
    audit_retention_days = serializers.IntegerField()
    options = serializers.DictField(child=serializers.DictField(child=serializers.CharField()))
    controls = ControlSpecSerializer(many=True)


class ProfileAttachmentSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Model.objects.all(),
        required=False,
        allow_null=True,
        help_text="A model name; leave empty to attach to the whole installation",
    )
    options = serializers.DictField(child=serializers.BooleanField(), required=False)
    attached_by = serializers.StringRelatedField()

    class Meta:
        model = ProfileAttachment
        fields = ["id", "profile", "model", "options", "attached_by", "attached_at"]
        read_only_fields = ["id", "attached_by", "attached_at"]
        validators = []  # uniqueness is the service's (one error code: profile_attached)


class ModelPolicySerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", queryset=Model.objects.all())
    deid_mode = serializers.ChoiceField(choices=DeidMode.choices)
    answer_screen = serializers.ChoiceField(
        choices=AnswerScreen.choices,
        required=False,
        allow_blank=True,
        help_text="Identifiers in answers: off, redact or alert; empty: redact for a PHI model, else off; "
        "omitted: unchanged",
    )
    numeric_inputs_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=True,
        help_text="Why the model's non-text inputs carry no identifiers (needed for a PHI model with numeric "
        "inputs, else the gateway refuses them); empty withdraws; omitted: unchanged",
    )
    updated_by = serializers.StringRelatedField()

    class Meta:
        model = ModelPolicy
        fields = ["model", "phi", "deid_mode", "answer_screen", "numeric_inputs_reason", "updated_by", "updated_at"]
        read_only_fields = ["updated_by", "updated_at"]
        validators = []


class EvaluationRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvaluationRun
        fields = ["id", "started_at", "finished_at", "trigger", "passed", "failed", "manual", "not_applicable"]


class ControlResultSerializer(serializers.ModelSerializer):
    evidence = serializers.ListField(child=serializers.DictField())

    class Meta:
        model = ControlResult
        fields = ["id", "run", "profile", "control_id", "family", "status", "evidence", "remedy", "evaluated_at"]


class AttestationSerializer(serializers.ModelSerializer):
    uploaded_by = serializers.StringRelatedField()

    class Meta:
        model = Attestation
        fields = [
            "id",
            "profile",
            "control_id",
            "note",
            "file_name",
            "sha256",
            "size_bytes",
            "expires_at",
            "uploaded_by",
            "uploaded_at",
        ]


class AttestationUploadSerializer(serializers.Serializer):
    profile = serializers.CharField(max_length=32)
    control_id = serializers.CharField(max_length=64)
    expires_at = serializers.DateTimeField()
    note = serializers.CharField(required=False, allow_blank=True, default="")
    file = serializers.FileField()


class ReportRequestSerializer(serializers.Serializer):
    profile = serializers.CharField(max_length=32)
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    language = serializers.ChoiceField(choices=["en", "zh-hans"], required=False)


class ComplianceReportSerializer(serializers.ModelSerializer):
    requested_by = serializers.StringRelatedField()
    files = serializers.DictField(child=serializers.CharField())

    class Meta:
        model = ComplianceReport
        fields = [
            "id",
            "profile",
            "period_start",
            "period_end",
            "language",
            "state",
            "progress",
            "error",
            "files",
            "key_id",
            "requested_by",
            "created_at",
            "finished_at",
        ]
