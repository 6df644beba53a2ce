"""Compliance in the admin: attach and detach profiles, evaluate now, reports with their progress
and their files to download. Every write calls the same audited service as the API
(apps.compliance.services); the pages only parse, authorise, call and render."""

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import FileResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.core.admin_utils import ReadOnlyAdmin, ServiceFormAdminMixin, run_service
from apps.core.form_fields import IsoDateTimeField
from apps.core.source import Source
from apps.registry.models import Model
from apps.registry.selectors import add_model_page_section

from . import services
from .catalog import control_of, family_text, pick, profiles, remedy_text
from .models import ComplianceReport, ControlResult, EvaluationRun, ProfileAttachment, ReportState, RestoreDrill
from .reports.summaries import translate_summary
from .storage import directory

DOWNLOAD_FORMATS = ("pdf", "csv", "json", "pdf.sig", "csv.sig", "json.sig")
CONTENT_TYPES = {"pdf": "application/pdf", "csv": "text/csv", "json": "application/json"}


class NoAddAdmin(ReadOnlyAdmin):
    def has_add_permission(self, request):
        return False


class AttachForm(forms.ModelForm):
    """Attach a profile: the same service as POST /api/v1/compliance/attachments/."""

    attach_profile = forms.ChoiceField(label=_("profile"), choices=())
    attach_model = forms.ModelChoiceField(
        label=_("model"),
        queryset=Model.objects.order_by("name"),
        required=False,
        empty_label=_("the whole installation"),
        help_text=_("Leave empty to attach the profile to the whole installation."),
    )
    attach_options = forms.MultipleChoiceField(
        label=_("options"), choices=(), required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ProfileAttachment
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        specs = profiles().values()  # names in the page's language (pick follows the active one)
        self.fields["attach_profile"].choices = [(p.id, f"{p.id} — {pick(p.name)}") for p in specs]
        self.fields["attach_options"].choices = [
            (name, f"{p.id}: {pick(text)}") for p in specs for name, text in p.options.items()
        ]


@admin.register(ProfileAttachment)
class ProfileAttachmentAdmin(ServiceFormAdminMixin, ReadOnlyAdmin):
    """Profiles attached to the installation or to one model. "Add" attaches (refused, with the
    reason, when the system cannot meet the profile); "Delete" detaches. Both are audited."""

    list_display = ["profile", "where", "options", "attached_by", "attached_at"]
    list_filter = ["profile"]
    fields = ["profile", "where", "options", "attached_by", "attached_at"]
    readonly_fields = fields

    @admin.display(description=_("attached to"))
    def where(self, obj):
        return obj.model.name if obj.model_id else gettext("the whole installation")

    def has_add_permission(self, request):
        return request.user.has_perm("compliance.manage_profiles")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("compliance.manage_profiles")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = AttachForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["attach_profile", "attach_model", "attach_options"] if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_changeform_initial_data(self, request):
        # ?model=<id> from a model's page preselects it
        model = request.GET.get("model", "")
        return {"attach_model": model} if model.isdigit() else {}

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        model = data["attach_model"]
        attachment = run_service(
            self,
            request,
            services.attach_profile,
            profile=data["attach_profile"],
            model_id=model.pk if model else None,
            options=dict.fromkeys(data["attach_options"], True),
        )
        if attachment is not None:
            obj.pk = attachment.pk

    def delete_model(self, request, obj):
        run_service(self, request, services.detach_profile, attachment_id=obj.pk)

    def log_deletions(self, request, queryset):
        return None  # the service's audit event is the record; a refused detach deleted nothing

    def response_delete(self, request, obj_display, obj_id):
        changelist = reverse("admin:compliance_profileattachment_changelist")
        if ProfileAttachment.objects.filter(pk=obj_id).exists():  # refused: the message says why
            return HttpResponseRedirect(changelist)
        response = super().response_delete(request, obj_display, obj_id)
        if isinstance(response, HttpResponseRedirect):  # Django sends a reader without "change" to the index
            response["Location"] = changelist
        return response


class FamilyFilter(admin.SimpleListFilter):
    """The stored (English) families, each named in the page's language."""

    title = _("family")
    parameter_name = "family"

    def lookups(self, request, model_admin):
        stored = ControlResult.objects.order_by("family").values_list("family", flat=True).distinct()
        return [(f, family_text(f)) for f in stored]

    def queryset(self, request, queryset):
        return queryset.filter(family=self.value()) if self.value() else queryset


EVIDENCE_HEAD = ("check", "proof", "status", "summary")


def _details(entry: dict) -> str:
    """What the check looked at, as it recorded it (values, not labels: not translated)."""
    rest = {k: v for k, v in entry.items() if k not in EVIDENCE_HEAD}
    return json.dumps(rest, ensure_ascii=False, sort_keys=True, default=str) if rest else ""


@admin.register(ControlResult)
class ControlResultAdmin(NoAddAdmin):
    """Posture over time: one row per control per evaluation run; "Evaluate now" runs one (the
    officer's), then shows that run's results. The family, the control's summary, the checks'
    summaries and the remedy are stored in English and shown in the page's language (the
    catalogue's Chinese, the checks' summaries as the Chinese report translates them)."""

    list_display = ["run", "profile", "control_id", "family_label", "status", "evaluated_at"]
    list_filter = ["profile", "status", FamilyFilter]
    search_fields = ["control_id"]
    fields = [
        "run",
        "profile",
        "control_id",
        "control_summary",
        "family_label",
        "status",
        "evidence_table",
        "remedy_label",
        "evaluated_at",
    ]
    readonly_fields = fields
    change_list_template = "admin/compliance/controlresult/change_list.html"

    @admin.display(description=_("family"), ordering="family")
    def family_label(self, obj):
        return family_text(obj.family, obj.profile, obj.control_id)

    @admin.display(description=_("control"))
    def control_summary(self, obj):
        control = control_of(obj.profile, obj.control_id)
        return pick(control.summary) if control else "-"

    @admin.display(description=_("remedy"))
    def remedy_label(self, obj):
        return remedy_text(obj.profile, obj.control_id, obj.remedy) or "-"

    @admin.display(description=_("evidence"))
    def evidence_table(self, obj):
        """One row per check: its name, what backs it, its status and its summary in words."""
        if not obj.evidence:
            return "-"
        statuses = dict(ControlResult._meta.get_field("status").flatchoices)
        proofs = {"probe": gettext("probe"), "query": gettext("query"), "attestation": gettext("attestation")}
        rows = format_html_join(
            "",
            '<tr><td class="sv-mono">{}</td><td>{}</td><td>{}</td><td>{}</td><td class="sv-mono">{}</td></tr>',
            (
                (
                    e.get("check", ""),
                    proofs.get(e.get("proof", ""), e.get("proof", "")),
                    statuses.get(e.get("status"), e.get("status", "")),
                    translate_summary(e.get("summary", "")),
                    _details(e),
                )
                for e in obj.evidence
            ),
        )
        return format_html(
            '<table class="sv-evidence"><thead><tr><th scope="col">{}</th><th scope="col">{}</th>'
            '<th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            gettext("check"),
            gettext("what backs it"),
            _("status"),
            gettext("what it found"),
            gettext("details"),
            rows,
        )

    def get_urls(self):
        own = [
            path(
                "evaluate/",
                self.admin_site.admin_view(self.evaluate_view),
                name="compliance_controlresult_evaluate",
            )
        ]
        return own + super().get_urls()

    def lookup_allowed(self, lookup, value, request=None):
        return lookup == "run__id__exact" or super().lookup_allowed(lookup, value, request)

    def changelist_view(self, request, extra_context=None):
        extra = {"may_evaluate": request.user.has_perm("compliance.evaluate_controls"), **(extra_context or {})}
        run_id = request.GET.get("run__id__exact", "")
        if run_id.isdigit():
            extra["sv_run"] = EvaluationRun.objects.filter(pk=int(run_id)).first()
        return super().changelist_view(request, extra)

    def evaluate_view(self, request):
        """GET: the last run and the button; POST: evaluate every attached profile now (the service
        the API's POST /api/v1/compliance/evaluate/ calls), then the run's results."""
        if not request.user.has_perm("compliance.evaluate_controls"):
            raise PermissionDenied
        if request.method == "POST":
            run = run_service(self, request, services.evaluate_now)
            if run is None:
                return HttpResponseRedirect(reverse("admin:compliance_controlresult_evaluate"))
            self.message_user(request, _run_summary(run), messages.SUCCESS)
            url = reverse("admin:compliance_controlresult_changelist")
            return HttpResponseRedirect(f"{url}?run__id__exact={run.pk}")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Evaluate the compliance controls now"),
            "last_run": EvaluationRun.objects.filter(finished_at__isnull=False).first(),
            "attached": ProfileAttachment.objects.select_related("model"),
        }
        return TemplateResponse(request, "admin/compliance/evaluate.html", context)


