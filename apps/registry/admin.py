from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.core.admin_utils import ReadOnlyAdmin, ServiceFormAdminMixin, run_service

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

    @admin.display(description=_("versions"))
    def version_count(self, obj):
        return obj.versions.count()


class UploadVersionForm(forms.ModelForm):
    model_name = forms.CharField(
        label=_("model name"), max_length=63, help_text=_("Existing or new model name, e.g. triage-classifier")
    )
    upload = forms.FileField(
        label=_("ONNX file"), help_text=_("ONNX file; validated, its signature read, stored encrypted")
    )
    version_number = forms.IntegerField(
        label=_("version"), min_value=1, required=False, help_text=_("Defaults to the next version")
    )
    description = forms.CharField(
        label=_("description"), required=False, widget=forms.Textarea, help_text=_("Used when the model is new")
    )

    class Meta:
        model = ModelVersion
        fields = []


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = ["model", "version", "format", "short_sha256", "size_bytes", "suite", "compatible", "created_at"]
    list_filter = ["format", "model"]
    search_fields = ["model__name", "sha256"]
    readonly_fields = [
        "model",
        "version",
        "format",
        "sha256",
        "size_bytes",
        "signature",
        "breaking_changes",
        "created_by",
        "created_at",
    ]
    # Registry knows nothing of deployments: apps/deployments/admin.py adds its Deploy action to this page.

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
            if mv.breaking_changes:
                messages.warning(
                    request,
                    gettext(
                        "%(version)s breaks callers of the previous version: %(changes)s. "
                        "A rollout onto it is refused unless forced."
                    )
                    % {"version": mv, "changes": "; ".join(mv.breaking_changes)},
                )

    @admin.display(description=_("compatible with previous"), boolean=True)
    def compatible(self, obj):
        return not obj.breaking_changes

    @admin.display(description=_("sha256"))
    def short_sha256(self, obj):
        return obj.sha256[:12]

    @admin.display(description=_("suite"))
    def suite(self, obj):
        return obj.artifact.suite


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

    @admin.display(description=_("ciphertext sha256"))
    def short_digest(self, obj):
        return obj.ciphertext_sha256[:12]
