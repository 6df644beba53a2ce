"""API permission checks: one class, configured per viewset with the Django permission each
action needs (roles grant those permissions), plus the token scope for token callers."""

from rest_framework.permissions import SAFE_METHODS, BasePermission


class ActionPermission(BasePermission):
    """`view.action_perms = {"list": "registry.view_model", "create": "registry.add_modelversion", ...}`;
    an action mapped to None needs only authentication (the queryset does the scoping); an
    action not in the map is refused. Token callers also need the `read` scope for safe methods
    and `manage` for the rest. A view with `token_writes_refused = True` takes no write from a token
    of any scope (403 `token_not_allowed`, or the code `view.token_refusals` gives the action, e.g.
    `token_cannot_issue_tokens`): tokens never change who may do what."""

    message = "you do not have permission to do this"

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        token = request.auth if hasattr(request.auth, "scopes") else None
        if token is not None and not self._token_may(request, view, token):
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

    def _token_may(self, request, view, token) -> bool:
        handled = getattr(view, request.method.lower(), None) is not None  # else DRF answers 405
        if request.method not in SAFE_METHODS and handled and getattr(view, "token_writes_refused", False):
            action = getattr(view, "action", None) or request.method.lower()
            self.code = getattr(view, "token_refusals", {}).get(action, "token_not_allowed")
            self.message = (
                "tokens cannot issue tokens: log in to the portal"
                if self.code == "token_cannot_issue_tokens"
                else "a token cannot change accounts, roles, grants or tokens: log in to the portal"
            )
            return False
        scope = "read" if request.method in SAFE_METHODS else "manage"
        if scope not in token.scopes:
            self.message = f"this token lacks the '{scope}' scope"
            self.code = "insufficient_scope"
            return False
        return True
