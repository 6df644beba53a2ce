from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db import transaction
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.audit.models import AuditEvent
from apps.core.admin_utils import ServiceFormAdminMixin, run_service
from apps.core.errors import ServiceError
from apps.core.source import Source
from apps.registry.models import ModelVersion
from apps.registry.selectors import add_model_page_section
from inference_backend.config import BATCHING_FIELDS

from . import services
from .models import (
    AutoscaleMetric,
    Deployment,
    DeploymentTransition,
    Desired,
    Hardware,
    InferenceServer,
    Observed,
    ReplicaSet,
    Rollout,
    RolloutKind,
    RolloutStrategy,
)


class InferenceServerForm(forms.ModelForm):
    memory_mb = forms.IntegerField(
        min_value=0,
        required=False,
        initial=0,
        label=_("memory (MiB)"),
        help_text=_("MiB the scheduler may fill with replicas; 0: not declared"),
    )

    def clean_memory_mb(self):
        return self.cleaned_data["memory_mb"] or 0

    def clean_labels(self):
        return self.cleaned_data["labels"] or {}

    class Meta:
        model = InferenceServer
        fields = [
            "name",
            "http_url",
            "grpc_url",
            "hardware",
            "accelerator_model",
            "memory_mb",
            "backends",
            "labels",
            "metrics_url",
        ]


@admin.register(InferenceServer)
class InferenceServerAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    """Servers are registered, changed and removed through the services (audited); a server that
    still holds replicas is not removed (`server_has_replicas`)."""

    list_display = [
        "name",
        "http_url",
        "hardware",
        "accelerator_model",
        "memory_mb",
        "labels",
        "backends",
        "health",  # uic (issue 17): the state as a badge, with the last error when not up
        "last_seen_at",
    ]
    list_filter = ["hardware", "state"]
    form = InferenceServerForm
    fields = InferenceServerForm.Meta.fields

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["name", "http_url", "health", "state", "failures", "last_error", "last_seen_at", "checked_at"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.fields
        return [*self.fields, "health", "state", "failures", "last_error", "last_seen_at", "checked_at"]

    def changelist_view(self, request, extra_context=None):
        # issue 17: while a server is not up the list refreshes itself (static/deployments/live.js)
        live = InferenceServer.objects.exclude(state="up").exists()
        return super().changelist_view(request, {**(extra_context or {}), **live_refresh(live)})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        live = obj is not None and obj.state != "up" and not self.has_change_permission(request, obj)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **live_refresh(live)})

    @admin.display(description=_("health"), ordering="state")
    def health(self, obj):
        return server_health(obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one server at a time, through the service
        return actions

    def save_model(self, request, obj, form, change):
        if change:
            changes = {k: form.cleaned_data[k] for k in form.changed_data if k in services.SERVER_UPDATABLE}
            if changes:
                run_service(self, request, services.update_server, server_id=obj.pk, **changes)
            return
        server = run_service(
            self,
            request,
            services.register_server,
            name=obj.name,
            http_url=obj.http_url.rstrip("/"),
            grpc_url=obj.grpc_url,
            hardware=obj.hardware,
            backends=obj.backends or None,
            accelerator_model=obj.accelerator_model,
            memory_mb=obj.memory_mb,
            labels=obj.labels or {},
            metrics_url=obj.metrics_url,
        )
        if server is not None:
            obj.pk = server.pk

    def delete_model(self, request, obj):
        """Never the ORM: a server goes only through the audited service (its refusals, its credential)."""
        services.delete_server(server_id=obj.pk, actor=request.user, source=Source.from_request(request))

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)

    def get_deleted_objects(self, objs, request):
        # The service decides (settled deployments go with the server, live replicas refuse it),
        # not the admin's walk of protected relations.
        perms_needed = set() if request.user.has_perm("deployments.delete_inferenceserver") else {"inference server"}
        return [str(obj) for obj in objs], {}, perms_needed, []

    def delete_view(self, request, object_id, extra_context=None):
        """The confirmed POST goes to the service (refusal: its message, the server stays); the
        admin's log entry is written in the same transaction, so a refused delete logs nothing."""
        obj = self.get_object(request, unquote(object_id)) if request.method == "POST" else None
        # Every POST is a confirmation to Django's own view (it deletes on any non-empty POST): every
        # POST a permitted user sends comes here, to the service.
        if obj is None or not self.has_delete_permission(request, obj):
            return super().delete_view(request, object_id, extra_context)
        opts = self.model._meta
        try:
            with transaction.atomic():
                self.log_deletions(request, InferenceServer.objects.filter(pk=obj.pk))
                services.delete_server(server_id=obj.pk, actor=request.user, source=Source.from_request(request))
        except ServiceError as err:
            self.message_user(request, f"{capfirst(err.detail)} ({err.code})", messages.ERROR)
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        self.message_user(
            request, gettext("The inference server “%(name)s” was deleted.") % {"name": obj}, messages.SUCCESS
        )
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))


