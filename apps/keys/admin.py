from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.text import format_lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.core.admin_utils import ReadOnlyAdmin, run_service

from . import selectors, services
from .models import DataKey, KekRotation, KekState, KeyEncryptionKey, RotationState


@admin.register(KeyEncryptionKey)
class KeyEncryptionKeyAdmin(ReadOnlyAdmin):
    """The key inventory: versions, state, HSM label, times and what each protects. No key material."""

    list_display = [
        "kek_id",
        "version",
        "state",
        "custody",
        "hsm_label",
        "algorithm",
        "data_keys_protected",
        "created_at",
        "rotated_at",
        "retired_at",
    ]
    list_filter = ["state", "provider"]
    fields = [*list_display, "provider", "hsm_token", "created_by", "protects"]
    readonly_fields = fields
    actions = ["rotate", "retire"]
    change_list_template = "admin/keys/keyencryptionkey/change_list.html"

    def changelist_view(self, request, extra_context=None):
        extra = {
            "sv_custody": selectors.wrapping_custody(),
            "may_rotate": request.user.has_perm("keys.rotate_keyencryptionkey"),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    @admin.display(description=_("where the key is"))
    def custody(self, obj):
        return selectors.custody(obj.provider, obj.hsm_token or None)

    def has_add_permission(self, request):
        return False  # versions are created by rotating

    @admin.display(description=_("data keys protected"))
    def data_keys_protected(self, obj):
        return DataKey.objects.live().filter(kek_id=obj.kek_id).count()

    @admin.display(description=format_lazy(_("protects (first {limit})"), limit=selectors.LABEL_LIMIT))
    def protects(self, obj):
        return ", ".join(selectors.protected_by(obj.kek_id)) or "-"

    @admin.action(
        description=_("Rotate the KEK (new version with the configured provider, re-wrap every data key)"),
        permissions=["rotate"],
    )
    def rotate(self, request, queryset):
        rotation = run_service(self, request, services.start_rotation, reason="rotated from the admin")
        if rotation is not None:
            self.message_user(
                request,
                gettext("Rotation #%(id)d started: %(count)d data key(s) to re-wrap")
                % {"id": rotation.pk, "count": rotation.total},
                messages.SUCCESS,
            )

    @admin.action(description=_("Retire (destroy) the selected old versions"), permissions=["retire"])
    def retire(self, request, queryset):
        for kek in queryset:
            if run_service(self, request, services.retire_kek, kek_pk=kek.pk) is not None:
                self.message_user(request, gettext("%(kek)s destroyed") % {"kek": kek.kek_id}, messages.SUCCESS)

    def has_rotate_permission(self, request):
        return request.user.has_perm("keys.rotate_keyencryptionkey")

    def has_retire_permission(self, request):
        return request.user.has_perm("keys.retire_keyencryptionkey")


class StartRotationForm(forms.Form):
    reason = forms.CharField(
        label=_("reason"),
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text=_("Recorded with the rotation and in the audit log, e.g. the yearly rotation or a suspected leak."),
    )


@admin.register(KekRotation)
class KekRotationAdmin(ReadOnlyAdmin):
    """Rotations and their progress. "Start a rotation" (the officer's) creates the next KEK version
    with the configured provider and queues the re-wrap; the rotation's page reloads itself while
    the worker re-wraps, showing re-wrapped / total."""

    change_form_template = "admin/keys/kekrotation/change_form.html"
    change_list_template = "admin/keys/kekrotation/change_list.html"
    list_display = ["id", "to_kek", "state", "progress_display", "started_at", "finished_at", "requested_by"]
    list_filter = ["state"]
    fields = [
        "to_kek",
        "from_kek_ids",
        "state",
        "total",
        "rewrapped",
        "progress_display",
        "started_at",
        "finished_at",
        "last_error",
        "requested_by",
        "reason",
    ]
    readonly_fields = fields
    actions = ["resume"]

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        own = [path("start/", self.admin_site.admin_view(self.start_view), name="keys_kekrotation_start")]
        return own + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra = {"may_rotate": request.user.has_perm("keys.rotate_keyencryptionkey"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rotation = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if rotation is not None:
            extra.update(
                sv_rotation=rotation,
                sv_percent=round(rotation.progress * 100),
                sv_custody=selectors.custody(rotation.to_kek.provider, rotation.to_kek.hsm_token or None),
                refresh=2 if rotation.state == RotationState.RUNNING else None,
            )
        return super().change_view(request, object_id, form_url, extra)

    def start_view(self, request):
        """GET: what a rotation will do (the active version, the data keys to re-wrap, where the new
        version is made); POST: start it through keys.services.start_rotation, then its page."""
        if not request.user.has_perm("keys.rotate_keyencryptionkey"):
            raise PermissionDenied
        form = StartRotationForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            rotation = run_service(self, request, services.start_rotation, reason=form.cleaned_data["reason"])
            if rotation is not None:
                self.message_user(
                    request,
                    gettext("Rotation #%(id)d started: %(count)d data key(s) to re-wrap")
                    % {"id": rotation.pk, "count": rotation.total},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:keys_kekrotation_change", args=[rotation.pk]))
        active = KeyEncryptionKey.objects.filter(state=KekState.ACTIVE).first()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("Rotate the key encryption key"),
            "form": form,
            "active": active,
            "to_rewrap": DataKey.objects.live().count(),
            "running": KekRotation.objects.filter(state=RotationState.RUNNING).first(),
            "custody": selectors.wrapping_custody(),
        }
        return TemplateResponse(request, "admin/keys/kekrotation/start.html", context)

    @admin.display(description=_("progress"))
    def progress_display(self, obj):
        return f"{obj.rewrapped}/{obj.total} ({obj.progress:.0%})"

    @admin.action(description=_("Resume the selected rotation"), permissions=["rotate"])
    def resume(self, request, queryset):
        for rotation in queryset:
            if run_service(self, request, services.resume_rotation, rotation_id=rotation.pk) is not None:
                self.message_user(
                    request, gettext("Rotation #%(id)d queued again") % {"id": rotation.pk}, messages.SUCCESS
                )

    def has_rotate_permission(self, request):
        return request.user.has_perm("keys.rotate_keyencryptionkey")


@admin.register(DataKey)
class DataKeyAdmin(ReadOnlyAdmin):
    """Every data key: its purpose, suite, wrapping KEK version and lifecycle. The wrapped bytes are
    deliberately not shown."""

    list_display = ["id", "purpose", "protects", "suite", "kek_id", "created_at", "destroyed_at"]
    list_filter = ["purpose", "suite", "kek_id"]
    fields = ["purpose", "protects", "suite", "kek_id", "created_at", "destroyed_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    @admin.display(description=_("protects"))
    def protects(self, obj):
        return selectors.data_key_labels([obj]).get(obj.pk, "-")
