"""Read-only admin pages: attached profiles, posture history, and reports with their progress.
Changes go through the API (services), which audit them."""

from django.contrib import admin
from django.utils.html import format_html

from apps.core.admin_utils import ReadOnlyAdmin

from .models import ComplianceReport, ControlResult, ProfileAttachment


class NoAddAdmin(ReadOnlyAdmin):
    def has_add_permission(self, request):
        return False


@admin.register(ProfileAttachment)
class ProfileAttachmentAdmin(NoAddAdmin):
    list_display = ["profile", "model", "options", "attached_by", "attached_at"]
    list_filter = ["profile"]


@admin.register(ControlResult)
class ControlResultAdmin(NoAddAdmin):
    """Posture over time: one row per control per evaluation run."""

    list_display = ["run", "profile", "control_id", "family", "status", "evaluated_at"]
    list_filter = ["profile", "status", "family"]
    search_fields = ["control_id"]
    readonly_fields = ["run", "profile", "control_id", "family", "status", "evidence", "remedy", "evaluated_at"]


@admin.register(ComplianceReport)
class ComplianceReportAdmin(NoAddAdmin):
    list_display = ["id", "profile", "period_start", "period_end", "language", "state", "progress_bar", "created_at"]
    list_filter = ["profile", "state"]
    readonly_fields = [
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

    @admin.display(description="progress")
    def progress_bar(self, obj):
        return format_html('<progress max="100" value="{}"></progress> {}%', obj.progress, obj.progress)
