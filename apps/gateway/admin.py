"""Chat-model governance in the admin site: read-only (changes go through the audited API, whose
services also tell the data plane to rebuild its policy snapshot). Retained exchanges show their
metadata only; their content is read through the audited API call."""

import threading
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.accounts.models import ApiToken
from apps.accounts.roles import ROLE_LABELS
from apps.core.admin_utils import ReadOnlyAdmin, ServiceFormAdminMixin, run_service
from apps.core.errors import ServiceError
from apps.core.source import Source

from . import monitoring, services
from .models import ChatPolicy, LLMUsage, Quota, RetainedExchange
from .selectors import usage_summary, usage_visible_to
from .services import QUOTA_LIMITS


class _NoAdd(ReadOnlyAdmin):
    def has_add_permission(self, request):
        return False


@admin.register(ChatPolicy)
class ChatPolicyAdmin(_NoAdd):
    list_display = ["model", "max_tokens_per_call", "system_prompt_mode", "retention", "retention_days", "updated_at"]
    list_filter = ["retention"]
    fields = [
        "model",
        "max_tokens_per_call",
        "allowed_sampling",
        "system_prompt",
        "system_prompt_mode",
        "retention",
        "retention_days",
        "updated_by",
        "updated_at",
    ]
    readonly_fields = fields


# --- Quotas (issue 17): set, changed and removed from the admin through the audited services ----------