class TransitionInline(admin.TabularInline):
    model = DeploymentTransition
    fields = ["at", "from_state", "to_state", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class DeploymentForm(forms.ModelForm):
    class Meta:
        model = Deployment
        fields = ["model_version", "server", *BATCHING_FIELDS]


@admin.register(Deployment)
class DeploymentAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = [
        "model_version",
        "server",
        "desired_state",
        "state_badge",
        "server_health",
        "short_error",
        "updated_at",
    ]
    list_filter = ["desired_state", "observed_state", "server"]
    list_select_related = ["model_version__model", "server"]
    search_fields = ["model__name"]
    inlines = [TransitionInline]
    actions = ["undeploy", "redeploy"]
    form = DeploymentForm

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            *DeploymentForm.Meta.fields,
            "desired_state",
            "state_badge",
            "server_health",
            "last_error",
            "requested_by",
            "created_at",
            "updated_at",
        ]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        batching = {k: data[k] for k in BATCHING_FIELDS}
        dep = run_service(
            self,
            request,
            services.request_deployment,
            model_version_id=data["model_version"].pk,
            server_id=data["server"].pk,
            batching=batching,
        )
        if dep is not None:
            obj.pk = dep.pk

    def get_inlines(self, request, obj):
        # Transitions exist only once the service has created the deployment; an empty inline
        # formset on the add form would never be saved and breaks the admin's change message.
        return self.inlines if obj is not None else []

    def save_formset(self, request, form, formset, change):
        return None

    # --- uic (issue 17): states as badges; a deployment waiting on an unreachable server says so ---
    @admin.display(description=_("observed state"), ordering="observed_state")
    def state_badge(self, obj):
        return deployment_state(obj)

    @admin.display(description=_("server health"))
    def server_health(self, obj):
        return server_health(obj.server, waiting=obj.observed_state in (Observed.PENDING, Observed.LOADING))

    # --- end uic ---

    @admin.display(description=_("error"))
    def short_error(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    def has_manage_permission(self, request):
        # Actions without permissions are offered to whoever may see the list (auditors too).
        return request.user.has_perm("deployments.change_deployment")

    @admin.action(description=_("Undeploy selected deployments"), permissions=["manage"])
    def undeploy(self, request, queryset):
        for dep in queryset:
            run_service(self, request, services.request_undeploy, deployment_id=dep.pk)
        self.message_user(request, gettext("Undeploy requested."), messages.SUCCESS)

    @admin.action(description=_("Redeploy selected deployments"), permissions=["manage"])
    def redeploy(self, request, queryset):
        for dep in queryset:
            run_service(self, request, services.request_redeploy, deployment_id=dep.pk)
        self.message_user(request, gettext("Redeploy requested."), messages.SUCCESS)

    def changelist_view(self, request, extra_context=None):
        # issue 17: while a replica loads or unloads the list refreshes itself, its retries counting up
        live = Deployment.objects.filter(observed_state__in=UNSETTLED).exists()
        return super().changelist_view(request, {**(extra_context or {}), **live_refresh(live)})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        live = obj is not None and (obj.observed_state in UNSETTLED or obj.server.state != "up")
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **live_refresh(live)})


