"""Read-only admin pages: attached profiles, posture history, and reports with their progress.
Changes go through the API (services), which audit them."""

from django import forms
from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from apps.core.admin_utils import ReadOnlyAdmin, ServiceFormAdminMixin, run_service

from . import services
from .catalog import profiles
from .models import ComplianceReport, ControlResult, ProfileAttachment, RestoreDrill


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


@admin.register(RestoreDrill)
class RestoreDrillAdmin(NoAddAdmin):
    """Restore drills (manage.py restore_drill), newest first: what backup.restore_drill reads."""

    list_display = ["finished_at", "ok", "events_verified", "last_sequence", "source_database", "requested_by"]
    list_filter = ["ok"]


class ReportRequestForm(forms.ModelForm):
    """Generate a report from the admin: the same service as POST /api/v1/compliance/reports/."""

    report_profile = forms.ChoiceField(label=_("profile"), choices=())
    start = forms.DateTimeField(label=_("period start"), help_text=_("YYYY-MM-DD HH:MM:SS, in your time zone"))
    end = forms.DateTimeField(label=_("period end"), help_text=_("YYYY-MM-DD HH:MM:SS, in your time zone"))
    report_language = forms.ChoiceField(
        label=_("language"),
        required=False,
        choices=[("", _("the profile's default")), ("en", "English"), ("zh-hans", "简体中文")],
    )

    class Meta:
        model = ComplianceReport
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["report_profile"].choices = [(p.id, p.id) for p in profiles().values()]


@admin.register(ComplianceReport)
class ComplianceReportAdmin(ServiceFormAdminMixin, ReadOnlyAdmin):
    """Reports and their progress; "Add" queues a new one (a Celery task signs and writes it)."""

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

    def has_add_permission(self, request):
        return request.user.has_perm("compliance.export_compliancereport")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ReportRequestForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["report_profile", "start", "end", "report_language"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        report = run_service(
            self,
            request,
            services.request_report,
            profile=data["report_profile"],
            period_start=data["start"],
            period_end=data["end"],
            language=data["report_language"] or None,
        )
        if report is not None:
            obj.pk = report.pk

    @admin.display(description=_("progress"))
    def progress_bar(self, obj):
        return format_html('<progress max="100" value="{}"></progress> {}%', obj.progress, obj.progress)
