"""Search over the audit log: the filters of GET /api/v1/audit/events/, the export and the admin.

Malformed values are refused with 400 (`invalid`, naming the field), and so are parameters that
are not filters (`unknown_filter`): a typo in an auditor's query must not silently widen it.
"""

from __future__ import annotations

import ipaddress

import django_filters
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.utils.translation import gettext as _

from .catalogue import EVENT_TYPES, group_of
from .models import AuditEvent, Outcome

GROUPS = sorted({group_of(t) for t in EVENT_TYPES})
# Parameters the list and export views accept besides the filters.
CONTROL_PARAMS = frozenset({"cursor", "page_size", "ordering", "format"})
MAX_TEXT = 200


class AuditEventFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(
        field_name="timestamp", lookup_expr="gte", label="From this time (ISO 8601, inclusive)"
    )
    until = django_filters.IsoDateTimeFilter(
        field_name="timestamp", lookup_expr="lt", label="Before this time (ISO 8601, exclusive)"
    )
    actor = django_filters.CharFilter(field_name="actor_name", label="User name at the time of the event")
    actor_id = django_filters.NumberFilter(field_name="actor_id")
    token_id = django_filters.NumberFilter(field_name="token_id")
    event_type = django_filters.ChoiceFilter(choices=[(t, t) for t in sorted(EVENT_TYPES)])
    event_group = django_filters.ChoiceFilter(choices=[(g, g) for g in GROUPS])
    target_type = django_filters.CharFilter()
    target_id = django_filters.CharFilter()
    outcome = django_filters.ChoiceFilter(choices=Outcome.choices)
    error_code = django_filters.CharFilter()
    request_id = django_filters.CharFilter()
    source_ip = django_filters.CharFilter(method="filter_source_ip", label="Client address (IPv4 or IPv6)")
    q = django_filters.CharFilter(method="filter_text", label="Text contained in the details or the target's name")
    # Older spellings, kept for existing integrations.
    actor_name = django_filters.CharFilter(field_name="actor_name")
    timestamp__gte = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    timestamp__lt = django_filters.IsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_source_ip(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(source_ip=str(ipaddress.ip_address(value.strip())))  # validated in is_valid

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # details::text, case-insensitively; bounded by the other filters (see docs/audit.md, Search).
        return queryset.annotate(details_text=Cast("details", TextField())).filter(details_text__icontains=value)

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        data = self.form.cleaned_data
        if data.get("source_ip"):
            try:
                ipaddress.ip_address(data["source_ip"].strip())
            except ValueError:
                self.form.add_error(
                    "source_ip",
                    _("%(value)s is not an IPv4 or IPv6 address") % {"value": repr(data["source_ip"])},
                )
                return False
        if len(data.get("q") or "") > MAX_TEXT:
            self.form.add_error("q", _("text search is limited to %(max)s characters") % {"max": MAX_TEXT})
            return False
        since, until = data.get("since") or data.get("timestamp__gte"), data.get("until") or data.get("timestamp__lt")
        if since and until and since >= until:
            self.form.add_error("until", _("must be later than since"))
            return False
        return True


def unknown_params(params) -> list[str]:
    allowed = set(AuditEventFilter.base_filters) | CONTROL_PARAMS
    return sorted(set(params) - allowed)