class RolloutForm(forms.ModelForm):
    """Start a rollout: the new version, the strategy and its steps, the SLOs (docs/rollouts.md)."""

    to_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.select_related("model").order_by("model__name", "-version"),
        label=_("New version"),
        help_text=_(
            "the version the model's traffic moves to, from the version live now. Its replica set "
            "(Deployments → Replica sets) is used when it has one; else one is requested on the live version's "
            "servers."
        ),
    )
    steps_text = forms.CharField(
        label=_("Steps"),
        initial="5, 25, 100",
        help_text=_(
            "canary: the new version's share of the model's unversioned calls at each step, in %, strictly "
            "increasing and ending in 100, e.g. 5, 25, 100. Blue-green: ignored (one step of 100)."
        ),
    )
    force = forms.BooleanField(
        required=False,
        label=_("Force"),
        help_text=_(
            "roll out even though the new version's inputs or outputs differ from the live one's (breaking "
            "changes: callers may fail); audited as an alert"
        ),
    )

    class Meta:
        model = Rollout
        fields = ["strategy", "hold_seconds", "slo_max_error_rate", "slo_max_p95_ms", "min_calls"]
        labels = {
            "strategy": _("Strategy"),
            "hold_seconds": _("Hold (seconds)"),
            "slo_max_error_rate": _("Roll back above error rate"),
            "slo_max_p95_ms": _("Roll back above p95 latency (ms)"),
            "min_calls": _("Minimum calls per step"),
        }
        help_texts = {
            "strategy": _(
                "canary: traffic moves in the steps below; blue-green: all of it at once, once the new "
                "replicas are ready. Either way the new version's replicas must be ready before any traffic moves."
            ),
            "hold_seconds": _(
                "how long each step is held before the next one (or promotion after the last); a step "
                "that has not seen the minimum calls below is held longer"
            ),
            "slo_max_error_rate": _(
                "fraction of the new version's calls that may fail (5xx or unreachable) before "
                "the rollout rolls back by itself, e.g. 0.01 = 1 %; 0 = roll back on the first failed call"
            ),
            "slo_max_p95_ms": _("the new version's 95th-percentile answer time above which it rolls back"),
            "min_calls": _(
                "calls the new version must answer in a step before the step is judged and the next one "
                "taken; 0 = move on time alone"
            ),
        }

    def clean_steps_text(self):
        text = self.cleaned_data["steps_text"]
        try:
            return [int(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError as err:
            raise forms.ValidationError(_("whole percentages separated by commas, e.g. 5, 25, 100")) from err


def _admin_link(obj, text: str | None = None):
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(obj))


def _set_summary(rs: ReplicaSet) -> str:
    active = rs.deployments.filter(desired_state=Desired.ACTIVE)
    ready = active.filter(observed_state=Observed.ACTIVE).count()
    return gettext("%(version)s: %(ready)s / %(replicas)s ready, weight %(weight)s %%, %(state)s") % {
        "version": rs.model_version,
        "ready": ready,
        "replicas": rs.replicas,
        "weight": rs.traffic_weight,
        "state": rs.get_state_display(),
    }


def _redirect_to_change(modeladmin, response, obj, request):
    """After an add that the service made, show the new object's page (where its progress shows)."""
    if obj.pk is None or "_addanother" in request.POST or "_continue" in request.POST:
        return response
    opts = modeladmin.model._meta
    return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))


SLO_FIELDS = ["slo_max_error_rate", "slo_max_p95_ms", "min_calls"]


