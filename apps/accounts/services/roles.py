"""Role membership, separation of duties and break-glass."""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.errors import Conflict, ServiceError, _, get_or_404

from ..models import EmergencyAccess, Profile
from ..roles import ANALYST, EXCLUSIVE, GUEST, PRIVILEGED, ROLES
from .enrolment import issue_enrolment_code, void_totp_devices
from .policy import Forbidden, forbid_self, is_officer, is_service_account, is_system, require_perm


def roles_of(user, *, include_emergency: bool = True) -> set[str]:
    """The user's standing roles, plus unexpired break-glass roles unless told otherwise."""
    if user is None or not user.is_authenticated:
        return set()
    roles = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    if include_emergency:
        now = timezone.now()
        roles |= set(
            EmergencyAccess.objects.filter(
                user=user, revoked_at__isnull=True, granted_at__lte=now, expires_at__gt=now
            ).values_list("role", flat=True)
        )
    return roles


@cache
def standing_roles_sql(user_ref: str) -> str:
    """The user's standing roles (its role groups) as SQL: role names (column `r`) of the user
    `user_ref` (an SQL expression, e.g. `%s` or `u.id`); no parameters of its own."""
    user_groups, groups = Group.user_set.through._meta.db_table, Group._meta.db_table
    names = ", ".join(f"'{r}'" for r in sorted(ROLES))  # our own constants, not input
    return (
        f"SELECT g.name AS r FROM {user_groups} ug JOIN {groups} g ON g.id = ug.group_id"  # noqa: S608
        f" WHERE ug.user_id = {user_ref} AND g.name IN ({names})"
    )


@cache
def current_roles_sql(user_ref: str) -> str:
    """The roles_of question as SQL: role names (column `r`) of the user `user_ref` (an SQL
    expression, e.g. `%s` or `u.id`), standing and unexpired break-glass. Its own parameters are
    `now, now`, after any that `user_ref` takes. Shared by roles_for_audit and the gateway's token
    lookup, which asks it inside its own statement."""
    return (
        f"{standing_roles_sql(user_ref)}"  # noqa: S608
        f" UNION SELECT e.role FROM {EmergencyAccess._meta.db_table} e WHERE e.user_id = {user_ref}"
        " AND e.revoked_at IS NULL AND e.granted_at <= %s AND e.expires_at > %s"
    )


def roles_for_audit(user) -> list[str]:
    """roles_of(user) as one fixed statement, sorted: every audit event freezes the actor's roles,
    and the gateway writes one event per call, so this is on the hot path (see apps/gateway/routing.py
    for why hot-path queries are fixed SQL)."""
    if user is None or not user.is_authenticated:
        return []
    known = getattr(user, "audit_roles", None)  # the gateway's token lookup already asked
    if known is not None:
        return known
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(current_roles_sql("%s"), [user.pk, user.pk, now, now])
        return sorted(row[0] for row in cursor.fetchall())


def assign_role(*, user_id: int, role: str, actor, source: Source = SYSTEM):
    """Add a role to a user under the policy of powers: never to oneself; admin, security_officer
    and auditor only by a security officer and only to a person; nobody holds two of those, break-
    glass roles included (separation of duties). A privileged role voids the user's TOTP devices
    and issues a one-time enrolment code, returned once as `user.enrolment_code` (None otherwise) —
    not the superuser's, whose second factor only the host resets (`manage.py enrolment_code`), as
    for break-glass and remove_second_factor."""
    with transaction.atomic():
        user = _locked_user(user_id)
        _check_role(role)
        _authorise(actor, user, role, "roles")
        before = roles_of(user, include_emergency=False)
        _check_compatible(user, role, roles_of(user))
        user.groups.add(Group.objects.get(name=role))
        _sync_staff(user, before | {role})
        details = {"role": role, "before": sorted(before), "after": sorted(before | {role})}
        plaintext = None
        if role in PRIVILEGED and not user.is_superuser:  # the superuser's second factor: the host's only
            details["totp_devices_voided"] = void_totp_devices(user, actor=actor, source=source)
            code, plaintext = issue_enrolment_code(user=user, actor=actor, source=source)
            details["enrolment_code"] = code.pk
        record_event("auth.role.assign", actor=actor, source=source, target=user, details=details)
    user.enrolment_code = plaintext
    return user


def remove_role(*, user_id: int, role: str, actor, source: Source = SYSTEM):
    """Remove a role (idempotent, recorded either way), under the same rules as assign_role:
    an officer cannot drop its own standing role to make room for another."""
    with transaction.atomic():
        user = _locked_user(user_id)
        _check_role(role)
        _authorise(actor, user, role, "roles")
        before = roles_of(user, include_emergency=False)
        user.groups.remove(Group.objects.get(name=role))
        _sync_staff(user, before - {role})
        record_event(
            "auth.role.remove",
            actor=actor,
            source=source,
            target=user,
            details={"role": role, "before": sorted(before), "after": sorted(before - {role})},
        )
    return user


def _authorise(actor, user, role: str, what: str) -> None:
    forbid_self(actor, user, what)
    if role in PRIVILEGED:
        if not is_system(actor) and not is_officer(actor):
            raise Forbidden(
                "privileged_role_requires_officer",
                _("only a security officer may give or take %(role)s") % {"role": role},
                "role",
            )
    else:
        require_perm(actor, "accounts.manage_roles", "auth.change_user")


