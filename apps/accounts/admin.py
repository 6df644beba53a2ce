from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import SetPasswordMixin, UserCreationForm
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from apps.core.admin_utils import ServiceFormAdminMixin, run_service

from . import services
from .models import ApiToken
from .otp import second_factor_at
from .roles import ROLES
from .services.policy import is_privileged, is_service_account


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


class PersonCreationForm(UserCreationForm):
    """A person's account: name, e-mail and a password (service accounts are made through the API
    and never have one). Roles come afterwards, through the role actions."""

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


class PasswordResetForm(SetPasswordMixin, forms.Form):
    password1, password2 = SetPasswordMixin.create_password_fields(label1="New password")

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean(self):
        self.validate_passwords()
        self.validate_password_for_user(self.user)
        return super().clean()


def _role_action(role: str, assign: bool):
    def act(modeladmin, request, queryset):
        func = services.assign_role if assign else services.remove_role
        for user in queryset:
            done = run_service(modeladmin, request, func, user_id=user.pk, role=role)
            if done is not None and getattr(done, "enrolment_code", None):
                modeladmin.message_user(
                    request,
                    f"Enrolment code for {done.get_username()}: {done.enrolment_code} — give it to them in person; "
                    "they need it to enrol their authenticator. It is shown only now.",
                    messages.WARNING,
                )

    act.__name__ = f"{'assign' if assign else 'remove'}_{role}"
    act.short_description = f"{'Give' if assign else 'Take away'} role: {role}"
    return act


@admin.register(get_user_model())
class GovernedUserAdmin(ServiceFormAdminMixin, UserAdmin):
    """Django's user admin, every write through the audited services (apps.accounts.services):
    add calls create_user; a change calls update_user (name, e-mail, active; before and after in
    the event); the password page calls reset_password; roles change through actions calling
    assign_role / remove_role (which enforce the policy of powers and separation of duties);
    privileges and dates are read-only; nobody deletes a user (disable instead: the audit trail
    keeps pointing at it)."""

    PRIVILEGES = ("is_superuser", "is_staff", "groups", "user_permissions")
    DATES = ("last_login", "date_joined")
    add_form = PersonCreationForm
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),)
    actions = [
        "disable_accounts",
        "enable_accounts",
        *[_role_action(role, assign) for assign in (True, False) for role in ROLES],
    ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*super().get_readonly_fields(request, obj), *self.PRIVILEGES, *self.DATES)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if not change:
            created = run_service(
                self,
                request,
                services.create_user,
                username=form.cleaned_data["username"],
                email=form.cleaned_data.get("email", ""),
                password=form.cleaned_data["password1"],
            )
            obj.pk = created.pk if created is not None else None
            return
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in services.users.EDITABLE}
        if changes and run_service(self, request, services.update_user, user_id=obj.pk, changes=changes) is None:
            request.sv_refused = True

    def save_related(self, request, form, formsets, change):
        pass  # the only relations (groups, permissions) are read-only here: roles change through actions

    def log_change(self, request, obj, message):
        if not getattr(request, "sv_refused", False):
            return super().log_change(request, obj, message)
        return None

    def response_change(self, request, obj):
        if getattr(request, "sv_refused", False):
            return HttpResponseRedirect(request.path)  # the service said why, in a message
        return super().response_change(request, obj)

    @admin.action(description="Disable selected accounts")
    def disable_accounts(self, request, queryset):
        self._set_active(request, queryset, False)

    @admin.action(description="Enable selected accounts")
    def enable_accounts(self, request, queryset):
        self._set_active(request, queryset, True)

    def _set_active(self, request, queryset, active: bool) -> None:
        done = [
            u for u in queryset if run_service(self, request, services.set_user_active, user_id=u.pk, active=active)
        ]
        if done:
            self.message_user(request, f"{'Enabled' if active else 'Disabled'} {len(done)} account(s).")

    @method_decorator(sensitive_post_parameters())
    def user_change_password(self, request, id, form_url=""):
        """Reset another person's password through reset_password (analysts and guests only; the
        change is forced at their next login). Service accounts have no password; one's own is
        changed on the change-password page, which asks for the current one."""
        target = self.get_object(request, unquote(id))
        if target is None:
            raise Http404("no such user")
        if not self.has_change_permission(request, target):
            raise PermissionDenied
        if target.pk == request.user.pk:
            return HttpResponseRedirect(reverse("admin:password_change"))
        if is_service_account(target):
            raise PermissionDenied("service accounts have no password: they authenticate with tokens only")
        if is_privileged(target):
            raise PermissionDenied("a privileged person changes their own password (or the host resets it)")
        form = PasswordResetForm(target, request.POST or None)
        if request.method == "POST" and form.is_valid():
            done = run_service(
                self, request, services.reset_password, user_id=target.pk, password=form.cleaned_data["password1"]
            )
            if done is not None:
                self.message_user(
                    request,
                    f"Password of {target.get_username()} reset: they must change it at their next login; "
                    "their sessions ended and their tokens were revoked.",
                )
                return HttpResponseRedirect(reverse("admin:auth_user_change", args=(target.pk,)))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Reset password: {target.get_username()}",
            "adminForm": admin.helpers.AdminForm(form, [(None, {"fields": list(form.base_fields)})], {}),
            "form_url": form_url,
            "form": form,
            "is_popup": False,
            "add": True,
            "change": False,
            "has_delete_permission": False,
            "has_change_permission": True,
            "has_absolute_url": False,
            "opts": self.opts,
            "original": target,
            "save_as": False,
            "show_save": True,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/auth/user/change_password.html", context)
