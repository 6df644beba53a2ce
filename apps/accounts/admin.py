from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied

from apps.core.admin_utils import ServiceFormAdminMixin, run_service

from . import services
from .models import ApiToken
from .otp import second_factor_at
from .roles import PRIVILEGED
from .services.roles import roles_of


class IssueTokenForm(forms.ModelForm):
    days = forms.IntegerField(min_value=1, initial=settings.TOKEN_DEFAULT_DAYS, help_text="Days until expiry")

    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = ["name", "user", "hint", "status", "created_at", "expires_at", "last_used_at", "last_used_ip"]
    list_filter = ["user"]
    search_fields = ["name", "user__username", "hint"]
    actions = ["revoke"]
    form = IssueTokenForm

    def get_fields(self, request, obj=None):
        return (
            ["user", "name", "days"]
            if obj is None
            else ["user", "name", "hint", "status", "created_at", "expires_at", "revoked_at", "last_used_at"]
        )

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        result = run_service(
            self,
            request,
            services.issue_token,
            user=form.cleaned_data["user"],
            name=form.cleaned_data["name"],
            days=form.cleaned_data["days"],
            otp_verified_at=second_factor_at(request),  # the service decides whom and whether
        )
        if result:
            token, plaintext = result
            obj.pk = token.pk
            self.message_user(
                request,
                f"Token for {token.user}: {plaintext} — copy it now, it will not be shown again.",
                messages.WARNING,
            )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            run_service(self, request, services.revoke_token, token_id=token.pk)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")


admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class GovernedUserAdmin(UserAdmin):
    """Django's user admin with privileges read-only: roles change only through the audited role
    services, which enforce separation of duties (otherwise anyone with auth.change_user could
    tick is_superuser or add a role group to their own account)."""

    PRIVILEGES = ("is_superuser", "is_staff", "groups", "user_permissions")

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), *self.PRIVILEGES)

    def user_change_password(self, request, id, form_url=""):
        """Whoever manages users may reset an analyst's or guest's password, but not that of a
        privileged person (a way to take over their account); they change their own, or a
        superuser does."""
        target = self.get_object(request, id)
        other = target is not None and target != request.user and not request.user.is_superuser
        if other and (target.is_superuser or roles_of(target) & PRIVILEGED):
            raise PermissionDenied("a privileged user's password can only be changed by that user or a superuser")
        return super().user_change_password(request, id, form_url)
