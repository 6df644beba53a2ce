from django import forms
from django.contrib import admin, messages
from django.shortcuts import render

from apps.core.admin_utils import ServiceFormAdminMixin, run_service
from apps.registry.models import ModelVersion
from inference_backend.config import BATCHING_FIELDS

from . import services
from .models import Deployment, DeploymentTransition, InferenceServer


@admin.register(InferenceServer)
class InferenceServerAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = ["name", "http_url", "grpc_url", "hardware", "backends", "state", "last_seen_at"]
    list_filter = ["hardware", "state"]
    fields = ["name", "http_url", "grpc_url", "hardware", "backends"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        server = run_service(
            self,
            request,
            services.register_server,
            name=obj.name,
            http_url=obj.http_url.rstrip("/"),
            grpc_url=obj.grpc_url,
            hardware=obj.hardware,
            backends=obj.backends or None,
        )
        if server is not None:
            obj.pk = server.pk


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
    list_display = ["model_version", "server", "desired_state", "observed_state", "short_error", "updated_at"]
    list_filter = ["desired_state", "observed_state", "server"]
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
            "observed_state",
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

    @admin.display(description="error")
    def short_error(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    def has_manage_permission(self, request):
        # Actions without permissions are offered to whoever may see the list (auditors too).
        return request.user.has_perm("deployments.change_deployment")

    @admin.action(description="Undeploy selected deployments", permissions=["manage"])
    def undeploy(self, request, queryset):
        for dep in queryset:
            run_service(self, request, services.request_undeploy, deployment_id=dep.pk)
        self.message_user(request, "Undeploy requested.", messages.SUCCESS)

    @admin.action(description="Redeploy selected deployments", permissions=["manage"])
    def redeploy(self, request, queryset):
        for dep in queryset:
            run_service(self, request, services.request_redeploy, deployment_id=dep.pk)
        self.message_user(request, "Redeploy requested.", messages.SUCCESS)


# --- The Deploy action on registry's model-version page ---------------------------------------------
# Registry knows nothing of deployments, so the action that deploys a version is this app's: it
# re-registers registry's own model-version admin (whatever class that is) with the action added.


class DeployForm(forms.Form):
    server = forms.ModelChoiceField(queryset=InferenceServer.objects.all())
    max_batch_size = forms.IntegerField(min_value=0, initial=8)
    dynamic_batching = forms.BooleanField(required=False, initial=True)
    max_queue_delay_us = forms.IntegerField(min_value=0, initial=100)
    instance_count = forms.IntegerField(min_value=1, initial=1)


class DeployVersionsMixin:
    """The *Deploy* action of a model-version admin: asks for a server and batching, then calls
    request_deployment for each selected version (each audited as `deployment.request`)."""

    def has_deploy_permission(self, request):
        # Seeing the versions is not enough: the action writes deployments.
        return request.user.has_perm("deployments.add_deployment")

    @admin.action(description="Deploy selected versions to a server", permissions=["deploy"])
    def deploy(self, request, queryset):
        form = DeployForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            data = dict(form.cleaned_data)
            server = data.pop("server")
            done = [
                mv
                for mv in queryset
                if run_service(
                    self,
                    request,
                    services.request_deployment,
                    model_version_id=mv.pk,
                    server_id=server.pk,
                    batching=data,
                )
            ]
            if done:
                self.message_user(
                    request, f"Deployment requested for {', '.join(map(str, done))} on {server}.", messages.SUCCESS
                )
            return None
        return render(
            request,
            "admin/deployments/deploy_versions.html",
            {
                **self.admin_site.each_context(request),
                "title": "Deploy model versions",
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
            },
        )


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