def _run_summary(run) -> str:
    return gettext(
        "Evaluation #%(id)d finished: %(passed)d passed, %(failed)d failed, %(manual)d need a person, "
        "%(na)d not applicable."
    ) % {"id": run.pk, "passed": run.passed, "failed": run.failed, "manual": run.manual, "na": run.not_applicable}


@admin.register(RestoreDrill)
class RestoreDrillAdmin(NoAddAdmin):
    """Restore drills (manage.py restore_drill), newest first: what backup.restore_drill reads."""

    list_display = ["finished_at", "ok", "events_verified", "last_sequence", "source_database", "requested_by"]
    list_filter = ["ok"]


# A report's languages, each named in its own (as the page's language switcher names them), never by its code.
REPORT_LANGUAGES = {"en": "English", "zh-hans": "简体中文"}


class ReportRequestForm(forms.ModelForm):
    """Generate a report from the admin: the same service as POST /api/v1/compliance/reports/."""

    report_profile = forms.ChoiceField(label=_("profile"), choices=())
    start = IsoDateTimeField(label=_("period start"), help_text=_("YYYY-MM-DD HH:MM:SS, in your time zone"))
    end = IsoDateTimeField(label=_("period end"), help_text=_("YYYY-MM-DD HH:MM:SS, in your time zone"))
    report_language = forms.ChoiceField(
        label=_("language"),
        required=False,
        choices=[("", _("the profile's default")), *REPORT_LANGUAGES.items()],
    )

    class Meta:
        model = ComplianceReport
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["report_profile"].choices = [(p.id, p.id) for p in profiles().values()]

    def clean(self):
        """The service's two period refusals, said here in the page's language and beside the field,
        with what was typed kept (from the service they came back in English on the list page, the
        form gone). The service still decides (services.request_report): this only explains first."""
        data = super().clean()
        start, end, profile = data.get("start"), data.get("end"), data.get("report_profile")
        if start is None or end is None or not profile:
            return data
        if end <= start:
            self.add_error("end", gettext("The period must end after it starts.") + " (invalid_period)")
        elif not ControlResult.objects.filter(
            profile=profile, run__started_at__gte=start, run__started_at__lt=end
        ).exists():
            self.add_error(
                "start",
                gettext(
                    "No evaluation of %(profile)s in this period: run one (Compliance → Evaluate now) or "
                    "choose a period that contains one."
                )
                % {"profile": profile}
                + " (empty_period)",
            )
        return data