@admin.register(Rollout)
class RolloutAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__", "kind", "strategy", "state", "step", "weights", "short_reason", "created_at", "finished_at",
    ]  # fmt: skip
    list_filter = ["state", "kind", "strategy"]
    search_fields = ["model__name"]
    actions = ["promote", "rollback", "abort"]
    form = RolloutForm
    fieldsets_view = [
        (_("Now"), {"fields": ["state", "reason", "step", "weights", "figures", "replica_figures"]}),
        (_("Versions"), {"fields": ["model", "kind", "from_set_link", "to_set_link", "config_change", "sweep"]}),
        (_("Plan"), {"fields": ["strategy", "steps", "hold_seconds", *SLO_FIELDS, "forced"]}),
        (_("History"), {"fields": ["created_by", "created_at", "step_started_at", "finished_at", "trail"]}),
    ]
    readonly = [f for _, opts in fieldsets_view for f in opts["fields"]]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("model", "from_set__model_version", "to_set__model_version")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["to_version", "strategy", "steps_text", "hold_seconds", "slo_max_error_rate", "slo_max_p95_ms",
                    "min_calls", "force"]  # fmt: skip
        return self.readonly

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": self.get_fields(request)})]
        return self.fieldsets_view

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm
            kwargs["fields"] = []
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # An unfinished rollout's page reloads itself, so a person watching it sees the steps as they happen.
        rollout = self.get_object(request, unquote(object_id))
        unfinished = rollout is not None and not rollout.finished
        steer = unfinished and self.has_manage_permission(request)
        extra = {
            "refresh": settings.ADMIN_LIVE_REFRESH_SECONDS if unfinished else 0,
            "rollout_actions": [(a, self.get_action(a)[2]) for a in self.actions] if steer else [],
        }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def response_add(self, request, obj, post_url_continue=None):
        return _redirect_to_change(self, super().response_add(request, obj, post_url_continue), obj, request)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        version = data["to_version"]
        rollout = run_service(
            self,
            request,
            services.start_rollout,
            model_id=version.model_id,
            to_version_id=version.pk,
            strategy=data["strategy"],
            steps=[100] if data["strategy"] == RolloutStrategy.BLUE_GREEN else data["steps_text"],
            hold_seconds=data["hold_seconds"],
            slo_max_error_rate=data["slo_max_error_rate"],
            slo_max_p95_ms=data["slo_max_p95_ms"],
            min_calls=data["min_calls"],
            force=data["force"],
        )
        if rollout is not None:
            obj.pk = rollout.pk

    def save_related(self, request, form, formsets, change):
        return None

    @admin.display(description=_("step"))
    def step(self, obj):
        if obj.step_started_at is None:
            return "-"
        values = {"n": obj.current_step + 1, "of": len(obj.steps), "at": obj.steps[obj.current_step]}
        if obj.kind == RolloutKind.CONFIG:
            text = gettext("%(n)s/%(of)s (%(at)s replica(s) on the new batching)") % values
        else:
            text = gettext("%(n)s/%(of)s (%(at)s%%)") % values
        if not obj.finished:
            text += " " + gettext("held %(seconds)s s") % {"seconds": obj.hold_seconds}
        return text

    @admin.display(description=_("batching change (before → after)"))
    def config_change(self, obj):
        if obj.kind != RolloutKind.CONFIG:
            return "-"
        return format_html_join(
            "\n", "<div>{}: {} → {}</div>", ((k, b, a) for k, (b, a) in services.config_diff(obj).items())
        )

    @admin.display(description=_("replicas (figures since the step started)"))
    def replica_figures(self, obj):
        if obj.kind != RolloutKind.CONFIG:
            return "-"
        rows = []
        for r in services.replica_figures(obj):
            f = r["figures"]
            p95 = "-" if f["p95_ms"] is None else f"{f['p95_ms']:g} ms"
            config = gettext("new batching") if r["new_config"] else gettext("previous batching")
            config += "" if r["reloaded"] else " " + gettext("(reloading)")
            surge = " " + gettext("(surge)") if r["surge"] else ""
            rows.append((r["deployment"], gettext("on"), r["server"], surge, r["observed_state"], config,
                         _figures_text(f["calls"], f["errors"], p95), r["last_error"]))  # fmt: skip
        return format_html_join("\n", "<div>#{} {} {}{} · {} · {} · {} {}</div>", rows)

    @admin.display(description=_("weights"))
    def weights(self, obj):
        return ", ".join(f"{v}: {w}%" for v, w in sorted(services.rollout_weights(obj).items()))

    @admin.display(description=_("reason"))
    def short_reason(self, obj):
        return (obj.reason or "")[:120]

    @admin.display(description=_("from (live version's set)"))
    def from_set_link(self, obj):
        return _admin_link(obj.from_set, _set_summary(obj.from_set))

    @admin.display(description=_("to (new version's set)"))
    def to_set_link(self, obj):
        return _admin_link(obj.to_set, _set_summary(obj.to_set))

    @admin.display(description=_("figures of the new version in the current step"))
    def figures(self, obj):
        if obj.step_started_at is None or obj.finished:
            return "-"
        w = services.rollout_window(obj)
        p95 = "-" if w.p95_ms is None else f"{w.p95_ms:g} ms"
        return gettext("%(calls)s calls, %(errors)s failed (%(rate)s), p95 %(p95)s") % {
            "calls": w.calls,
            "errors": w.errors,
            "rate": f"{w.error_rate:.2%}",
            "p95": p95,
        }

    @admin.display(description=_("audit trail"))
    def trail(self, obj):
        events = AuditEvent.objects.filter(target_type="deployments.rollout", target_id=str(obj.pk)).order_by("id")
        return format_html_join(
            "\n",
            "<div>{} · {} · {} · {}</div>",
            (
                (e.timestamp, e.event_type, e.actor or gettext("system"), (e.details or {}).get("reason", ""))
                for e in events
            ),
        )

    def has_manage_permission(self, request):
        return request.user.has_perm("deployments.change_rollout")

    def _each(self, request, queryset, service, done: str):
        rollouts = list(queryset)
        if [r for r in rollouts if run_service(self, request, service, rollout_id=r.pk) is not None]:
            self.message_user(request, done, messages.SUCCESS)
        if request.POST.get("_back") and len(rollouts) == 1:  # the buttons of a rollout's page lead back to it
            return HttpResponseRedirect(reverse("admin:deployments_rollout_change", args=[rollouts[0].pk]))
        return None

    @admin.action(description=_("Promote now"), permissions=["manage"])
    def promote(self, request, queryset):
        return self._each(request, queryset, services.promote_now, gettext("Promotion requested."))

    @admin.action(description=_("Roll back now"), permissions=["manage"])
    def rollback(self, request, queryset):
        return self._each(request, queryset, services.rollback_now, gettext("Rollback requested."))

    @admin.action(description=_("Abort (traffic back on the old version, new replicas kept)"), permissions=["manage"])
    def abort(self, request, queryset):
        return self._each(request, queryset, services.abort_rollout, gettext("Abort requested."))


