from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.utils import timezone

from .models import EmergencyAccess, Profile


class RoleBackend(ModelBackend):
    """Django's ModelBackend, plus the permissions of any unexpired break-glass role. A service
    account never logs in with a password (nor keeps a session), even if a hash were set on it:
    it authenticates only with tokens."""

    def user_can_authenticate(self, user):
        if not super().user_can_authenticate(user):
            return False
        return not Profile.objects.filter(user_id=user.pk, is_service_account=True).exists()

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
