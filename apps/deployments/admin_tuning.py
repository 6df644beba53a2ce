"""The admin's batching sweeps (docs/tuning.md): read-only pages, each sweep with its table and its
chart (server-rendered SVG). Sweeps are requested through the API (`request_batching_sweep`)."""

from django.contrib import admin, messages
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.core.admin_utils import run_service

from . import services, sweep_chart
from .models import BatchingSweep


@admin.register(BatchingSweep)
class BatchingSweepAdmin(admin.ModelAdmin):
    list_display = ["__str__", "state", "pattern", "slo_p99_ms", "configurations", "choice", "created_at"]
    list_filter = ["state", "arrival"]
    search_fields = ["replica_set__model__name"]
    actions = ["apply"]
    readonly = [
        "replica_set", "state", "pattern", "slo_p99_ms", "grid", "repeats", "point_seconds", "warmup_seconds",
        "server", "tune_name", "choice", "reason", "error", "requested_by", "created_at", "started_at", "finished_at",
        "report_chart", "report_table",
    ]  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("replica_set__model", "replica_set__model_version")

    def get_fields(self, request, obj=None):
        return self.readonly

    def get_readonly_fields(self, request, obj=None):
        return self.readonly

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("arrival pattern"))
    def pattern(self, obj):
        values = {
            "arrival": obj.get_arrival_display(),
            "seconds": obj.window_seconds,
            "rate": f"{obj.rate_per_second:g}",
            "burstiness": f"{obj.burstiness:g}",
        }
        if obj.window_seconds:
            return gettext("%(arrival)s over %(seconds)s s: %(rate)s calls/s, burstiness %(burstiness)s") % values
        return gettext("%(arrival)s: %(rate)s calls/s, burstiness %(burstiness)s") % values

    @admin.display(description=_("configurations measured"))
    def configurations(self, obj):
        return len(obj.points)

    @admin.display(description=_("chosen"))
    def choice(self, obj):
        if not obj.chosen:
            return "-"
        return sweep_chart.config_label(obj.chosen)

    @admin.display(description=_("chart: throughput (bars, min–max whiskers) and p99 (dots) per configuration"))
    def report_chart(self, obj):
        return sweep_chart.chart(obj.points, obj.slo_p99_ms, obj.chosen) or "-"

    @admin.display(description=_("points (mean ± stdev, min–max of the repeats)"))
    def report_table(self, obj):
        return sweep_chart.table(obj.points, obj.chosen) if obj.points else "-"

    def has_manage_permission(self, request):
        return request.user.has_perm("deployments.add_rollout")

    @admin.action(
        description=_("Apply the chosen configuration (a canary rollout, replica by replica)"), permissions=["manage"]
    )
    def apply(self, request, queryset):
        """docs/rollouts.md, "Batching configuration rollouts": the defaults (hold 60 s, p95 under the
        sweep's p99 SLO); the API takes other values."""
        started = [r for sweep in queryset if (r := run_service(self, request, services.apply_batching_sweep,
                                                                 sweep_id=sweep.pk))]  # fmt: skip
        if started:
            text = gettext("Started %(rollouts)s.") % {"rollouts": ", ".join(map(str, started))}
            self.message_user(request, text, messages.SUCCESS)