class ReplicaSetForm(forms.ModelForm):
    accelerator = forms.ChoiceField(
        choices=[("", _("any")), *Hardware.choices],
        required=False,
        label=_("accelerator"),
        help_text=_("the hardware every replica's server must have; any = wherever the version's backend runs"),
    )

    class Meta:
        model = ReplicaSet
        fields = ["model_version", "replicas", "labels", "accelerator", "memory_mb"]
        help_texts = {
            "model_version": _(
                "the version to serve. A new set of a model already live takes no traffic (weight 0) "
                "until a rollout moves it (Deployments → Rollouts)"
            ),
            "replicas": _("how many copies, each on a different server, placed by the scheduler (docs/fleet.md)"),
            "labels": _('labels every replica\'s server must carry, as JSON, e.g. {"zone": "phi"}; {} = any server'),
            "memory_mb": _("memory one replica needs (MiB); 0: not estimated"),
        }


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(label=_("replicas"), min_value=1, max_value=services.MAX_REPLICAS)


class AutoscaleForm(forms.Form):
    """The autoscaling settings; ranges are the service's (`invalid_autoscale`, shown as the form's error)."""

    enabled = forms.BooleanField(label=_("enabled"), required=False, initial=True)
    metric = forms.ChoiceField(label=_("metric"), choices=AutoscaleMetric.choices, initial=AutoscaleMetric.IN_FLIGHT)
    target = forms.FloatField(label=_("target"), initial=4.0, help_text=_("the metric's target per replica"))
    min_replicas = forms.IntegerField(label=_("min replicas"), initial=1)
    max_replicas = forms.IntegerField(label=_("max replicas"), initial=4)
    cooldown_seconds = forms.IntegerField(
        label=_("cooldown (seconds)"), initial=300, help_text=_("no change within this long of the last")
    )


class ConfigRolloutForm(forms.Form):
    """A batching configuration rolled out replica by replica (docs/rollouts.md); blank keeps the current."""

    max_batch_size = forms.IntegerField(label=_("max batch size"), required=False, min_value=0)
    dynamic_batching = forms.NullBooleanField(label=_("dynamic batching"), required=False)
    preferred_batch_sizes = forms.CharField(
        label=_("preferred batch sizes"), required=False, help_text=_("e.g. 4, 8 (blank: unchanged; 'none': none)")
    )
    max_queue_delay_us = forms.IntegerField(label=_("max queue delay (µs)"), required=False, min_value=0)
    instance_count = forms.IntegerField(label=_("instance count"), required=False, min_value=1)
    hold_seconds = forms.IntegerField(label=_("Hold (seconds)"), initial=60, min_value=0)
    slo_max_error_rate = forms.FloatField(label=_("Roll back above error rate"), initial=0.01, min_value=0, max_value=1)
    slo_max_p95_ms = forms.FloatField(label=_("Roll back above p95 latency (ms)"), initial=1000.0, min_value=0.001)
    min_calls = forms.IntegerField(label=_("Minimum calls per step"), initial=20, min_value=0)

    def batching(self) -> dict:
        data = self.cleaned_data
        out = {k: data[k] for k in ("max_batch_size", "dynamic_batching", "max_queue_delay_us", "instance_count")
               if data.get(k) is not None}  # fmt: skip
        text = (data.get("preferred_batch_sizes") or "").strip()
        if text:
            try:
                out["preferred_batch_sizes"] = [] if text == "none" else [int(p) for p in text.split(",") if p.strip()]
            except ValueError:
                out["preferred_batch_sizes"] = text  # the service refuses it (invalid_batching), audited
        return out


class ReplicaInline(admin.TabularInline):
    model = Deployment
    fields = ["server", "desired_state", "replica_state", "server_health", "last_error", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description=_("observed state"))
    def replica_state(self, obj):
        return deployment_state(obj)

    @admin.display(description=_("server health"))
    def server_health(self, obj):
        return server_health(obj.server, waiting=obj.observed_state in (Observed.PENDING, Observed.LOADING))


