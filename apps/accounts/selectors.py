"""Reads about people and their powers that do not depend on who asks (the compliance checks use
them): which of the exclusive roles each active user effectively holds, and how.

A role is held through its group, a break-glass grant, the superuser flag (every permission, so
every role), or through any one of the role's own powers — a permission that no other exclusive
role has — reaching the user by another path: a direct user permission, another group, or a role
group whose permissions were changed. Group names alone miss the last three (a person in the admin
group who was also given `audit.view_auditevent` directly holds the auditor's power).

Also people's second-factor devices and the one-time-password algorithm (apps.accounts.otp)."""

from __future__ import annotations

from collections import defaultdict

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from .models import EmergencyAccess
from .otp import (
    SM3,
    TOTP_SHA1,
    confirmed_devices,
    device_algorithm,
    has_confirmed_device,
    otp_algorithm,
    users_with_confirmed_device,
)
from .roles import EXCLUSIVE, PERMISSIONS, ROLES


def exclusive_powers() -> dict[str, frozenset[str]]:
    """Per exclusive role, the permissions ("app.codename") that only that role has."""
    out = {}
    for role in EXCLUSIVE:
        others = set().union(*(PERMISSIONS[o] for o in EXCLUSIVE if o != role))
        out[role] = frozenset(set(PERMISSIONS[role]) - others)
    return out


def effective_roles(users=None, now=None) -> dict[str, dict[str, list[str]]]:
    """{username: {role: [how, ...]}} of the exclusive roles each active user in `users` (default:
    every active user) holds now, and through what: "superuser", "group <role>", "break-glass",
    "permission <perm>" (direct), "group <name>: <perm>" (a group's permission)."""
    now = now or timezone.now()
    User = get_user_model()
    users = User.objects.filter(is_active=True) if users is None else users.filter(is_active=True)
    names = dict(users.values_list("pk", "username"))
    held: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for pk in users.filter(is_superuser=True).values_list("pk", flat=True):
        for role in sorted(EXCLUSIVE):
            held[pk][role].append("superuser")
    memberships = User.groups.through.objects.filter(user_id__in=names).values_list("user_id", "group__name")
    groups_of: dict[int, list[str]] = defaultdict(list)
    for pk, group in memberships:
        groups_of[pk].append(group)
        if group in EXCLUSIVE:
            held[pk][group].append(f"group {group}")
    glass = EmergencyAccess.objects.filter(
        user_id__in=names, role__in=ROLES, revoked_at__isnull=True, granted_at__lte=now, expires_at__gt=now
    ).values_list("user_id", "role")
    for pk, role in glass:
        if role in EXCLUSIVE:
            held[pk][role].append("break-glass")
    powers = exclusive_powers()
    role_of_power = {perm: role for role, perms in powers.items() for perm in perms}
    for pk, perm in _direct_permissions(User, names):
        if perm in role_of_power:
            held[pk][role_of_power[perm]].append(f"permission {perm}")
    group_perms = _group_permissions({g for gs in groups_of.values() for g in gs})
    for pk, groups in groups_of.items():
        for group in groups:
            for perm in sorted(group_perms.get(group, ())):
                role = role_of_power.get(perm)
                if role is not None and group != role:
                    held[pk][role].append(f"group {group}: {perm}")
    return {names[pk]: {r: sorted(set(v)) for r, v in roles.items()} for pk, roles in held.items()}


def _direct_permissions(User, names) -> list[tuple[int, str]]:
    rows = User.user_permissions.through.objects.filter(user_id__in=names).values_list(
        "user_id", "permission__content_type__app_label", "permission__codename"
    )
    return [(pk, f"{app}.{code}") for pk, app, code in rows]


def _group_permissions(groups: set[str]) -> dict[str, set[str]]:
    rows = Group.permissions.through.objects.filter(group__name__in=groups).values_list(
        "group__name", "permission__content_type__app_label", "permission__codename"
    )
    out: dict[str, set[str]] = defaultdict(set)
    for group, app, code in rows:
        out[group].add(f"{app}.{code}")
    return out


__all__ = [
    "SM3",
    "TOTP_SHA1",
    "confirmed_devices",
    "device_algorithm",
    "effective_roles",
    "exclusive_powers",
    "has_confirmed_device",
    "otp_algorithm",
    "users_with_confirmed_device",
]
