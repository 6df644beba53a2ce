"""Service accounts, dormant-account sweep and the audit trail of logins and second factors."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.validators import RegexValidator
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import Conflict, ServiceError, _, get_or_404
from apps.core.policy import policy_changed

from ..models import Profile
from ..roles import ANALYST, ROLES
from .policy import Forbidden, is_system, require_perm
from .sessions import end_sessions
from .tokens import revoke_all_tokens

SERVICE_NAME = RegexValidator(r"^svc-[a-z0-9][a-z0-9_.-]{1,60}$", code="invalid_name")


def create_service_account(*, name: str, owner_id: int, role: str = ANALYST, actor, source: Source = SYSTEM):
    """A non-human user owned by a person (its creator, unless the host creates it): no usable
    password ever (it authenticates only with tokens; RoleBackend refuses a password login even if
    a hash were set), role analyst (or guest). Its name starts with `svc-`."""
    User = get_user_model()
    require_perm(actor, "auth.add_user")
    if not is_system(actor) and owner_id != actor.pk:
        raise Forbidden("owner_must_be_creator", _("a service account is owned by the person who creates it"), "owner")
    try:
        SERVICE_NAME(name)
    except Exception as err:
        raise ServiceError(
            "invalid_name", _("service account names look like svc-<name> (lower case, digits, - _ .)"), field="name"
        ) from err
    if role not in ROLES or role not in (ANALYST, "guest"):
        raise ServiceError("service_account_role", _("service accounts may only be analyst or guest"), field="role")
    owner = get_or_404(
        User,
        "user_not_found",
        _("no active user with id %(owner_id)s") % {"owner_id": owner_id},
        pk=owner_id,
        is_active=True,
    )
    if Profile.objects.filter(user=owner, is_service_account=True).exists():
        raise ServiceError("invalid_owner", _("a service account cannot own another"), field="owner")
    try:
        with transaction.atomic():
            account = User.objects.create(username=name)
            account.set_unusable_password()
            account.save(update_fields=["password"])
            # the creation signal left a blank profile cached on `account`: keep the real one there
            account.profile, _created = Profile.objects.update_or_create(
                user=account, defaults={"is_service_account": True, "owner": owner}
            )
            account.groups.add(Group.objects.get(name=role))
            record_event(
                "auth.service_account.create",
                actor=actor,
                source=source,
                target=account,
                details={"after": {"name": name, "owner": owner.get_username(), "role": role}},
            )
    except IntegrityError as err:
        raise Conflict(
            "duplicate_user", _("a user named %(name)s already exists") % {"name": repr(name)}, "name"
        ) from err
    return account


def disable_dormant_accounts(now=None) -> list[str]:
    """Disable active accounts unused for DORMANT_ACCOUNT_AGE (等保 8.1.4.2 c). Use means a login,
    or for service accounts a token use; a never-used account counts from its creation."""
    now = now or timezone.now()
    cutoff = now - settings.DORMANT_ACCOUNT_AGE
    users = get_user_model().objects.filter(is_active=True).annotate(token_used=Max("api_tokens__last_used_at"))
    dormant = users.filter(
        (Q(last_login__lt=cutoff) | Q(last_login__isnull=True, date_joined__lt=cutoff))
        & (Q(token_used__isnull=True) | Q(token_used__lt=cutoff))
    )
    names = []
    for user in dormant:
        with transaction.atomic():
            if not get_user_model().objects.filter(pk=user.pk, is_active=True).update(is_active=False):
                continue
            policy_changed.send(sender=get_user_model())  # update() sends no post_save: tell the gateway
            Profile.objects.update_or_create(user=user, defaults={"disabled_reason": "dormant"})
            last = max(filter(None, [user.last_login, user.token_used]), default=None)
            sessions = end_sessions(user)
            record_event(
                "auth.account.disabled",
                actor=None,
                target=user,
                details={
                    "reason": "dormant",
                    "last_used": last.isoformat() if last else None,
                    "dormant_days": settings.DORMANT_ACCOUNT_AGE.days,
                    **({"sessions_ended": sessions} if sessions else {}),
                },
            )
            revoke_all_tokens(user=user, reason="account_disabled", actor=None)
        names.append(user.get_username())
    return names


def record_2fa_failure(*, user, source: Source = SYSTEM, code: str = "invalid_otp") -> None:
    """A refused second-factor code (or, with `code="enrolment_code_invalid"`, enrolment code)."""
    with transaction.atomic():
        record_event(
            "auth.2fa.failure",
            actor=user,
            source=source,
            target=user,
            outcome=Outcome.FAILURE,
            error_code=code,
        )


def note_superuser_use(user, *, source: Source = SYSTEM, via: str, path: str = "") -> None:
    """The superuser is a sealed break-glass account: its login, the first request of each of its
    sessions and every call with one of its tokens raise an alert event."""
    with transaction.atomic():
        record_event(
            "auth.superuser.use",
            actor=user,
            source=source,
            target=user,
            details={"alert": True, "via": via, "path": path},
        )


def apply_login_failure_rule(*, username: str, source: Source = SYSTEM) -> list[dict]:
    """The failed-login rate rule (HIPAA 164.308(a)(5)(ii)(C), log-in monitoring): more than
    LOGIN_ALERT_FAILURES - 1 refused logins for one user name (from any address) or from one
    address (for any names) within LOGIN_ALERT_MINUTES raise an alert event
    (`auth.login.failure_rate`, delivered through the alert channel), once per subject and window.
    Complements the lockout, which counts per (name, address) pair: a spray over many addresses or
    many names alerts here. Called after each `auth.login.failure`; returns the alerts raised."""
    from apps.audit.models import AuditEvent

    if not settings.LOGIN_ALERT_ENABLED:
        return []
    since = timezone.now() - timedelta(minutes=settings.LOGIN_ALERT_MINUTES)
    failures = AuditEvent.objects.filter(event_type="auth.login.failure", timestamp__gte=since)
    raised = []
    subjects = [("user", "target_display", username[:150])]
    if source.ip:
        subjects.append(("address", "source_ip", source.ip))
    with transaction.atomic():
        for rule, column, key in subjects:
            count = failures.filter(**{column: key}).count()
            if count < settings.LOGIN_ALERT_FAILURES:
                continue
            already = AuditEvent.objects.filter(
                event_type="auth.login.failure_rate", timestamp__gte=since, details__rule=rule, details__key=key
            )
            if already.exists():
                continue
            details = {
                "alert": True,
                "rule": rule,
                "key": key,
                "failures": count,
                "threshold": settings.LOGIN_ALERT_FAILURES,
                "window_minutes": settings.LOGIN_ALERT_MINUTES,
            }
            record_event(
                "auth.login.failure_rate",
                actor=None,
                source=source,
                target_type="auth.user" if rule == "user" else "",
                target_display=key if rule == "user" else "",
                outcome=Outcome.DENIED,
                error_code="login_failure_rate",
                details=details,
            )
            raised.append(details)
    return raised
