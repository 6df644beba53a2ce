"""The admin pages of people and their credentials: users, tokens, and the third-party models
behind them (role groups, TOTP devices, django-axes' lockout records), each replaced by a governed
admin (this app loads after django.contrib.auth, django-otp and django-axes, which registered theirs).

Django, django-otp and django-axes register full read-write admins; through them a superuser could
add a role group, give someone a known TOTP key or read theirs as a QR code, or delete lockout
records, and none of it would reach the audit log. Here every one of those models is read-only;
the two writes that have a business reason (removing a second factor, lifting a lockout) are
actions that call an audited service, open to security officers (and the sealed superuser) only.
See docs/admin-site.md.
"""

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import SetPasswordMixin, UserCreationForm
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.timezone import localtime
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.core.admin_utils import ReadOnlyAdmin, ServiceFormAdminMixin, run_service

from . import services
from .models import ApiToken, EmergencyAccess, SM3OTPDevice
from .otp import second_factor_at
from .roles import AUDITOR, PRIVILEGED, ROLE_LABELS, ROLES, SECURITY_OFFICER
from .services.devices import remove_second_factor
from .services.lockout import unlock_login
from .services.policy import is_officer, is_privileged, is_service_account
from .services.roles import active_emergency_access, roles_of


class IssueTokenForm(forms.ModelForm):
    days = forms.IntegerField(
        label=_("days"), min_value=1, initial=settings.TOKEN_DEFAULT_DAYS, help_text=_("Days until expiry")
    )

    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "user",
        "hint",
        "status",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
        "last_used_ip",
    ]
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

    # The token's state in the page's language (ApiToken.status is the API's code: a Chinese list read
    # "Status: active").
    TOKEN_STATES = {"active": _("active"), "revoked": _("revoked"), "expired": _("expired")}

    @admin.display(description=_("status"))
    def status(self, obj):
        return self.TOKEN_STATES.get(obj.status, obj.status)

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
                gettext("Token for %(user)s: %(token)s — copy it now, it will not be shown again.")
                % {"user": token.user, "token": plaintext},
                messages.WARNING,
            )

    def has_revoke_permission(self, request):
        """A token manager (the security officer) revokes anyone's; the others revoke their own on
        /accounts/tokens/ (the service decides for each token either way)."""
        return request.user.has_perm("accounts.manage_tokens")

    @admin.action(description=_("Revoke selected tokens"), permissions=["revoke"])
    def revoke(self, request, queryset):
        for token in queryset:
            run_service(self, request, services.revoke_token, token_id=token.pk)
        self.message_user(request, gettext("Revoked %(count)d token(s).") % {"count": queryset.count()})


admin.site.unregister(get_user_model())

ROLE_CHOICES = [(role, ROLE_LABELS[role]) for role in ROLES]


def role_label(role: str) -> str:
    return str(ROLE_LABELS.get(role, role))


class RoleChangeForm(forms.Form):
    """The user page's Roles section (security officers): one role, given or taken away."""

    # starts on an empty choice (issue 17: it started on "admin", a privileged role one click from given)
    role = forms.ChoiceField(label=_("role"), choices=[("", _("— choose a role —")), *ROLE_CHOICES])
    op = forms.ChoiceField(choices=[("assign", "assign"), ("remove", "remove")], widget=forms.HiddenInput)


class PersonCreationForm(UserCreationForm):
    """A person's account: name, e-mail and a password (service accounts are made through the API
    and never have one). Roles come afterwards, through the role actions."""

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


class PasswordResetForm(SetPasswordMixin, forms.Form):
    password1, password2 = SetPasswordMixin.create_password_fields(label1=_("New password"))

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean(self):
        self.validate_passwords()
        self.validate_password_for_user(self.user)
        return super().clean()


def _show_enrolment_code(modeladmin, request, username: str, code: str | None) -> None:
    if code:
        modeladmin.message_user(
            request,
            gettext(
                "Enrolment code for %(user)s: %(code)s — give it to them in person; "
                "they need it to enrol their authenticator. It is shown only now."
            )
            % {"user": username, "code": code},
            messages.WARNING,
        )


