"""The admin pages of third-party models, replaced by governed ones (this app loads after them).

Django, django-otp and django-axes register full read-write admins; through them a superuser could
add a role group, give someone a known TOTP key or read theirs as a QR code, or delete lockout
records, and none of it would reach the audit log. Here every one of those models is read-only;
the two writes that have a business reason (removing a second factor, lifting a lockout) are
actions that call an audited service, open to security officers only. See docs/admin-site.md.
"""

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin, messages
from django.contrib.auth.models import Group
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import AUDITOR, SECURITY_OFFICER
from apps.accounts.services.devices import remove_second_factor
from apps.accounts.services.lockout import unlock_login
from apps.accounts.services.roles import roles_of

from .admin_utils import ReadOnlyAdmin, run_service

# Bulk deletes would bypass the services (and their audit events) for any admin that ever allows
# deleting; no governed model is deleted from the admin, so the action is not offered anywhere.
admin.site.disable_action("delete_selected")


def holds(request, *roles: str) -> bool:
    return bool(roles_of(request.user) & set(roles))


class SecurityRecordAdmin(ReadOnlyAdmin):
    """Security records: read by security officers and auditors (and the superuser), written by nobody."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser or holds(request, SECURITY_OFFICER, AUDITOR)

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_officer_permission(self, request):
        return holds(request, SECURITY_OFFICER)


def _replace(model, admin_class) -> None:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, admin_class)


class RoleGroupAdmin(ReadOnlyAdmin):
    """Roles are groups; membership changes only through the role services (assign_role,
    remove_role, break-glass), which enforce separation of duties and record the change, and the
    permissions of each role come from apps/accounts/roles.py (sync_roles)."""

    fields = ["name", "members", "permission_list"]
    readonly_fields = fields
    list_display = ["name", "member_count"]
    search_fields = ["name"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="members")
    def members(self, obj):
        return ", ".join(obj.user_set.order_by("username").values_list("username", flat=True)) or "—"

    @admin.display(description="members")
    def member_count(self, obj):
        return obj.user_set.count()

    @admin.display(description="permissions")
    def permission_list(self, obj):
        perms = obj.permissions.select_related("content_type").order_by("content_type__app_label", "codename")
        return ", ".join(f"{p.content_type.app_label}.{p.codename}" for p in perms) or "—"


class SecondFactorAdmin(SecurityRecordAdmin):
    """Who has which TOTP device, never its key: no key field, no QR code or configuration URL
    (django-otp's admin shows both, which would let whoever reads it pass someone's second factor)."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username", "name"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    readonly_fields = fields
    actions = ["remove_second_factor"]

    @admin.action(
        description="Remove the selected second factors (the person must enrol again)", permissions=["officer"]
    )
    def remove_second_factor(self, request, queryset):
        for device in queryset.select_related("user"):
            done = run_service(self, request, remove_second_factor, device_id=device.pk)
            if done is None:
                continue
            self.message_user(request, f"Second factor {device.name!r} of {device.user} removed", messages.SUCCESS)
            if done[1] is not None:
                self.message_user(
                    request,
                    f"Enrolment code for {device.user}: {done[1]} — give it to them in person; it is shown only "
                    "this once and lets them enrol a new authenticator.",
                    messages.WARNING,
                )


class LockoutAdmin(SecurityRecordAdmin):
    """django-axes' records of failed logins, read-only; "unlock" lifts a lockout through the service."""

    list_display = ["attempt_time", "username", "ip_address", "user_agent", "path_info"]
    list_filter = ["attempt_time"]
    search_fields = ["username", "ip_address"]
    actions = ["unlock"]

    def get_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name not in ("get_data", "post_data")]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    @admin.action(description="Unlock the user names and addresses of the selected rows", permissions=["officer"])
    def unlock(self, request, queryset):
        for row in queryset:
            done = run_service(self, request, unlock_login, username=row.username, ip_address=row.ip_address)
            if done is not None:
                cleared = sum(len(ids) for ids in done.values())
                self.message_user(
                    request, f"Unlocked {row.username} from {row.ip_address}: {cleared} record(s)", messages.SUCCESS
                )


class AccessAttemptAdmin(LockoutAdmin):
    list_display = [*LockoutAdmin.list_display, "failures_since_start"]


class AccessFailureLogAdmin(LockoutAdmin):
    list_display = [*LockoutAdmin.list_display, "locked_out"]
    list_filter = ["attempt_time", "locked_out"]


class AccessLogAdmin(SecurityRecordAdmin):
    list_display = ["attempt_time", "logout_time", "username", "ip_address", "user_agent", "path_info"]
    list_filter = ["attempt_time"]
    search_fields = ["username", "ip_address"]


_replace(Group, RoleGroupAdmin)
_replace(TOTPDevice, SecondFactorAdmin)
_replace(AccessAttempt, AccessAttemptAdmin)
_replace(AccessFailureLog, AccessFailureLogAdmin)
_replace(AccessLog, AccessLogAdmin)
