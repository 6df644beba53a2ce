"""The audit log in the admin, for auditors who do not use the API: the same questions as
GET /api/v1/audit/events/ (period, group, type, outcome, actor, request id, source address, text
in the details), answered from the same indexes, without COUNT(*) over millions of rows."""

from datetime import timedelta

from auditlog.models import LogEntry
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.core.errors import ServiceError
from apps.core.form_fields import IsoDateTimeField

from .catalogue import EVENT_TYPES
from .export import EXPORT_FORMATS, audited_export
from .filters import GROUPS, AuditEventFilter
from .models import AuditEvent, Outcome
from .selectors import events_visible_to
from .services import Source, record_event

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows: the admin shows "10001" pages' worth at most, and a
    filtered view of a ten-million-row log does not wait for a full COUNT(*)."""

    @cached_property
    def count(self):
        return self.object_list.order_by()[: COUNT_CAP + 1].count()


class PeriodFilter(admin.SimpleListFilter):
    title = _("period")
    parameter_name = "period"
    PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}

    def lookups(self, request, model_admin):
        return [
            ("1h", _("Last hour")),
            ("24h", _("Last 24 hours")),
            ("7d", _("Last 7 days")),
            ("30d", _("Last 30 days")),
        ]

    def queryset(self, request, queryset):
        span = self.PERIODS.get(self.value() or "")
        return queryset.filter(timestamp__gte=timezone.now() - span) if span else queryset


class CatalogueFilter(admin.SimpleListFilter):
    """Choices from the catalogue, not SELECT DISTINCT over the whole log."""

    def queryset(self, request, queryset):
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class GroupFilter(CatalogueFilter):
    title = _("event group")
    parameter_name = "event_group"

    def lookups(self, request, model_admin):
        return [(g, g) for g in GROUPS]


class TypeFilter(CatalogueFilter):
    title = _("event type")
    parameter_name = "event_type"

    def lookups(self, request, model_admin):
        return [(t, t) for t in sorted(EVENT_TYPES)]


class ExportForm(forms.Form):
    """The filters of GET /api/v1/audit/export/ as a form; the times are read in the person's zone."""

    since = IsoDateTimeField(label=_("from"), required=False, help_text=_("YYYY-MM-DD HH:MM:SS, in your time zone"))
    until = IsoDateTimeField(
        label=_("until (exclusive)"), required=False, help_text=_("YYYY-MM-DD HH:MM:SS, in your time zone")
    )
    actor = forms.CharField(label=_("actor (user name)"), required=False, max_length=150)
    event_group = forms.ChoiceField(label=_("event group"), required=False, choices=())
    event_type = forms.ChoiceField(label=_("event type"), required=False, choices=())
    outcome = forms.ChoiceField(label=_("outcome"), required=False, choices=())
    target_type = forms.CharField(label=_("object type"), required=False, max_length=100, help_text="registry.model")
    target_id = forms.CharField(label=_("object id"), required=False, max_length=64)
    request_id = forms.CharField(label=_("request id"), required=False, max_length=64)
    source_ip = forms.CharField(label=_("client address"), required=False, max_length=64)
    q = forms.CharField(label=_("text in the details"), required=False, max_length=200)
    file_format = forms.ChoiceField(
        label=_("file format"),
        choices=[("jsonl", _("JSON Lines (verifiable offline)")), ("csv", _("CSV (for a spreadsheet)"))],
        initial="jsonl",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        anything = [("", _("any"))]
        self.fields["event_group"].choices = anything + [(g, g) for g in GROUPS]
        self.fields["event_type"].choices = anything + [(t, t) for t in sorted(EVENT_TYPES)]
        self.fields["outcome"].choices = anything + list(Outcome.choices)

    def selection(self) -> dict[str, str]:
        """The filled filters as the API spells them (times in ISO 8601 with their offset)."""
        out = {}
        for name, value in self.cleaned_data.items():
            if name == "file_format" or value in (None, ""):
                continue
            out[name] = value.isoformat() if hasattr(value, "isoformat") else str(value).strip()
        return out


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "timestamp",
        "sequence",
        "actor_name",
        "event_type",
        "outcome",
        "error_code",
        "target_display",
        "source_ip",
        "request_id",
    ]
    list_filter = [PeriodFilter, GroupFilter, "outcome", TypeFilter]
    search_fields = ["=actor_name", "=request_id"]
    search_help_text = _(
        "An exact user name or request id; otherwise text contained in the details (pick a period first: "
        "text search reads every event of the period)."
    )
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    change_list_template = "admin/audit/auditevent/change_list.html"

    def get_urls(self):
        own = [path("export/", self.admin_site.admin_view(self.export_view), name="audit_auditevent_export")]
        return own + super().get_urls()

    def export_view(self, request):
        """A form of the export's filters; its POST downloads the export the API offers (the same
        function: the caller's visible events only, the row limit, `audit.export` recorded first)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            selection = form.selection()
            filterset = AuditEventFilter(selection, queryset=self.get_queryset(request), request=request)
            try:
                if not filterset.is_valid():
                    errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items())
                    raise ServiceError("invalid", errors)  # i18n-ok: the filter form's (Django's) messages
                return audited_export(
                    filterset.qs,
                    selection,
                    form.cleaned_data["file_format"],
                    actor=request.user,
                    source=Source.from_request(request),
                )
            except ServiceError as err:
                self.message_user(request, f"{capfirst(err.detail)} ({err.code})", messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Export the audit log"),
            "form": form,
            "key_events_only": not request.user.has_perm("audit.view_auditevent"),
            "formats": EXPORT_FORMATS,
        }
        return TemplateResponse(request, "admin/audit/auditevent/export.html", context)

    def get_queryset(self, request):
        if not self.has_view_permission(request):
            return AuditEvent.objects.all()  # every admin view checks the permission and answers 403
        return events_visible_to(request.user)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()[:200]
        if not term:
            return queryset, False
        exact = queryset.filter(actor_name=term) | queryset.filter(request_id=term)
        if exact.exists():
            return exact, False
        text = queryset.annotate(details_text=Cast("details", TextField()))
        return text.filter(details_text__icontains=term), False

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        if getattr(response, "status_code", 200) == 200:
            with transaction.atomic():
                record_event(
                    "audit.search",
                    actor=request.user,
                    source=Source.from_request(request),
                    details={"admin": True, **{k: v for k, v in request.GET.items() if k != "p"}},
                )
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Opening one event is a read of the log too (activity review counts it)."""
        response = super().change_view(request, object_id, form_url, extra_context)
        if getattr(response, "status_code", 200) == 200:
            with transaction.atomic():
                record_event(
                    "audit.search",
                    actor=request.user,
                    source=Source.from_request(request),
                    details={"admin": True, "id": str(object_id)[:20]},
                )
        return response

    def has_view_permission(self, request, obj=None):
        user = request.user
        return user.has_perm("audit.view_auditevent") or user.has_perm("audit.view_key_events")

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# django-auditlog's own LogEntry admin: every entry is bridged into the audit log above, which is
# the one place auditors read (and the one the permissions and URL table cover).
if admin.site.is_registered(LogEntry):
    admin.site.unregister(LogEntry)