class QuotaForm(forms.ModelForm):
    """Whose quota (a person, a group — its members together — or one API token), on which model (blank:
    all models together), and its limits (blank: unlimited; at least one). `set_quota` does the write."""

    class Meta:
        model = Quota
        fields = ["scope", "user", "group", "token", "model", *QUOTA_LIMITS]
        labels = {
            "scope": _("applies to"),
            "user": _("person"),
            "group": _("group"),
            "token": _("API token"),
            "model": _("model"),
            "tokens_per_day": _("tokens per day"),
            "tokens_per_month": _("tokens per month"),
            "requests_per_minute": _("requests per minute"),
            "tokens_per_minute": _("tokens per minute"),
        }
        help_texts = {
            "model": _("blank: all models together"),
            "tokens_per_day": _("prompt and completion tokens per UTC day; blank: unlimited"),
            "tokens_per_month": _("per UTC calendar month; blank: unlimited"),
            "requests_per_minute": _("calls per UTC clock minute; blank: unlimited"),
            "tokens_per_minute": _("tokens per UTC clock minute; blank: unlimited"),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "group" in self.fields:  # a role's group in words (a Chinese form listed "admin, security_officer…")
            self.fields["group"].label_from_instance = lambda group: str(ROLE_LABELS.get(group.name, group.name))

    def clean(self):
        data = super().clean()
        if self.instance.pk is None:
            scope = data.get("scope")
            subject = {"user": "user", "group": "group", "token": "token"}.get(scope)
            if subject and not data.get(subject):
                self.add_error(subject, _("Choose whose quota this is."))
            for other in ("user", "group", "token"):
                if other != subject:
                    data[other] = None
        if not any(data.get(name) is not None for name in QUOTA_LIMITS):
            raise forms.ValidationError(_("Set at least one limit (a quota with none would be unlimited)."))
        return data

    def _post_clean(self):
        """No model validation here: set_quota checks and writes (it replaces the subject's quota on
        that model rather than refusing it as a duplicate), and its refusals come back as messages."""


_use = threading.local()


@admin.register(Quota)
class QuotaAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    """Admin and security officer (`gateway.manage_quota`) set a quota (add), change its limits and
    remove it (an action), each through `set_quota` / `delete_quota` (audited `llm.quota.set`,
    `llm.quota.delete`); everyone who reads quotas sees how much of each is used this day and month,
    and which are near exhaustion (>= SOVEREIGN_MONITOR_QUOTA_RATIO, the alert's threshold)."""

    form = QuotaForm
    list_display = [
        "scope",
        "subject",
        "model",
        "tokens_per_day",
        "tokens_per_month",
        "requests_per_minute",
        "tokens_per_minute",
        "used_today",
        "used_this_month",
    ]
    list_filter = ["scope"]
    list_select_related = ["user", "group", "token__user", "model"]
    actions = ["remove"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return QuotaForm.Meta.fields
        return ["scope", "subject", "model", *QUOTA_LIMITS, "used_today", "used_this_month", "updated_by", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        fixed = ["scope", "subject", "model", "used_today", "used_this_month", "updated_by", "updated_at"]
        return fixed if self.has_change_permission(request, obj) else [*fixed, *QUOTA_LIMITS]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "token" and field is not None:
            # the tokens of others are listed only to who may see them (not the admin role: its API takes an
            # id); never their hint, only name and owner; revoked ones have nothing left to limit
            may_see = request.user.has_perm("accounts.view_apitoken")
            tokens = ApiToken.objects.filter(revoked_at__isnull=True).select_related("user")
            field.queryset = tokens if may_see else tokens.filter(user=request.user)
            field.label_from_instance = lambda t: f"{t.name} ({t.user})"
        return field

    def has_add_permission(self, request):
        return request.user.has_perm("gateway.manage_quota")

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("gateway.manage_quota")

    def has_delete_permission(self, request, obj=None):
        return False  # removed through the action (delete_quota), never the ORM

    def has_manage_permission(self, request):
        return request.user.has_perm("gateway.manage_quota")

    def changelist_view(self, request, extra_context=None):
        _use.rows = _quota_use()
        try:
            extra = {"quotas_near_exhaustion": _near_exhaustion()}
            return super().changelist_view(request, {**(extra_context or {}), **extra})
        finally:
            _use.rows = None

    def change_view(self, request, object_id, form_url="", extra_context=None):
        _use.rows = _quota_use()
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render"):
                response.render()  # now, while the viewer is known (a TemplateResponse renders later)
            return response
        finally:
            _use.rows = None

    def save_model(self, request, obj, form, change):
        """Through set_quota, never obj.save(); a change that changed nothing writes nothing."""
        if change and not form.changed_data:
            return
        data = form.cleaned_data
        scope = obj.scope if change else data["scope"]
        subject = obj.subject_id if change else data[scope].pk
        quota = run_service(
            self,
            request,
            services.set_quota,
            scope=scope,
            subject_id=subject,
            model_id=obj.model_id if change else (data["model"].pk if data.get("model") else None),
            **{name: data.get(name) for name in QUOTA_LIMITS},
        )
        if quota is None:
            request._sv_refused = True
        else:
            obj.pk = quota.pk

    def save_related(self, request, form, formsets, change):
        return None

    def log_change(self, request, obj, message):
        return None if getattr(request, "_sv_refused", False) else super().log_change(request, obj, message)

    def response_change(self, request, obj):
        if getattr(request, "_sv_refused", False):
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    @admin.display(description=_("subject"))
    def subject(self, obj):
        if obj.user_id:
            return gettext("person %(name)s") % {"name": obj.user}
        if obj.group_id:
            return gettext("group %(name)s") % {"name": ROLE_LABELS.get(obj.group.name, obj.group.name)}
        return gettext("token %(name)s of %(owner)s") % {"name": obj.token.name, "owner": obj.token.user}

    @admin.display(description=_("used today"))
    def used_today(self, obj):
        return _use_badge(obj, "day")

    @admin.display(description=_("used this month"))
    def used_this_month(self, obj):
        return _use_badge(obj, "month")

    @admin.action(description=_("Remove selected quotas"), permissions=["manage"])
    def remove(self, request, queryset):
        done = 0
        for quota in queryset:
            try:
                services.delete_quota(quota_id=quota.pk, actor=request.user, source=Source.from_request(request))
                done += 1
            except ServiceError as err:
                self.message_user(request, f"{capfirst(err.detail)} ({err.code})", messages.ERROR)
        if done:
            self.message_user(request, gettext("Quotas removed: %(n)s.") % {"n": done}, messages.SUCCESS)


def _quota_use() -> dict:
    """(quota id, window) -> QuotaUse of the current UTC day and month (Redis; {} without it)."""
    try:
        return {(u.quota_id, u.window): u for u in monitoring.quota_use()}
    except Exception:  # noqa: BLE001 - the page shows the quotas even when the counters cannot be read
        return {}


def _use_badge(quota, window: str):
    rows = getattr(_use, "rows", None)
    if rows is None:
        rows = _quota_use()
    use = rows.get((quota.pk, window))
    if use is None:
        return "-"
    ratio = use.used / use.limit if use.limit else 0
    text = f"{use.used} / {use.limit} ({ratio:.0%})"
    if ratio >= 1:
        return format_html('{} <span class="sv-badge sv-badge--failed">{}</span>', text, gettext("exhausted"))
    if ratio >= settings.MONITOR_QUOTA_RATIO:
        return format_html('{} <span class="sv-badge sv-badge--down">{}</span>', text, gettext("near exhaustion"))
    return text


class PeriodFilter(admin.SimpleListFilter):
    """The last hour, day, week or 30 days (the list's date hierarchy drills into calendar days too)."""

    title = _("period")
    parameter_name = "period"
    PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}

    def lookups(self, request, model_admin):
        return [
            ("1h", _("last hour")),
            ("24h", _("last 24 hours")),
            ("7d", _("last 7 days")),
            ("30d", _("last 30 days")),
        ]

    def queryset(self, request, queryset):
        span = self.PERIODS.get(self.value() or "")
        return queryset.filter(at__gte=timezone.now() - span) if span else queryset


@admin.register(LLMUsage)
class LLMUsageAdmin(_NoAdd):
    """Every chat call (issue 13), and above the list (issue 17) the calls and tokens of the rows the list
    shows — its period, status, model and search — summed per model, per person and per API token."""

    list_display = [
        "at",
        "username",
        "model_name",
        "model_version",
        "prompt_tokens",
        "completion_tokens",
        "ttft",
        "duration",
        "finish_reason",
        "status",
    ]
    list_filter = [PeriodFilter, "status", "finish_reason", "model_name"]
    search_fields = ["username", "request_id"]
    date_hierarchy = "at"
    fields = ["request_id", "token_link", *list_display]
    readonly_fields = fields

    # times in whole milliseconds: the raw floats (802.2116990005088) pushed the list past the page's width
    @admin.display(description=_("time to first token (ms)"), ordering="ttft_ms")
    def ttft(self, obj):
        return "—" if obj.ttft_ms is None else f"{obj.ttft_ms:,.0f}"

    @admin.display(description=_("duration (ms)"), ordering="duration_ms")
    def duration(self, obj):
        return f"{obj.duration_ms:,.0f}"

    @admin.display(description=_("API token"))
    def token_link(self, obj):
        """The token, linked to its page only for who may open it: the admin role may not (its page
        answered that link with 403), the security officer and the auditor may."""
        if obj.token is None:
            return "—"
        token_admin = self.admin_site._registry.get(ApiToken)
        request = getattr(_viewer, "request", None)
        if token_admin is not None and request is not None and token_admin.has_view_permission(request, obj.token):
            url = reverse("admin:accounts_apitoken_change", args=[obj.token.pk])
            return format_html('<a href="{}">{}</a>', url, self.api_token(obj))
        return self.api_token(obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        _viewer.request = request  # per thread: the admin instance is shared by every request
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render"):
                response.render()  # now, while the viewer is known (a TemplateResponse renders later)
            return response
        finally:
            _viewer.request = None

    def get_queryset(self, request):
        return usage_visible_to(request.user)

    @admin.display(description=_("API token"))
    def api_token(self, obj):
        """The call's token by name and owner, never its hint (the admin role reads usage, not the token
        inventory: the quota form names tokens the same way)."""
        return f"{obj.token.name} ({obj.token.user})" if obj.token_id else "-"

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", {}).get("cl") if hasattr(response, "context_data") else None
        if cl is not None:
            qs = cl.queryset.order_by()
            response.context_data["usage_summaries"] = [
                (key, title, usage_summary(qs, group_by=key)[:SUMMARY_ROWS])
                for key, title in (("model", _("per model")), ("user", _("per person")), ("token", _("per API token")))
            ]
            response.context_data["quotas_near_exhaustion"] = _near_exhaustion() if _may_see_quotas(request) else []
        return response


SUMMARY_ROWS = 50
_viewer = threading.local()


def _may_see_quotas(request) -> bool:
    return request.user.has_perm("gateway.view_quota")


def _near_exhaustion() -> list[dict]:
    """The quotas used at or above the alert's ratio this day or month, with their page's link."""
    rows = getattr(_use, "rows", None) or _quota_use()
    out = []
    for use in rows.values():
        if use.limit and use.used / use.limit >= settings.MONITOR_QUOTA_RATIO:
            out.append({"use": use, "ratio": f"{use.used / use.limit:.0%}",
                        "url": reverse("admin:gateway_quota_change", args=[use.quota_id])})  # fmt: skip
    return sorted(out, key=lambda r: -r["use"].used / r["use"].limit)


@admin.register(RetainedExchange)
class RetainedExchangeAdmin(_NoAdd):
    list_display = ["at", "request_id", "model_name", "username", "retention", "expires_at", "deleted_at"]
    list_filter = ["retention", "model_name"]
    search_fields = ["request_id", "username"]
    fields = [*list_display, "digest", "deleted_by", "deletion_reason"]  # never the ciphertext
    readonly_fields = fields


from . import model_usage  # noqa: E402, F401 - uic (issue 17): the usage section of the model page