def _role_action(role: str, assign: bool):
    def act(modeladmin, request, queryset):
        func = services.assign_role if assign else services.remove_role
        for user in queryset:
            done = run_service(modeladmin, request, func, user_id=user.pk, role=role)
            if done is not None:
                _show_enrolment_code(modeladmin, request, done.get_username(), getattr(done, "enrolment_code", None))

    act.__name__ = f"{'assign' if assign else 'remove'}_{role}"
    # the role in words (a Chinese page offered "授予角色：security_officer")
    act.short_description = format_lazy(
        _("Give role: {role}") if assign else _("Take away role: {role}"), role=ROLE_LABELS[role]
    )
    return act


class RoleFilter(admin.SimpleListFilter):
    """The people holding a role (its group), the role in words; Django's own filter listed the groups' codes."""

    title = _("role")
    parameter_name = "role"
    field = "groups__name"

    def lookups(self, request, model_admin):
        return ROLE_CHOICES

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() in ROLES else queryset


class GrantedRoleFilter(RoleFilter):
    """Break-glass grants by the role they give, in words."""

    field = "role"


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
    change_form_template = "admin/auth/user/sv_change_form.html"
    add_form = PersonCreationForm
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),)
    list_filter = ("is_staff", "is_superuser", "is_active", RoleFilter)
    actions = [
        "disable_accounts",
        "enable_accounts",
        *[_role_action(role, assign) for assign in (True, False) for role in ROLES],
    ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*super().get_readonly_fields(request, obj), *self.PRIVILEGES, *self.DATES, "role_summary")

    def get_fieldsets(self, request, obj=None):
        """On a change page the role groups show as roles, with where they change (issue 17: the
        bare read-only Groups field said nothing)."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return [
            (name, {**opts, "fields": tuple("role_summary" if f == "groups" else f for f in opts["fields"])})
            for name, opts in fieldsets
        ]

    @admin.display(description=_("roles"))
    def role_summary(self, obj):
        standing = sorted(roles_of(obj, include_emergency=False))
        return format_html(
            '{}<div class="help">{}</div>',
            ", ".join(role_label(r) for r in standing) or "—",
            gettext(
                "Roles change only through the audited role service: a security officer gives or takes them in "
                "the Roles section below; an administrator may also give or take analyst and guest with the "
                "actions of the user list."
            ),
        )

    def get_urls(self):
        return [
            path("<id>/roles/", self.admin_site.admin_view(self.user_roles), name="auth_user_roles"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        target = self.get_object(request, unquote(object_id))
        extra = dict(extra_context or {})
        if target is not None:
            standing = roles_of(target, include_emergency=False)
            extra.update(
                sv_roles=[(r, role_label(r)) for r in ROLES if r in standing],
                sv_emergency=[(a, role_label(a.role)) for a in active_emergency_access(target)],
                sv_may_manage_roles=request.user.has_perm("accounts.manage_roles"),
                sv_role_form=RoleChangeForm(),
                sv_privileged_roles=[role_label(r) for r in ROLES if r in PRIVILEGED],
            )
        return super().change_view(request, object_id, form_url, extra)

    def user_roles(self, request, id):
        """POST: give or take one role through assign_role / remove_role (security officers, who
        hold accounts.manage_roles; the service applies the policy of powers: separation of duties,
        no self-change, privileged roles by an officer only with a one-time enrolment code)."""
        target = self.get_object(request, unquote(id))
        if target is None:
            raise Http404(gettext("no such user"))
        if not self.has_view_permission(request, target):
            raise PermissionDenied
        back = HttpResponseRedirect(reverse("admin:auth_user_change", args=(target.pk,)))
        if request.method != "POST":
            return back
        if not request.user.has_perm("accounts.manage_roles"):
            raise PermissionDenied(gettext("only a security officer changes roles here"))
        form = RoleChangeForm(request.POST)
        if not form.is_valid():
            self.message_user(request, gettext("Choose a role to give or take away."), messages.ERROR)
            return back
        role, assign = form.cleaned_data["role"], form.cleaned_data["op"] == "assign"
        func = services.assign_role if assign else services.remove_role
        done = run_service(self, request, func, user_id=target.pk, role=role)
        if done is not None:
            text = (
                gettext("%(user)s now holds the role %(role)s.")
                if assign
                else gettext("%(user)s no longer holds the role %(role)s.")
            )
            self.message_user(
                request, text % {"user": target.get_username(), "role": role_label(role)}, messages.SUCCESS
            )
            _show_enrolment_code(self, request, done.get_username(), getattr(done, "enrolment_code", None))
        return back

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

    @admin.action(description=_("Disable selected accounts"))
    def disable_accounts(self, request, queryset):
        self._set_active(request, queryset, False)

    @admin.action(description=_("Enable selected accounts"))
    def enable_accounts(self, request, queryset):
        self._set_active(request, queryset, True)

    def _set_active(self, request, queryset, active: bool) -> None:
        done = [
            u for u in queryset if run_service(self, request, services.set_user_active, user_id=u.pk, active=active)
        ]
        if done:
            text = gettext("Enabled %(count)d account(s).") if active else gettext("Disabled %(count)d account(s).")
            self.message_user(request, text % {"count": len(done)})

    @method_decorator(sensitive_post_parameters())
    def user_change_password(self, request, id, form_url=""):
        """Reset another person's password through reset_password (analysts and guests only; the
        change is forced at their next login). Service accounts have no password; one's own is
        changed on the change-password page, which asks for the current one."""
        target = self.get_object(request, unquote(id))
        if target is None:
            raise Http404(gettext("no such user"))
        if not self.has_change_permission(request, target):
            raise PermissionDenied
        if target.pk == request.user.pk:
            return HttpResponseRedirect(reverse("admin:password_change"))
        if is_service_account(target):
            raise PermissionDenied(gettext("service accounts have no password: they authenticate with tokens only"))
        if is_privileged(target):
            raise PermissionDenied(gettext("a privileged person changes their own password (or the host resets it)"))
        form = PasswordResetForm(target, request.POST or None)
        if request.method == "POST" and form.is_valid():
            done = run_service(
                self, request, services.reset_password, user_id=target.pk, password=form.cleaned_data["password1"]
            )
            if done is not None:
                self.message_user(
                    request,
                    gettext(
                        "Password of %(user)s reset: they must change it at their next login; "
                        "their sessions ended and their tokens were revoked."
                    )
                    % {"user": target.get_username()},
                )
                return HttpResponseRedirect(reverse("admin:auth_user_change", args=(target.pk,)))
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Reset password: %(user)s") % {"user": target.get_username()},
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


# --- Role groups, second factors and lockout records: read-only, two audited actions ----------------


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
        return is_officer(request.user)  # the services check again


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

    @admin.display(description=_("members"))
    def members(self, obj):
        return ", ".join(obj.user_set.order_by("username").values_list("username", flat=True)) or "—"

    @admin.display(description=_("members"))
    def member_count(self, obj):
        return obj.user_set.count()

    @admin.display(description=_("permissions"))
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
        description=_("Remove the selected second factors (the person must enrol again)"), permissions=["officer"]
    )
    def remove_second_factor(self, request, queryset):
        for device in queryset.select_related("user"):
            done = run_service(self, request, remove_second_factor, device_id=device.pk, device_model=self.model)
            if done is None:
                continue
            text = gettext("Second factor %(device)r of %(user)s removed") % {
                "device": device.name,
                "user": device.user,
            }
            self.message_user(request, text, messages.SUCCESS)
            if done[1] is not None:
                self.message_user(
                    request,
                    gettext(
                        "Enrolment code for %(user)s: %(code)s — give it to them in person; it is shown only "
                        "this once and lets them enrol a new authenticator."
                    )
                    % {"user": device.user, "code": done[1]},
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

    @admin.action(description=_("Unlock the user names and addresses of the selected rows"), permissions=["officer"])
    def unlock(self, request, queryset):
        for row in queryset:
            done = run_service(self, request, unlock_login, username=row.username, ip_address=row.ip_address)
            if done is not None:
                cleared = sum(len(ids) for ids in done.values())
                self.message_user(
                    request,
                    gettext("Unlocked %(user)s from %(address)s: %(count)d record(s)")
                    % {"user": row.username, "address": row.ip_address, "count": cleared},
                    messages.SUCCESS,
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
_replace(SM3OTPDevice, SecondFactorAdmin)
_replace(AccessAttempt, AccessAttemptAdmin)
_replace(AccessFailureLog, AccessFailureLogAdmin)
_replace(AccessLog, AccessLogAdmin)


# --- Break-glass: the security officer grants, sees and ends emergency roles ------------------------


class BreakGlassForm(forms.ModelForm):
    role = forms.ChoiceField(label=_("role"), choices=[("", _("— choose a role —")), *ROLE_CHOICES])
    minutes = forms.IntegerField(
        label=_("minutes"),
        min_value=1,
        max_value=int(settings.BREAK_GLASS_MAX.total_seconds() // 60),
        initial=60,
        help_text=format_lazy(
            _("How long the role lasts: at most {hours} hours."),
            hours=int(settings.BREAK_GLASS_MAX.total_seconds() // 3600),
        ),
    )

    class Meta:
        model = EmergencyAccess
        fields = ["user", "role", "reason"]
        labels = {"user": _("person"), "reason": _("reason")}
        help_texts = {"reason": _("Why this person needs the role now; kept in the audit log, which alerts.")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "user" in self.fields:  # the add form (a grant is shown read-only afterwards)
            self.fields["user"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")


class ActiveNowFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", _("active now")), ("ended", _("ended"))]

    def queryset(self, request, queryset):
        from django.db.models import Q
        from django.utils import timezone

        now = timezone.now()
        active = Q(revoked_at__isnull=True, granted_at__lte=now, expires_at__gt=now)
        if self.value() == "active":
            return queryset.filter(active)
        if self.value() == "ended":
            return queryset.exclude(active)
        return queryset


@admin.register(EmergencyAccess)
class EmergencyAccessAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    """Break-glass grants: read by security officers and auditors; granted (add) and ended early
    (action) by security officers only, through grant_emergency_access / revoke_emergency_access
    (alerting, audited; never to oneself nor a service account, separation of duties counted)."""

    form = BreakGlassForm
    list_display = ["user", "role_name", "state", "reason", "granted_by", "granted_at", "expires_at", "revoked_at"]
    list_filter = [ActiveNowFilter, GrantedRoleFilter]
    search_fields = ["user__username", "reason"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "role", "minutes", "reason"]
        return ["user", "role_name", "state", "reason", "granted_by", "granted_at", "expires_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    def has_add_permission(self, request):
        return request.user.has_perm("accounts.grant_break_glass")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_break_glass_permission(self, request):
        return request.user.has_perm("accounts.grant_break_glass")

    @admin.display(description=_("role"), ordering="role")
    def role_name(self, obj):
        return role_label(obj.role)

    @admin.display(description=_("state"))
    def state(self, obj):
        from django.utils import timezone

        if obj.revoked_at is not None:
            return gettext("ended early")
        if obj.expires_at <= timezone.now():
            return gettext("expired")
        return gettext("active")

    def save_model(self, request, obj, form, change):
        access = run_service(
            self,
            request,
            services.grant_emergency_access,
            user_id=form.cleaned_data["user"].pk,
            role=form.cleaned_data["role"],
            minutes=form.cleaned_data["minutes"],
            reason=form.cleaned_data["reason"],
        )
        if access is None:
            return
        obj.pk = access.pk
        self.message_user(
            request,
            gettext("%(user)s holds the role %(role)s until %(until)s (break-glass).")
            % {
                "user": access.user.get_username(),
                "role": role_label(access.role),
                "until": date_format(localtime(access.expires_at), "DATETIME_FORMAT"),
            },
            messages.WARNING,
        )
        _show_enrolment_code(self, request, access.user.get_username(), access.enrolment_code)

    @admin.action(description=_("End the selected break-glass grants now"), permissions=["break_glass"])
    def revoke(self, request, queryset):
        done = [a for a in queryset if run_service(self, request, services.revoke_emergency_access, access_id=a.pk)]
        if done:
            text = gettext("Ended %(count)d break-glass grant(s).") % {"count": len(done)}
            self.message_user(request, text, messages.SUCCESS)
