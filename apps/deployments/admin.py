from django import forms
from django.contrib import admin, messages

from apps.core.admin_utils import ServiceFormAdminMixin, run_service
from inference_backend.config import BATCHING_FIELDS

from . import services
from .models import Deployment, DeploymentTransition, InferenceServer


@admin.register(InferenceServer)
class InferenceServerAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = ["name", "http_url", "grpc_url", "hardware", "state", "last_seen_at"]
    list_filter = ["hardware", "state"]
    fields = ["name", "http_url", "grpc_url", "hardware"]

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
