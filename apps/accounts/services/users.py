"""Person accounts under the policy of powers: create (no privileged role), edit, enable or
disable, reset another person's password, change one's own, and the host's bootstrap of the first
security officer.
Accounts are never deleted: the audit trail keeps pointing at them."""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import Conflict, ServiceError, _, get_or_404

from ..models import Profile
from ..roles import PRIVILEGED, SECURITY_OFFICER
from .enrolment import issue_enrolment_code, void_totp_devices
from .policy import (
    Forbidden,
    forbid_self,
    is_privileged,
    is_service_account,
    is_system,
    require_officer_for_privileged,
    require_perm,
)
from .roles import assign_role
from .security import SERVICE_NAME
from .sessions import end_sessions
from .tokens import revoke_all_tokens

EDITABLE = ("username", "first_name", "last_name", "email", "is_active")
# A reset password is already expired: the password-age gate sends its holder to the change page.
EXPIRED = datetime(2000, 1, 1, tzinfo=UTC)


def create_user(*, username: str, email: str, password: str, role: str | None = None, actor, source: Source = SYSTEM):
    """Create a person's account with no role, analyst or guest. A privileged role is refused
    here (403 `privileged_role_requires_officer`): a security officer assigns it afterwards, which
    issues the enrolment code. Nothing is saved if the password, the name or the role is refused."""
    User = get_user_model()
    require_perm(actor, "auth.add_user")
    if role in PRIVILEGED:
        raise Forbidden(
            "privileged_role_requires_officer",
            _("create the account without %(role)s; only a security officer may then assign it") % {"role": role},
            "role",
        )
    _check_person_name(username)
    _validate_password(password, User(username=username, email=email))
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, email=email, password=password)
            record_event(
                "auth.account.create",
                actor=actor,
                source=source,
                target=user,
                details={"after": {"username": username, "email": email, "role": role}},
            )
            if role:
                assign_role(user_id=user.pk, role=role, actor=actor, source=source)
    except IntegrityError as err:
        raise Conflict(
            "duplicate_user", _("a user named %(username)s already exists") % {"username": repr(username)}, "username"
        ) from err
    return User.objects.get(pk=user.pk)


def update_user(*, user_id: int, changes: dict, actor, source: Source = SYSTEM):
    """Change a user's name, e-mail or active flag, recording before and after of what changed;
    disabling ends the sessions and revokes the tokens, as set_user_active does (the admin's change
    form and PATCH come here). Privileges, dates and passwords are not editable here (roles, grants
    and reset_password have their own services; last_login and date_joined are facts)."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ServiceError(
            "not_editable",
            _("%(unknown)s cannot be edited here") % {"unknown": ", ".join(sorted(unknown))},
            field=min(unknown),
        )
    with transaction.atomic():
        user = _locked(user_id)
        before = {f: getattr(user, f) for f in changes if getattr(user, f) != changes[f]}
        if not before:
            return user
        if "is_active" in before:
            _check_may_set_active(actor, user)
        if "username" in before:
            forbid_self(actor, user, "user name")
            _check_name(user, changes["username"])
        own_details = set(before) <= {"first_name", "last_name", "email"}
        if not (own_details and not is_system(actor) and actor.pk == user.pk):
            require_perm(actor, "auth.change_user", "accounts.manage_roles")
            require_officer_for_privileged(actor, user, "change this account")
        for field in before:
            setattr(user, field, changes[field])
        try:
            with transaction.atomic():
                user.save(update_fields=list(before))
        except IntegrityError as err:
            name = changes["username"]
            raise Conflict(
                "duplicate_user", _("a user named %(name)s already exists") % {"name": repr(name)}, "username"
            ) from err
        disabled = before.get("is_active") is True
        sessions = end_sessions(user) if disabled else 0
        record_event(
            "auth.account.update",
            actor=actor,
            source=source,
            target=user,
            details={
                "before": before,
                "after": {f: changes[f] for f in before},
                **({"sessions_ended": sessions} if sessions else {}),
            },
        )
        if disabled:  # as set_user_active: a disabled account keeps no session and no token
            revoke_all_tokens(user=user, reason="account_disabled", actor=actor, source=source)
    return user


def set_user_active(*, user_id: int, active: bool, actor, source: Source = SYSTEM):
    """Enable or disable an account: an admin for non-privileged persons and service accounts, a
    security officer for anyone; never oneself. Disabling ends the account's sessions and revokes
    its tokens in the same transaction (HIPAA 164.308(a)(3)(ii)(C), checked by
    `accounts.termination`): enabling it again later revives neither."""
    with transaction.atomic():
        user = _locked(user_id)
        _check_may_set_active(actor, user)
        before = user.is_active
        user.is_active = active
        user.save(update_fields=["is_active"])
        sessions = 0 if active else end_sessions(user)
        record_event(
            "auth.account.update",
            actor=actor,
            source=source,
            target=user,
            details={
                "before": {"is_active": before},
                "after": {"is_active": active},
                **({"sessions_ended": sessions} if sessions else {}),
            },
        )
        if not active:  # a disabled account's tokens die with it (not those of its service accounts)
            revoke_all_tokens(user=user, reason="account_disabled", actor=actor, source=source)
    return user


def reset_password(*, user_id: int, password: str, actor, source: Source = SYSTEM):
    """An admin sets another person's password: the change is forced at the next login, the
    person's sessions end and its tokens are revoked; the event alerts. Never for oneself (use
    the change-password page), a privileged person (they change their own; on the host,
    `manage.py changepassword`) or a service account (it has no usable password)."""
    with transaction.atomic():
        user = _locked(user_id)
        forbid_self(actor, user, "password through a reset; use the change-password page")
        if is_service_account(user):
            raise Forbidden("service_account_no_password", _("service accounts have no password; they use tokens"))
        if is_privileged(user):
            raise Forbidden(
                "privileged_password_reset_forbidden",
                _(
                    "%(user)s holds a privileged role: they change their own password (or, on the "
                    "host, `manage.py changepassword`)"
                )
                % {"user": user.get_username()},
            )
        require_perm(actor, "auth.change_user")
        _validate_password(password, user)
        user.set_password(password)
        user.save(update_fields=["password"])
        Profile.objects.update_or_create(user=user, defaults={"password_changed_at": EXPIRED})
        sessions = end_sessions(user)
        tokens = len(revoke_all_tokens(user=user, reason="password_reset", actor=actor, source=source))
        record_event(
            "auth.password.reset",
            actor=actor,
            source=source,
            target=user,
            details={"alert": True, "must_change": True, "sessions_ended": sessions, "tokens_revoked": tokens},
        )
    return user


def change_own_password(*, user, old_password: str, new_password: str, via: str, source: Source = SYSTEM):
    """A person changes their own password (the portal page, `via="portal"`, or the admin's,
    `via="admin"`): the current password must be right and the new one pass the validators. The
    new password, its age (PasswordAgeRecorder) and the event `auth.password.change` (actor and
    target the person; whether the old password had expired, e.g. after a reset; never a secret)
    commit together: if the event cannot be written, the password stays as it was. Service
    accounts have no password to change. Returns the user, holding the new password's hash."""
    if is_service_account(user):
        raise Forbidden("service_account_no_password", _("service accounts have no password; they use tokens"))
    if not user.check_password(old_password):
        raise ServiceError("wrong_password", _("the current password is wrong"), field="old_password")
    _validate_password(new_password, user)
    with transaction.atomic():
        _locked(user.pk)  # one change at a time, and none racing an admin's reset
        changed_at = Profile.objects.filter(user=user).values_list("password_changed_at", flat=True).first()
        expired = changed_at is not None and timezone.now() - changed_at > settings.PASSWORD_MAX_AGE
        user.set_password(new_password)
        user.save(update_fields=["password"])
        record_event(
            "auth.password.change",
            actor=user,
            source=source,
            target=user,
            details={"via": via, "expired": expired},
        )
    return user


