from django.contrib import admin, messages
from django.utils.text import format_lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from apps.core.admin_utils import ReadOnlyAdmin, run_service

from . import selectors, services
from .models import DataKey, KekRotation, KeyEncryptionKey


@admin.register(KeyEncryptionKey)
class KeyEncryptionKeyAdmin(ReadOnlyAdmin):
    """The key inventory: versions, state, HSM label, times and what each protects. No key material."""

    list_display = [
        "kek_id",
        "version",
        "state",
        "provider",
        "hsm_label",
        "algorithm",
        "data_keys_protected",
        "created_at",
        "rotated_at",
        "retired_at",
    ]
    list_filter = ["state", "provider"]
    fields = [*list_display, "hsm_token", "created_by", "protects"]
    readonly_fields = fields
    actions = ["rotate", "retire"]

    def has_add_permission(self, request):
        return False  # versions are created by rotating

    @admin.display(description=_("data keys protected"))
    def data_keys_protected(self, obj):
        return DataKey.objects.live().filter(kek_id=obj.kek_id).count()

    @admin.display(description=format_lazy(_("protects (first {limit})"), limit=selectors.LABEL_LIMIT))
    def protects(self, obj):
        return ", ".join(selectors.protected_by(obj.kek_id)) or "-"

    @admin.action(
        description=_("Rotate the KEK (new version in the HSM, re-wrap every data key)"), permissions=["rotate"]
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


@admin.register(KekRotation)
class KekRotationAdmin(ReadOnlyAdmin):
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