def grant_emergency_access(
    *, user_id: int, role: str, minutes: int, reason: str, actor, source: Source = SYSTEM
) -> EmergencyAccess:
    """Break-glass: give another person a role for at most BREAK_GLASS_MAX, with a reason.
    Alerting. Never to oneself, never to a service account; separation of duties counts standing
    and break-glass roles. A privileged role voids the person's TOTP devices and issues an
    enrolment code, returned once as `access.enrolment_code` (their second factor must come from
    the officer, not from whoever knows their password)."""
    limit = int(settings.BREAK_GLASS_MAX.total_seconds() // 60)
    if not 1 <= minutes <= limit:
        raise ServiceError(
            "invalid_duration",
            _("break-glass lasts between 1 and %(limit)s minutes") % {"limit": limit},
            field="minutes",
        )
    if not reason.strip():
        raise ServiceError("reason_required", _("a break-glass grant needs a reason"), field="reason")
    with transaction.atomic():
        user = _locked_user(user_id)
        _check_role(role)
        require_perm(actor, "accounts.grant_break_glass")
        forbid_self(actor, user, "break-glass")
        if is_service_account(user):
            raise ServiceError(
                "service_account_break_glass", _("break-glass is for people, not service accounts"), field="user"
            )
        _check_compatible(user, role, roles_of(user))
        now = timezone.now()
        access = EmergencyAccess.objects.create(
            user=user,
            role=role,
            reason=reason.strip(),
            granted_by=acting_user(actor),
            granted_at=now,
            expires_at=now + timedelta(minutes=minutes),
        )
        details = {
            "alert": True,
            "access_id": access.pk,
            "role": role,
            "reason": access.reason,
            "expires_at": access.expires_at.isoformat(),
        }
        access.enrolment_code = None
        if role in PRIVILEGED and not user.is_superuser:
            details["totp_devices_voided"] = void_totp_devices(user, actor=actor, source=source)
            code, access.enrolment_code = issue_enrolment_code(user=user, actor=actor, source=source)
            details["enrolment_code"] = code.pk
        record_event("auth.breakglass.grant", actor=actor, source=source, target=user, details=details)
    return access


def revoke_emergency_access(*, access_id: int, actor, source: Source = SYSTEM) -> EmergencyAccess:
    """End a break-glass grant at once (a security officer; revoking one's own is allowed: it
    gives power up)."""
    with transaction.atomic():
        access = get_or_404(
            EmergencyAccess.objects.select_for_update(),
            "emergency_access_not_found",
            _("no break-glass grant with id %(access_id)s") % {"access_id": access_id},
            pk=access_id,
        )
        require_perm(actor, "accounts.grant_break_glass")
        if access.revoked_at is None:
            access.revoked_at = timezone.now()
            access.save(update_fields=["revoked_at"])
        record_event(
            "auth.breakglass.revoke",
            actor=actor,
            source=source,
            target=access.user,
            details={"role": access.role, "access_id": access.pk},
        )
    return access


def _sync_staff(user, roles: set[str]) -> None:
    """Privileged roles work in the admin site; the others use the API and gateway only."""
    staff = bool(roles & EXCLUSIVE) or user.is_superuser
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])


def _locked_user(user_id: int):
    return get_or_404(
        get_user_model().objects.select_for_update(),
        "user_not_found",
        _("no user with id %(user_id)s") % {"user_id": user_id},
        pk=user_id,
    )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ServiceError(
            "unknown_role",
            _("unknown role %(role)s; roles are %(roles)s") % {"role": repr(role), "roles": ", ".join(ROLES)},
            field="role",
        )


def _check_compatible(user, role: str, current: set[str]) -> None:
    clash = (current & EXCLUSIVE) - {role} if role in EXCLUSIVE else set()
    if clash:
        raise Conflict(
            "role_conflict",
            _("%(user)s already holds %(clash)s; nobody may hold two of %(exclusive)s (separation of duties)")
            % {
                "user": user.get_username(),
                "clash": ", ".join(sorted(clash)),
                "exclusive": ", ".join(sorted(EXCLUSIVE)),
            },
            "role",
        )
    if role not in (ANALYST, GUEST) and Profile.objects.filter(user=user, is_service_account=True).exists():
        raise ServiceError("service_account_role", _("service accounts may only be analyst or guest"), field="role")


def active_emergency_access(user):
    now = timezone.now()
    return EmergencyAccess.objects.filter(user=user, revoked_at__isnull=True, granted_at__lte=now, expires_at__gt=now)


def note_break_glass_use(user, source: Source, path: str, *, already_noted=frozenset()) -> list[int]:
    """Raise the alert event for each active break-glass grant the caller is using (sessions do
    this once per session; token calls each time, since a token has no session to remember it)."""
    noted = []
    for access in active_emergency_access(user):
        if access.pk in already_noted:
            continue
        with transaction.atomic():
            record_event(
                "auth.breakglass.use",
                actor=user,
                source=source,
                target=user,
                details={"alert": True, "role": access.role, "access_id": access.pk, "path": path},
            )
        noted.append(access.pk)
    return noted