def bootstrap_officer(*, username: str, email: str, password: str, additional: bool = False):
    """The host creates a security officer (the first one, or another with `additional`): the
    account, the role and a one-time enrolment code, audited with the system as actor and the
    host and OS user in the details. Returns (user, enrolment code plaintext)."""
    User = get_user_model()
    with transaction.atomic():
        officers = User.objects.filter(is_active=True, groups__name=SECURITY_OFFICER)
        if officers.exists() and not additional:
            raise Conflict(
                "officer_exists",
                _("an active security officer already exists (%(user)s); pass --additional to create another")
                % {"user": officers.first().get_username()},
            )
        user = create_user(username=username, email=email, password=password, actor=None)
        user = assign_role(user_id=user.pk, role=SECURITY_OFFICER, actor=None)
        record_event(
            "auth.officer.bootstrap",
            actor=None,
            target=user,
            details={"alert": True, "host": socket.gethostname(), "os_user": _os_user(), "additional": additional},
        )
    return user, user.enrolment_code


def reissue_enrolment_code(*, user_id: int, actor=None, source: Source = SYSTEM) -> str:
    """The host (or a caller that has checked its own right) gives a privileged account a fresh
    enrolment code, voiding its TOTP devices: the way back for a lost authenticator, and for the
    superuser, which no officer assigns."""
    with transaction.atomic():
        user = _locked(user_id)
        if not is_privileged(user):
            raise ServiceError(
                "not_privileged",
                _("%(user)s holds no privileged role") % {"user": user.get_username()},
                field="user",
            )
        void_totp_devices(user, actor=actor, source=source)
        _code_row, plaintext = issue_enrolment_code(user=user, actor=actor, source=source)
    return plaintext


def _check_may_set_active(actor, user) -> None:
    forbid_self(actor, user, "account state")
    require_perm(actor, "auth.change_user", "accounts.manage_roles")
    require_officer_for_privileged(actor, user, "enable or disable this account")


def _check_name(user, name: str) -> None:
    if is_service_account(user):
        try:
            SERVICE_NAME(name)
        except ValidationError as err:
            raise ServiceError(
                "invalid_name", _("service account names look like svc-<name>"), field="username"
            ) from err
    else:
        _check_person_name(name)


def _check_person_name(name: str) -> None:
    if name.lower().startswith("svc-"):
        raise ServiceError("invalid_name", _("svc- names are for service accounts"), field="username")


def _validate_password(password: str, user) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as err:
        raise ServiceError(
            "weak_password", " ".join(err.messages), field="password"
        ) from err  # i18n-ok: Django's validators


def _locked(user_id: int):
    return get_or_404(
        get_user_model().objects.select_for_update(),
        "user_not_found",
        _("no user with id %(user_id)s") % {"user_id": user_id},
        pk=user_id,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
