"""Per-model grants (django-guardian object permissions with an expiry). The only place they
change; every change is audited."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.utils import timezone

from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.errors import ServiceError, _, get_or_404

from ..models import ModelGroupGrant, ModelUserGrant, Profile
from ..roles import GRANTABLE, MAY_INVOKE, ROLES
from .policy import Forbidden, forbid_self, is_system, require_perm


def grant_model_access(
    *,
    model_id: int,
    permission: str,
    user_id: int | None = None,
    group_id: int | None = None,
    expires_at: datetime | None = None,
    actor,
    source: Source = SYSTEM,
):
    """Give a user or a group `view_model`, `invoke_model` or `reidentify` on one model, optionally
    until `expires_at`. Granting again updates the expiry. Invoking implies viewing; `reidentify`
    (original identifiers back in surrogate-mode answers) implies nothing and needs a grantee whose
    role may invoke. A security officer grants, never to itself, its own service accounts or its
    own groups."""
    return _change(model_id, permission, user_id, group_id, expires_at, True, actor, source)


def revoke_model_access(
    *,
    model_id: int,
    permission: str,
    user_id: int | None = None,
    group_id: int | None = None,
    actor,
    source: Source = SYSTEM,
):
    """Take a grant away (idempotent, recorded either way)."""
    return _change(model_id, permission, user_id, group_id, None, False, actor, source)


def _change(model_id, permission, user_id, group_id, expires_at, grant, actor, source):
    if permission not in GRANTABLE:
        raise ServiceError(
            "unknown_permission",
            _("grantable permissions are %(grantable)s") % {"grantable": ", ".join(GRANTABLE)},
            field="permission",
        )
    if (user_id is None) == (group_id is None):
        raise ServiceError("invalid_grantee", _("name exactly one of user or group"), field="user")
    if grant and expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expired_grant", _("the expiry is in the past"), field="expires_at")
    model = get_or_404(
        _registry_model(), "model_not_found", _("no model with id %(model_id)s") % {"model_id": model_id}, pk=model_id
    )
    grantee, table, key = _grantee(user_id, group_id)
    require_perm(actor, "accounts.manage_grants")
    _forbid_own(actor, grantee, key)
    if grant and permission in ("invoke_model", "reidentify"):
        _check_may_invoke(grantee, user_id is not None)
    perms = ["view_model", "invoke_model"] if grant and permission == "invoke_model" else [permission]
    if not grant and permission == "view_model":
        perms = ["view_model", "invoke_model", "reidentify"]  # without view there is no invoke
    elif not grant and permission == "invoke_model":
        perms = ["invoke_model", "reidentify"]  # re-identification is of answers one may ask for
    with transaction.atomic():
        removed = _drop_stale_reidentify(table, key, grantee, model) if grant and permission != "reidentify" else []
        rows = Permission.objects.filter(content_type__app_label="registry", codename__in=perms)
        for perm in rows:
            if grant:
                table.objects.update_or_create(
                    **{key: grantee},
                    permission=perm,
                    content_object=model,
                    defaults={"expires_at": expires_at, "granted_by": acting_user(actor), "granted_at": timezone.now()},
                )
            else:
                table.objects.filter(**{key: grantee}, permission=perm, content_object=model).delete()
        record_event(
            "access.grant.create" if grant else "access.grant.revoke",
            actor=actor,
            source=source,
            target=model,
            details={
                "grantee": f"{key}:{grantee}",
                "grantee_id": grantee.pk,  # names change; access.authorisation matches grants to events by id
                "permissions": perms,
                "expires_at": expires_at.isoformat() if expires_at else None,
                **({"removed": removed} if removed else {}),
            },
        )
    return model


def _drop_stale_reidentify(table, key, grantee, model) -> list[str]:
    """Granting view or invoke again after the grantee's view or invoke EXPIRED (before the sweep
    removed it): the `reidentify` that expiry voided goes, as the sweep would have taken it."""
    mine = table.objects.filter(**{key: grantee}, content_object=model, permission__content_type__app_label="registry")
    if not mine.filter(
        permission__codename__in=("view_model", "invoke_model"), expires_at__lte=timezone.now()
    ).exists():
        return []
    return ["reidentify"] if mine.filter(permission__codename="reidentify").delete()[0] else []


def _registry_model():
    """The registry's Model, named by the grant tables' own foreign key: accounts sits below registry
    and does not import it (docs/architecture.md); a grant is on whatever model that key names."""
    return ModelUserGrant._meta.get_field("content_object").related_model


def _grantee(user_id, group_id):
    if user_id is not None:
        user = get_or_404(
            get_user_model(), "user_not_found", _("no user with id %(user_id)s") % {"user_id": user_id}, pk=user_id
        )
        return user, ModelUserGrant, "user"
    group = get_or_404(
        Group, "group_not_found", _("no group with id %(group_id)s") % {"group_id": group_id}, pk=group_id
    )
    return group, ModelGroupGrant, "group"


def _forbid_own(actor, grantee, key: str) -> None:
    """Nobody grants (or revokes) model access to themselves, to a service account they own (whose
    tokens they could then mint) or to a group they belong to."""
    if is_system(actor):
        return
    if key == "user":
        forbid_self(actor, grantee, "model grants")
        if Profile.objects.filter(user=grantee, is_service_account=True, owner_id=actor.pk).exists():
            raise Forbidden(
                "self_change_forbidden",
                _("%(user)s is your own service account; another security officer must grant it")
                % {"user": grantee.get_username()},
                "user",
            )
    elif actor.groups.filter(pk=grantee.pk).exists():
        raise Forbidden(
            "self_change_forbidden",
            _("you belong to %(grantee)s; another security officer must grant it") % {"grantee": grantee.name},
            "group",
        )


def _check_may_invoke(grantee, is_user: bool) -> None:
    if is_user:
        roles = set(grantee.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if not grantee.is_superuser and not roles & MAY_INVOKE:
            raise ServiceError(
                "role_cannot_invoke",
                _("%(user)s holds no role that may invoke models (guests invoke nothing)")
                % {"user": grantee.get_username()},
                field="user",
            )
    elif grantee.name == "guest":
        raise ServiceError("role_cannot_invoke", _("guests invoke nothing"), field="group")


def purge_expired_grants(now=None) -> int:
    """Delete grants past their expiry. The selectors already ignore them; deleting them keeps
    django-guardian's own checks (user.has_perm(perm, model)), which know nothing of expiry,
    consistent, and tidies the grant lists. Each removal is audited.

    An expired `view_model` or `invoke_model` takes the grantee's `reidentify` on that model with
    it, as revoking them does: otherwise a later invoke grant, given for another purpose, would
    silently bring back a re-identification nobody granted anew."""
    now = now or timezone.now()
    removed = 0
    for table, key in ((ModelUserGrant, "user"), (ModelGroupGrant, "group")):
        for grant in table.objects.filter(expires_at__lte=now).select_related(key, "content_object", "permission"):
            with transaction.atomic():
                if not table.objects.filter(pk=grant.pk).delete()[0]:
                    continue  # removed meanwhile
                perms = [grant.permission.codename]
                if grant.permission.codename in ("view_model", "invoke_model"):
                    dependent = table.objects.filter(
                        **{key: getattr(grant, key)},
                        content_object_id=grant.content_object_id,
                        permission__content_type=grant.permission.content_type,
                        permission__codename="reidentify",
                    )
                    if dependent.delete()[0]:
                        perms.append("reidentify")
                record_event(
                    "access.grant.expire",
                    actor=None,
                    target=grant.content_object,
                    details={
                        "grantee": f"{key}:{getattr(grant, key)}",
                        "grantee_id": getattr(grant, f"{key}_id"),
                        "permissions": perms,
                        "expires_at": grant.expires_at.isoformat(),
                    },
                )
            removed += 1
    return removed
