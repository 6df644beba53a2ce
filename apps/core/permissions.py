from rest_framework.permissions import SAFE_METHODS, BasePermission


class ReadAnyWriteStaff(BasePermission):
    """Authenticated users read; staff write. (Roles and per-model grants replace this in issue 3.)"""

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or user.is_staff


class IsSuperuser(BasePermission):
    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_superuser)
