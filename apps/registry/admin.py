from django import forms
from django.contrib import admin, messages
from django.shortcuts import render

from apps.core.admin_utils import ReadOnlyAdmin, ServiceFormAdminMixin, run_service
from apps.deployments import services as deployment_services
from apps.deployments.models import InferenceServer

from . import services
from .models import Artifact, Model, ModelVersion


class VersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["version", "format", "sha256", "size_bytes", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Model)
class ModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "description", "version_count", "created_at"]
    search_fields = ["name", "description"]
    inlines = [VersionInline]

    def has_add_permission(self, request):
        return False  # a model is created by uploading its first version

    @admin.display(description="versions")
    def version_count(self, obj):
        return obj.versions.count()


class UploadVersionForm(forms.ModelForm):
    model_name = forms.CharField(max_length=63, help_text="Existing or new model name, e.g. triage-classifier")
    upload = forms.FileField(help_text="ONNX file; validated, its signature read, stored encrypted")
    version_number = forms.IntegerField(min_value=1, required=False, help_text="Defaults to the next version")
    description = forms.CharField(required=False, widget=forms.Textarea, help_text="Used when the model is new")

    class Meta:
        model = ModelVersion
        fields = []


class DeployForm(forms.Form):
    server = forms.ModelChoiceField(queryset=InferenceServer.objects.all())
    max_batch_size = forms.IntegerField(min_value=0, initial=8)
    dynamic_batching = forms.BooleanField(required=False, initial=True)
    max_queue_delay_us = forms.IntegerField(min_value=0, initial=100)
    instance_count = forms.IntegerField(min_value=1, initial=1)


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = ["model", "version", "format", "short_sha256", "size_bytes", "suite", "created_at"]
    list_filter = ["format", "model"]
    search_fields = ["model__name", "sha256"]
    readonly_fields = ["model", "version", "format", "sha256", "size_bytes", "signature", "created_by", "created_at"]
    actions = ["deploy"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = UploadVersionForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["model_name", "upload", "version_number", "description"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        upload = data["upload"]
        mv = run_service(
            self,
            request,
            services.register_model_version,
            model_name=data["model_name"],
            data=upload.read(),
            version=data["version_number"],
            description=data["description"],
        )
        if mv is not None:
            obj.pk = mv.pk

    @admin.display(description="sha256")
    def short_sha256(self, obj):
        return obj.sha256[:12]

    @admin.display(description="suite")
    def suite(self, obj):
        return obj.artifact.suite

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
                    deployment_services.request_deployment,
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
            "admin/registry/deploy.html",
            {
                **self.admin_site.each_context(request),
                "title": "Deploy model versions",
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
            },
        )


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ["version", "suite", "kek_id", "ciphertext_bytes", "short_digest", "created_at", "shredded_at"]
    list_filter = [
        ("data_key__suite", admin.AllValuesFieldListFilter),
        ("data_key__kek_id", admin.AllValuesFieldListFilter),
    ]
    list_select_related = ["version__model", "data_key"]
    fields = [
        "version",
        "storage_name",
        "suite",
        "kek_id",
        "aad",
        "ciphertext_sha256",
        "ciphertext_bytes",
        "created_at",
        "shredded_at",
    ]  # the wrapped data key is deliberately not shown
    readonly_fields = fields
    change_list_template = "admin/registry/artifact/change_list.html"

    def changelist_view(self, request, extra_context=None):
        from apps.keys.selectors import key_inventory

        # The key inventory is an aggregate over these rows, so it is shown above them.
        return super().changelist_view(request, {**(extra_context or {}), "key_inventory": key_inventory()})

    def has_add_permission(self, request):
        return False

    @admin.display(description="ciphertext sha256")
    def short_digest(self, obj):
        return obj.ciphertext_sha256[:12]
