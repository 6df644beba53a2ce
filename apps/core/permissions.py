"""API permission checks: one class, configured per viewset with the Django permission each
action needs (roles grant those permissions), plus the token scope for token callers."""

from rest_framework.permissions import SAFE_METHODS, BasePermission


class ActionPermission(BasePermission):
    """`view.action_perms = {"list": "registry.view_model", "create": "registry.add_modelversion", ...}`;
    an action mapped to None needs only authentication (the queryset does the scoping); an
    action not in the map is refused. Token callers also need the `read` scope for safe methods
    and `manage` for the rest."""

    message = "you do not have permission to do this"

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        token = request.auth if hasattr(request.auth, "scopes") else None
        if token is not None:
            scope = "read" if request.method in SAFE_METHODS else "manage"
            if scope not in token.scopes:
                self.message = f"this token lacks the '{scope}' scope"
                self.code = "insufficient_scope"
                return False
        if getattr(view, request.method.lower(), None) is None:
            return True  # no handler for this method: let DRF answer 405, not a misleading 403
        perms = getattr(view, "action_perms", {})
        action = getattr(view, "action", None) or request.method.lower()
        if action not in perms:
            return False
        needed = perms[action]
        if needed is None:
            return True
        return user.has_perms([needed] if isinstance(needed, str) else needed)