@admin.register(ReplicaSet)
class ReplicaSetAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    """Replica sets are requested, scaled and retired through the services: the scheduler places
    the replicas (docs/fleet.md); a refused placement says why for every server."""

    list_display = [
        "model_version", "ready_of_desired", "traffic_weight", "state", "placement", "autoscaling", "rollouts",
        "created_at",
    ]  # fmt: skip
    list_filter = ["state", "autoscale", "model"]
    search_fields = ["model__name"]
    actions = ["scale", "autoscale", "retire", "roll_out_batching"]
    form = ReplicaSetForm
    inlines = [ReplicaInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("model", "model_version")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "model_version",
            "ready_of_desired",
            "traffic_weight",
            "state",
            "rollouts",
            "replicas",
            "labels",
            "accelerator",
            "memory_mb",
            "min_replicas",
            "max_replicas",
            "autoscale",
            "autoscale_metric",
            "autoscale_target",
            "autoscale_cooldown_seconds",
            "scaled_at",
            "autoscale_last",
            "requested_by",
            "created_at",
            "updated_at",
        ]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) if obj is not None else super().get_fields(request, obj)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def save_formset(self, request, form, formset, change):
        return None

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_manage_permission(self, request):
        return request.user.has_perm("deployments.change_replicaset")

    def response_add(self, request, obj, post_url_continue=None):
        return _redirect_to_change(self, super().response_add(request, obj, post_url_continue), obj, request)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # issue 17: the set's page reloads itself while one of its replicas loads (ready / desired counts up)
        obj = self.get_object(request, unquote(object_id))
        live = obj is not None and obj.deployments.filter(observed_state__in=UNSETTLED).exists()
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **live_refresh(live)})

    @admin.display(description=_("ready / desired"))
    def ready_of_desired(self, obj):
        active = obj.deployments.filter(desired_state=Desired.ACTIVE)
        return f"{active.filter(observed_state=Observed.ACTIVE).count()} / {obj.replicas}"

    @admin.display(description=_("rollouts"))
    def rollouts(self, obj):
        """The rollouts that move traffic from or to this set, newest first, each linked."""
        found = Rollout.objects.filter(Q(from_set=obj) | Q(to_set=obj)).select_related(
            "model", "from_set__model_version", "to_set__model_version"
        )[:5]
        return format_html_join(", ", "{}", ((_admin_link(r, f"{r} ({r.get_state_display()})"),) for r in found)) or "-"

    @admin.display(description=_("placement"))
    def placement(self, obj):
        parts = [f"{k}={v}" for k, v in sorted((obj.labels or {}).items())]
        if obj.accelerator:
            parts.append(obj.accelerator)
        if obj.memory_mb:
            parts.append(f"{obj.memory_mb} MiB")
        return ", ".join(parts) or gettext("any")

    @admin.display(description=_("autoscaling"))
    def autoscaling(self, obj):
        if not obj.autoscale:
            return gettext("off")
        return gettext("%(metric)s %(target)s/replica, %(min)s–%(max)s, cooldown %(cooldown)s s") % {
            "metric": obj.autoscale_metric,
            "target": f"{obj.autoscale_target:g}",
            "min": obj.min_replicas,
            "max": obj.max_replicas,
            "cooldown": obj.autoscale_cooldown_seconds,
        }

    @admin.display(description=_("autoscaler's last decision"))
    def autoscale_last(self, obj):
        last = (obj.autoscale_state or {}).get("last")
        return f"{last['at']}: {last['outcome']} ({last['reason']})" if last else "-"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        rs = run_service(
            self,
            request,
            services.request_replica_set,
            model_version_id=data["model_version"].pk,
            replicas=data["replicas"],
            labels=data["labels"] or {},
            accelerator=data["accelerator"] or "",
            memory_mb=data["memory_mb"],
        )
        if rs is not None:
            obj.pk = rs.pk

    @admin.action(description=_("Scale selected replica sets"), permissions=["manage"])
    def scale(self, request, queryset):
        form = ScaleForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done = [
                rs
                for rs in queryset
                if run_service(
                    self,
                    request,
                    services.scale_replica_set,
                    replica_set_id=rs.pk,
                    replicas=form.cleaned_data["replicas"],
                )
            ]
            if done:
                self.message_user(
                    request, gettext("Scaled %(sets)s.") % {"sets": ", ".join(map(str, done))}, messages.SUCCESS
                )
            return None
        return render(
            request,
            "admin/deployments/scale_replica_sets.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Scale replica sets"),
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
            },
        )

    @admin.action(description=_("Autoscale selected replica sets"), permissions=["manage"])
    def autoscale(self, request, queryset):
        form = AutoscaleForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done = [
                rs
                for rs in queryset
                if run_service(self, request, services.configure_autoscale, replica_set_id=rs.pk, **form.cleaned_data)
            ]
            if done:
                self.message_user(
                    request,
                    gettext("Autoscaling set for %(sets)s.") % {"sets": ", ".join(map(str, done))},
                    messages.SUCCESS,
                )
            return None
        return render(
            request,
            "admin/deployments/autoscale_replica_sets.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Autoscale replica sets"),
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
            },
        )

    @admin.action(description=_("Roll out a batching configuration (replica by replica)"), permissions=["manage"])
    def roll_out_batching(self, request, queryset):
        form = ConfigRolloutForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            data = form.cleaned_data
            started = [
                r
                for rs in queryset
                if (r := run_service(self, request, services.start_config_rollout, replica_set_id=rs.pk,
                                     batching=form.batching(), hold_seconds=data["hold_seconds"],
                                     slo_max_error_rate=data["slo_max_error_rate"],
                                     slo_max_p95_ms=data["slo_max_p95_ms"], min_calls=data["min_calls"]))
            ]  # fmt: skip
            if started:
                self.message_user(
                    request,
                    gettext("Started %(rollouts)s.") % {"rollouts": ", ".join(map(str, started))},
                    messages.SUCCESS,
                )
            return None
        return render(
            request,
            "admin/deployments/config_rollout.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Roll out a batching configuration"),
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
            },
        )

    @admin.action(description=_("Retire selected replica sets"), permissions=["manage"])
    def retire(self, request, queryset):
        done = [rs for rs in queryset if run_service(self, request, services.retire_replica_set, replica_set_id=rs.pk)]
        if done:
            self.message_user(
                request, gettext("Retired %(sets)s.") % {"sets": ", ".join(map(str, done))}, messages.SUCCESS
            )