REPORT_DEFAULT_DAYS = 30


@admin.register(ComplianceReport)
class ComplianceReportAdmin(ServiceFormAdminMixin, ReadOnlyAdmin):
    """Reports and their progress; "Add" queues a new one (a Celery task signs and writes it). A
    finished report's files are download links for whoever may export reports (each download
    audited, as the API's), and the page says which provider really holds the signing key."""

    list_display = [
        "id",
        "profile",
        "period_start",
        "period_end",
        "language_name",
        "state",
        "progress_bar",
        "created_at",
    ]
    list_filter = ["profile", "state"]
    change_form_template = "admin/compliance/compliancereport/change_form.html"
    readonly_fields = [
        "profile",
        "period_start",
        "period_end",
        "language_name",
        "state",
        "progress",
        "error",
        "file_names",
        "key_id",
        "requested_by",
        "created_at",
        "finished_at",
    ]

    def get_urls(self):
        own = [
            path(
                "<int:report_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="compliance_compliancereport_download",
            )
        ]
        return own + super().get_urls()

    def has_add_permission(self, request):
        return request.user.has_perm("compliance.export_compliancereport")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ReportRequestForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["report_profile", "start", "end", "report_language"] if obj is None else self.readonly_fields

    def get_changeform_initial_data(self, request):
        """The last 30 days up to now, in the person's time zone: an empty form made a newcomer type
        two date-times in a format only the help text gave, and refused the first try."""
        now = timezone.localtime().replace(microsecond=0)
        start = (now - timedelta(days=REPORT_DEFAULT_DAYS)).replace(hour=0, minute=0, second=0)
        return {"start": start, "end": now + timedelta(minutes=1)}

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def change_view(self, request, object_id, form_url="", extra_context=None):
        report = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if report is not None:
            extra.update(sv_downloads=_downloads(request, report), sv_signing=_signing(report))
        return super().change_view(request, object_id, form_url, extra)

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

    @admin.display(description=_("language"))
    def language_name(self, obj):
        return REPORT_LANGUAGES.get(obj.language, obj.language)

    @admin.display(description=_("progress"))
    def progress_bar(self, obj):
        return format_html('<progress max="100" value="{}"></progress> {}%', obj.progress, obj.progress)

    @admin.display(description=_("files"))
    def file_names(self, obj):
        return ", ".join(obj.files[fmt] for fmt in DOWNLOAD_FORMATS if obj.files.get(fmt)) or "-"

    def download_view(self, request, report_id: int):
        """One file of a finished report, for whoever may export reports; recorded as the API's
        download is (`compliance.report.download`) before the first byte leaves. A browser's request
        made for another site (Fetch Metadata) is refused: an image tag elsewhere would otherwise
        record a download the person never asked for."""
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET"])
        if not _may_download(request.user):
            raise PermissionDenied
        if request.META.get("HTTP_SEC_FETCH_SITE", "").lower() in ("cross-site", "same-site"):
            raise PermissionDenied(gettext("Download reports from the portal's own pages."))
        report = get_object_or_404(ComplianceReport, pk=report_id)
        fmt = request.GET.get("file_format", "pdf")
        back = reverse("admin:compliance_compliancereport_change", args=[report.pk])
        name = report.files.get(fmt, "") if fmt in DOWNLOAD_FORMATS else ""
        file = directory("reports") / name if name else None
        if report.state != ReportState.DONE or file is None or not file.is_file():
            self.message_user(request, gettext("That file of the report is not available."), messages.ERROR)
            return HttpResponseRedirect(back)
        services.record_download(report=report, fmt=fmt, actor=request.user, source=Source.from_request(request))
        content_type = "application/json" if fmt.endswith(".sig") else CONTENT_TYPES[fmt]
        return FileResponse(open(file, "rb"), as_attachment=True, filename=file.name, content_type=content_type)


