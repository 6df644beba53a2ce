from django.utils.translation import gettext as _
from rest_framework import serializers

from apps.registry.models import Model

from ..models import ChatPolicy, Quota, QuotaScope, RetainedExchange, Retention, SystemPromptMode
from ..selectors import GROUP_BY


class ChatPolicySerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", queryset=Model.objects.all())
    updated_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    max_tokens_per_call = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    allowed_sampling = serializers.JSONField(required=False)
    system_prompt = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    system_prompt_mode = serializers.ChoiceField(SystemPromptMode.choices, required=False)
    retention = serializers.ChoiceField(Retention.choices, required=False)
    retention_days = serializers.IntegerField(required=False, min_value=1, max_value=3650)

    class Meta:
        model = ChatPolicy
        fields = [
            "id",
            "model",
            "max_tokens_per_call",
            "allowed_sampling",
            "system_prompt",
            "system_prompt_mode",
            "retention",
            "retention_days",
            "updated_by",
            "updated_at",
        ]
        read_only_fields = ["id", "updated_by", "updated_at"]
        validators = []  # set_chat_policy creates or replaces: the one-to-one is not a conflict here


class QuotaSerializer(serializers.ModelSerializer):
    scope = serializers.ChoiceField(QuotaScope.choices)
    subject = serializers.IntegerField(source="subject_id", help_text="The user, group or token id")
    model = serializers.SlugRelatedField(
        slug_field="name", queryset=Model.objects.all(), required=False, allow_null=True
    )
    updated_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Quota
        fields = [
            "id",
            "scope",
            "subject",
            "model",
            "tokens_per_day",
            "tokens_per_month",
            "requests_per_minute",
            "tokens_per_minute",
            "updated_by",
            "updated_at",
        ]
        read_only_fields = ["id", "updated_by", "updated_at"]
        validators = []


class ExchangeSerializer(serializers.ModelSerializer):
    deleted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    model = serializers.CharField(source="model_name", read_only=True)
    user = serializers.CharField(source="username", read_only=True)

    class Meta:
        model = RetainedExchange
        fields = [
            "id",
            "request_id",
            "model",
            "user",
            "at",
            "expires_at",
            "retention",
            "digest",
            "deleted_at",
            "deleted_by",
            "deletion_reason",
        ]
        read_only_fields = fields


class ExchangeContentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    request_id = serializers.CharField()
    model = serializers.CharField()
    user = serializers.CharField()
    at = serializers.DateTimeField()
    messages = serializers.ListField(child=serializers.DictField())
    answer = serializers.CharField(allow_blank=True)


class ExchangeDeleteSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300)


class UsageQuerySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(GROUP_BY, default="model")
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    model = serializers.CharField(required=False, max_length=63)

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": _("until must be after since")})
        return attrs


class UsageRowSerializer(serializers.Serializer):
    user = serializers.IntegerField(required=False, allow_null=True)
    group = serializers.IntegerField(required=False, allow_null=True)
    token = serializers.IntegerField(required=False, allow_null=True)
    model = serializers.IntegerField(required=False, allow_null=True)
    name = serializers.CharField()
    calls = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