# --- The Deploy action on registry's model-version page ---------------------------------------------
# Registry knows nothing of deployments, so the action that deploys a version is this app's: it
# re-registers registry's own model-version admin (whatever class that is) with the action added.


class DeployForm(forms.Form):  # labels translated: uic (issue 17)
    server = forms.ModelChoiceField(label=_("server"), queryset=InferenceServer.objects.all())
    max_batch_size = forms.IntegerField(label=_("max batch size"), min_value=0, initial=8)
    dynamic_batching = forms.BooleanField(label=_("dynamic batching"), required=False, initial=True)
    max_queue_delay_us = forms.IntegerField(label=_("max queue delay (µs)"), min_value=0, initial=100)
    instance_count = forms.IntegerField(label=_("instance count"), min_value=1, initial=1)


class DeployVersionsMixin:
    """The *Deploy* action of a model-version admin: asks for a server and batching, then calls
    request_deployment for each selected version (each audited as `deployment.request`)."""

    def has_deploy_permission(self, request):
        # Seeing the versions is not enough: the action writes deployments.
        return request.user.has_perm("deployments.add_deployment")

    @admin.action(description=_("Deploy selected versions to a server"), permissions=["deploy"])
    def deploy(self, request, queryset):
        form = DeployForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            data = dict(form.cleaned_data)
            server = data.pop("server")
            done = [
                dep
                for dep in (
                    run_service(
                        self,
                        request,
                        services.request_deployment,
                        model_version_id=mv.pk,
                        server_id=server.pk,
                        batching=data,
                    )
                    for mv in queryset
                )
                if dep is not None
            ]
            if done:  # uic (issue 17): the message links to each deployment and its replica set
                links = format_html_join(
                    ", ",
                    '<a href="{}">{}</a>',
                    (
                        (
                            reverse("admin:deployments_deployment_change", args=[dep.pk]),
                            f"{dep.model_version} → {server}",
                        )
                        for dep in done
                    ),
                )
                sets = format_html_join(
                    ", ",
                    '<a href="{}">{}</a>',
                    (
                        (reverse("admin:deployments_replicaset_change", args=[dep.replica_set_id]), dep.replica_set)
                        for dep in done
                        if dep.replica_set_id
                    ),
                )
                text = format_html(gettext("Deployment requested: {deployments}."), deployments=links)
                if sets:
                    text = format_html("{} {}", text, format_html(gettext("Replica set: {sets}."), sets=sets))
                self.message_user(request, text, messages.SUCCESS)
            return None
        return render(
            request,
            "admin/deployments/deploy_versions.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Deploy model versions"),
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
            },
        )


# --- uic (issue 17): state badges, server health, and the model page's deployments section -------


def state_badge(state: str, label=None):
    """A state as text in a coloured badge (the colour repeats the text, never replaces it)."""
    return format_html('<span class="sv-badge sv-badge--{}">{}</span>', state or "unknown", label or state)


