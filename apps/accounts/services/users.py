"""Human user accounts: create (password checked by the validators), enable or disable."""

from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import Conflict, NotFound, ServiceError

from .roles import assign_role
from .tokens import revoke_all_tokens


def create_user(*, username: str, email: str, password: str, role: str | None = None, actor, source: Source = SYSTEM):
    """Create a person's account, optionally with one role. Nothing is saved if the password or
    the role is refused."""
    User = get_user_model()
    candidate = User(username=username, email=email)
    try:
        password_validation.validate_password(password, candidate)
    except ValidationError as err:
        raise ServiceError("weak_password", " ".join(err.messages), field="password") from err
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
        raise Conflict("duplicate_user", f"a user named {username!r} already exists", "username") from err
    return User.objects.get(pk=user.pk)


def set_user_active(*, user_id: int, active: bool, actor, source: Source = SYSTEM):
    with transaction.atomic():
        user = get_user_model().objects.select_for_update().filter(pk=user_id).first()
        if user is None:
            raise NotFound("user_not_found", f"no user with id {user_id}")
        before = user.is_active
        user.is_active = active
        user.save(update_fields=["is_active"])
        record_event(
            "auth.account.update",
            actor=actor,
            source=source,
            target=user,
            details={"before": {"is_active": before}, "after": {"is_active": active}},
        )
        if not active:  # a disabled account's tokens die with it (not those of its service accounts)
            revoke_all_tokens(user=user, reason="account_disabled", actor=actor, source=source)
    return user
