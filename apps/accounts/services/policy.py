"""The policy of powers (docs/access-control.md) as small predicates and refusals shared by the
role, grant, break-glass and user services. The services enforce it themselves, whatever the
caller (API, admin, command), so a new entry point cannot skip it.

`actor=None` is the system or the host (a management command, a beat task, a migration): it is
trusted, and recorded as such in the audit log."""

from __future__ import annotations

from apps.audit.services import acting_user
from apps.core.errors import ServiceError, _

from ..models import Profile
from ..roles import PRIVILEGED, SECURITY_OFFICER


class Forbidden(ServiceError):
    def __init__(self, code: str, detail: str, field: str | None = None):
        super().__init__(code, detail, 403, field)


def is_system(actor) -> bool:
    return acting_user(actor) is None


def is_officer(actor) -> bool:
    """A security officer (standing or break-glass), or the superuser (the sealed break-glass
    account, whose every use alerts)."""
    from .roles import roles_of

    return actor.is_superuser or SECURITY_OFFICER in roles_of(actor)


def is_privileged(user) -> bool:
    """Holds admin, security_officer or auditor (standing or break-glass), or is the superuser."""
    from .roles import roles_of

    return user.is_superuser or bool(roles_of(user) & PRIVILEGED)


def is_service_account(user) -> bool:
    return Profile.objects.filter(user=user, is_service_account=True).exists()


def forbid_self(actor, user, what: str) -> None:
    """Nobody changes their own roles, grants, break-glass or account state."""
    if not is_system(actor) and actor.pk == user.pk:
        raise Forbidden(
            "self_change_forbidden",
            _("nobody changes their own %(what)s; ask another security officer or admin") % {"what": what},
        )


def require_perm(actor, *perms: str) -> None:
    """The actor holds at least one of `perms` (the views check too; this keeps the services
    safe from any other caller)."""
    if not is_system(actor) and not any(actor.has_perm(p) for p in perms):
        raise Forbidden("permission_denied", _("you do not have permission to do this"))


def require_officer_for_privileged(actor, user, what: str) -> None:
    """Only a security officer acts on a privileged person's account (an admin would otherwise
    disable, rename or take over the people who watch it)."""
    if not is_system(actor) and is_privileged(user) and not is_officer(actor):
        raise Forbidden(
            "privileged_account_requires_officer",
            _("%(user)s holds a privileged role: only a security officer may %(what)s")
            % {"user": user.get_username(), "what": what},
        )
