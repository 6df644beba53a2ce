from auditlog.models import LogEntry
from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "timestamp",
        "actor_name",
        "event_type",
        "outcome",
        "error_code",
        "target_display",
        "source_ip",
        "request_id",
    ]
    list_filter = ["event_group", "outcome", "event_type"]
    search_fields = ["actor_name", "target_display", "request_id", "error_code"]
    date_hierarchy = "timestamp"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

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
