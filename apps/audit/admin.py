"""The audit log in the admin, for auditors who do not use the API: the same questions as
GET /api/v1/audit/events/ (period, group, type, outcome, actor, request id, source address, text
in the details), answered from the same indexes, without COUNT(*) over millions of rows."""

from datetime import timedelta

from auditlog.models import LogEntry
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from .catalogue import EVENT_TYPES
from .filters import GROUPS
from .models import AuditEvent
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
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]

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
    search_help_text = (
        "An exact user name or request id; otherwise text contained in the details (pick a period first: "
        "text search reads every event of the period)."
    )
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50

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
