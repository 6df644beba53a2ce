from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.utils import timezone

from .models import EmergencyAccess


class RoleBackend(ModelBackend):
    """Django's ModelBackend, plus the permissions of any unexpired break-glass role."""

    def get_group_permissions(self, user_obj, obj=None):
        perms = super().get_group_permissions(user_obj, obj)
        if obj is not None or not user_obj.is_active or user_obj.is_anonymous:
            return perms
        if not hasattr(user_obj, "_emergency_perm_cache"):
            now = timezone.now()
            roles = EmergencyAccess.objects.filter(
                user=user_obj, revoked_at__isnull=True, granted_at__lte=now, expires_at__gt=now
            ).values("role")
            rows = Permission.objects.filter(group__name__in=roles).values_list("content_type__app_label", "codename")
            user_obj._emergency_perm_cache = {f"{app}.{code}" for app, code in rows}
        return perms | user_obj._emergency_perm_cache
