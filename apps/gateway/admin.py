"""Chat-model governance in the admin site: read-only (changes go through the audited API, whose
services also tell the data plane to rebuild its policy snapshot). Retained exchanges show their
metadata only; their content is read through the audited API call."""

from django.contrib import admin

from apps.core.admin_utils import ReadOnlyAdmin

from .models import ChatPolicy, LLMUsage, Quota, RetainedExchange


class _NoAdd(ReadOnlyAdmin):
    def has_add_permission(self, request):
        return False


@admin.register(ChatPolicy)
class ChatPolicyAdmin(_NoAdd):
    list_display = ["model", "max_tokens_per_call", "system_prompt_mode", "retention", "retention_days", "updated_at"]
    list_filter = ["retention"]
    fields = [
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
    readonly_fields = fields


@admin.register(Quota)
class QuotaAdmin(_NoAdd):
    list_display = [
        "scope",
        "user",
        "group",
        "token",
        "model",
        "tokens_per_day",
        "tokens_per_month",
        "requests_per_minute",
        "tokens_per_minute",
    ]
    list_filter = ["scope"]
    fields = [*list_display, "updated_by", "updated_at"]
    readonly_fields = fields


@admin.register(LLMUsage)
class LLMUsageAdmin(_NoAdd):
    list_display = [
        "at",
        "username",
        "model_name",
        "model_version",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "duration_ms",
        "finish_reason",
        "status",
    ]
    list_filter = ["status", "finish_reason", "model_name"]
    search_fields = ["username", "request_id"]
    date_hierarchy = "at"
    fields = ["request_id", "token", *list_display]
    readonly_fields = fields


@admin.register(RetainedExchange)
class RetainedExchangeAdmin(_NoAdd):
    list_display = ["at", "request_id", "model_name", "username", "retention", "expires_at", "deleted_at"]
    list_filter = ["retention", "model_name"]
    search_fields = ["request_id", "username"]
    fields = [*list_display, "digest", "deleted_by", "deletion_reason"]  # never the ciphertext
    readonly_fields = fields


from . import model_usage  # noqa: E402, F401 - uic (issue 17): the usage section of the model page