def _may_download(user) -> bool:
    return user.has_perm("compliance.export_compliancereport")


def _downloads(request, report) -> list[dict] | None:
    """The finished report's files as links for whom may download them (None: not offered)."""
    if report.state != ReportState.DONE or not _may_download(request.user):
        return None
    url = reverse("admin:compliance_compliancereport_download", args=[report.pk])
    return [
        {"format": fmt, "name": report.files[fmt], "url": f"{url}?file_format={fmt}", "signature": fmt.endswith(".sig")}
        for fmt in DOWNLOAD_FORMATS
        if report.files.get(fmt)
    ]


def _signing(report) -> dict:
    """Which provider really signs (the audit signer: a local key file or a PKCS#11 token, named as
    the report's own signing section names it) and which wraps the data keys, each with a short
    label in the page's language."""
    from django.conf import settings

    from .reports.data import signing_section

    now = signing_section()
    if now.get("in_module"):
        signer_kind = gettext("a hardware security module (PKCS#11)")
    elif now["provider"].startswith("local key file"):
        signer_kind = gettext("a local key file on this server — not an HSM (development)")
    else:
        signer_kind = gettext("a PKCS#11 software token — not a hardware module (development)")
    if settings.KEK_PROVIDER == "pkcs11":
        kek_kind = gettext("a PKCS#11 token")
    else:
        kek_kind = gettext("a local key file on this server — not an HSM (development)")
    return {  # the provider's own words in the page's language (the path and the token's name as they are)
        "provider": translate_summary(now["provider"]),
        "signer_kind": signer_kind,
        "kek": translate_summary(now.get("kek", "")),
        "kek_kind": kek_kind,
        "key_id": report.key_id,
        "replaced": bool(report.key_id and now.get("key_id") and report.key_id != now["key_id"]),
    }


def model_compliance_section(request, model):
    """The model page's compliance section (apps.registry.admin.MODEL_PAGE_SECTIONS): the profiles
    attached to this model and to the whole installation, and, for the officer, the way to attach
    one here (the attachment form with the model chosen) or detach it."""
    if not request.user.has_perm("compliance.view_profileattachment"):
        return None
    rows = ProfileAttachment.objects.filter(Q(model=model) | Q(model__isnull=True)).order_by("profile")
    return {
        "id": "model-compliance",
        "title": _("Compliance profiles"),
        "template": "admin/compliance/model_section.html",
        "attachments": list(rows),
        "may_manage": request.user.has_perm("compliance.manage_profiles"),
        "attach_url": f"{reverse('admin:compliance_profileattachment_add')}?model={model.pk}",
    }


add_model_page_section(model_compliance_section)