def server_health(server: InferenceServer, waiting: bool = False):
    """The server's state; when it is not up, how many checks in a row failed, why (its last error),
    when it was last checked and last seen: instead of a deployment that says only "loading" while its
    server does not answer."""
    badge = state_badge(server.state, server.get_state_display())
    if server.state == "up":
        return badge
    parts = [badge]
    if server.failures:
        parts.append(gettext("failed checks in a row: %(n)s") % {"n": server.failures})
    if server.last_error:
        parts.append(format_html('<span class="sv-error">{}</span>', server.last_error[:200]))
    if server.checked_at:
        parts.append(gettext("last checked %(when)s") % {"when": _when(server.checked_at)})
    seen = server.last_seen_at
    parts.append(gettext("last seen %(when)s") % {"when": _when(seen)} if seen else gettext("never seen up"))
    if waiting:
        parts.append(
            gettext("retried with backoff up to %(n)s times, then the deployment fails")
            % {"n": settings.DEPLOY_MAX_RETRIES}
        )
    return format_html_join(" · ", "{}", ((p,) for p in parts))


def _when(at) -> str:
    """A time in the reader's zone with seconds (the admin's format, docs/i18n.md)."""
    return date_format(timezone.localtime(at), "DATETIME_FORMAT")


UNSETTLED = (Observed.PENDING, Observed.LOADING, Observed.UNLOADING)


def live_refresh(on: bool) -> dict:
    """Context for a page that reloads itself while something on it is still changing (a server not
    up, a replica loading): static/deployments/live.js, which waits while the reader edits a form."""
    return {"live_refresh": settings.ADMIN_LIVE_REFRESH_SECONDS if on else 0}


def deployment_state(dep: Deployment):
    """A replica's observed state as a badge; while the reconcile retries because the server did not
    answer, which retry this is, of how many, and when the next one is due (issue 17)."""
    badge = state_badge(dep.observed_state, dep.get_observed_state_display())
    if not dep.retries or dep.observed_state not in UNSETTLED:
        return badge
    text = gettext("server not answering: retry %(n)s of %(max)s") % {
        "n": dep.retries,
        "max": settings.DEPLOY_MAX_RETRIES,
    }
    if dep.retry_at:
        seconds = max(0, round((dep.retry_at - timezone.now()).total_seconds()))
        text += ", " + gettext("next in %(s)s s") % {"s": seconds} if seconds else ", " + gettext("now")
    return format_html('{} <span class="sv-retry">{}</span>', badge, text)


def _figures_text(calls, errors, p95) -> str:
    return gettext("%(calls)s calls, %(errors)s failed, p95 %(p95)s") % {"calls": calls, "errors": errors, "p95": p95}


def model_deployments_section(request, model):
    """The model page's live versions (traffic weight), replica sets and deployments with their
    servers' health (registry's ModelAdmin shows it: apps.registry.admin.MODEL_PAGE_SECTIONS)."""
    if not request.user.has_perm("deployments.view_deployment"):
        return None
    replica_sets = list(ReplicaSet.objects.filter(model=model).exclude(state="retired").select_related("model_version"))
    deployments = list(
        Deployment.objects.filter(model=model)
        .exclude(desired_state=Desired.INACTIVE, observed_state=Observed.INACTIVE)
        .select_related("model_version", "server", "replica_set")
        .order_by("-model_version__version", "server__name")
    )
    live = {d.model_version_id for d in deployments if d.observed_state == Observed.ACTIVE}
    return {
        "id": "model-deployments",
        "title": _("Live versions and replicas"),
        "template": "admin/deployments/model_section.html",
        "replica_sets": replica_sets,
        "deployments": [
            {
                "dep": d,
                "state": deployment_state(d),
                "health": server_health(d.server, waiting=d.observed_state in (Observed.PENDING, Observed.LOADING)),
            }
            for d in deployments
        ],
        "live_versions": sorted(
            {d.model_version for d in deployments if d.model_version_id in live}, key=lambda v: v.version
        ),
    }


add_model_page_section(model_deployments_section)
# --- end uic ---


def add_deploy_action(site: admin.AdminSite, model) -> None:
    """Replace `model`'s admin on `site` by a subclass of it with the Deploy action (registry's
    admin is loaded first: its app comes before this one in INSTALLED_APPS)."""
    base = type(site.get_model_admin(model))
    name = f"Deployable{base.__name__}"
    attrs = {"__module__": __name__, "__qualname__": name, "actions": [*(base.actions or ()), "deploy"]}
    extended = type(base)(name, (DeployVersionsMixin, base), attrs)  # type(base): the admin's metaclass
    site.unregister(model)
    site.register(model, extended)


add_deploy_action(admin.site, ModelVersion)


from . import admin_tuning  # noqa: E402, F401 - the batching sweeps (docs/tuning.md)
