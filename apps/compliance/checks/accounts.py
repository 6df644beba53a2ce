"""Checks of people and privileges: second factors, dormant, shared and default accounts, role
separation, break-glass and grants."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Count, Max, Q

from apps.accounts.roles import AUDITOR, EXCLUSIVE, PRIVILEGED, SECURITY_OFFICER
from apps.core.demo import DEMO_ACCOUNTS, DEMO_TOKEN

from . import FAIL, NA, PASS, CheckResult, register

SHARED_NAMES = frozenset({"admin", "administrator", "root", "shared", "team", "test", "user", "operator", "demo"})
# Passwords an installer, a tutorial or a hurried person leaves behind. `make run` gives its demo
# accounts random passwords (printed once) and never creates a superuser; what it leaves behind is
# the demo accounts themselves and their token, which have no place in production.
DEFAULT_PASSWORDS = ("admin", "password", "changeme", "sovereign", "admin123", "123456")
LIST_LIMIT = 50


def _active_users():
    return get_user_model().objects.filter(is_active=True)


def privileged_users():
    return _active_users().filter(Q(is_superuser=True) | Q(groups__name__in=PRIVILEGED)).distinct()


@register("access.privileged_2fa")
def privileged_2fa(ctx) -> CheckResult:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    users = privileged_users()
    enrolled = set(TOTPDevice.objects.filter(confirmed=True, user__in=users).values_list("user_id", flat=True))
    missing = sorted(u.get_username() for u in users if u.pk not in enrolled)
    tokens = get_user_model().objects.filter(pk__in=users.values("pk"), api_tokens__revoked_at__isnull=True)
    evidence = {
        "privileged_users": users.count(),
        "without_confirmed_totp": missing[:LIST_LIMIT],
        "gate_middleware": "apps.accounts.middleware.AccountGateMiddleware" in settings.MIDDLEWARE,
        "single_factor_api_tokens_of_privileged_users": tokens.count(),
    }
    if missing or not evidence["gate_middleware"]:
        return CheckResult(
            FAIL,
            f"{len(missing)} privileged user(s) without a confirmed TOTP device"
            + ("" if evidence["gate_middleware"] else "; AccountGateMiddleware is not installed"),
            evidence,
            "Have each listed user enrol a TOTP device at /accounts/2fa/setup/, or remove their privileged role.",
        )
    return CheckResult(PASS, f"all {evidence['privileged_users']} privileged user(s) use a second factor", evidence)


@register("access.api_requires_auth")
def api_requires_auth(ctx) -> CheckResult:
    classes = settings.REST_FRAMEWORK.get("DEFAULT_PERMISSION_CLASSES", [])
    evidence = {"DEFAULT_PERMISSION_CLASSES": classes}
    if classes != ["apps.core.permissions.ActionPermission"]:
        return CheckResult(
            FAIL,
            "the API's default permission is not ActionPermission",
            evidence,
            'Set REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"] to ["apps.core.permissions.ActionPermission"].',
        )
    return CheckResult(PASS, "every API route requires an authenticated, authorised caller", evidence)


@register("accounts.unique_users")
def unique_users(ctx) -> CheckResult:
    shared = sorted(
        u
        for u in _active_users().filter(profile__is_service_account=False).values_list("username", flat=True)
        if u.lower() in SHARED_NAMES
    )
    no_profile = sorted(
        u
        for u in _active_users().filter(profile__isnull=True).values_list("username", flat=True)
        if u.lower() in SHARED_NAMES
    )
    names = sorted(set(shared) | set(no_profile))
    evidence = {"active_accounts": _active_users().count(), "generic_names": names}
    if names:
        return CheckResult(
            FAIL,
            f"{len(names)} active account(s) with a generic, shareable name",
            evidence,
            "Create a named account per person, move roles to it and disable the generic account.",
        )
    return CheckResult(PASS, "no active account has a generic shareable name", evidence)


@register("accounts.no_default_credentials")
def no_default_credentials(ctx) -> CheckResult:
    """Default passwords on the accounts installers and demos leave (generic names, superusers,
    the demo accounts), and, in production, the demo accounts and demo token of `make run`."""
    from apps.accounts.models import ApiToken

    demo = _active_users().filter(Q(username__in=DEMO_ACCOUNTS) | Q(username__istartswith="demo-"))
    demo_names = sorted(demo.values_list("username", flat=True))
    demo_tokens = ApiToken.objects.filter(name=DEMO_TOKEN, revoked_at__isnull=True, expires_at__gt=ctx.now).count()
    # Hashing is slow on purpose: try only the accounts an installer or a demo creates.
    users = _active_users().filter(Q(username__in=SHARED_NAMES) | Q(is_superuser=True) | Q(pk__in=demo.values("pk")))
    found = sorted(
        u.get_username()
        for u in users
        if u.has_usable_password() and any(u.check_password(p) for p in DEFAULT_PASSWORDS)
    )
    evidence = {
        "production": settings.PRODUCTION,
        "accounts_tried": users.count(),
        "passwords_tried": len(DEFAULT_PASSWORDS),
        "default_credentials": found,
        "demo_accounts_active": demo_names,
        "demo_tokens_live": demo_tokens,
    }
    problems = [f"{len(found)} account(s) still use a default password"] if found else []
    if settings.PRODUCTION and (demo_names or demo_tokens):
        problems.append(
            f"{len(demo_names)} demo account(s) and {demo_tokens} demo token(s) of `make run` in production"
        )
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Change the listed accounts' passwords. In production disable the demo accounts "
            "(POST /api/v1/accounts/users/{id}/active/ with is_active false, which also revokes their tokens); "
            "bootstrap_demo is for development installations only.",
        )
    summary = "no installer or demo account uses a default password"
    if demo_names:
        summary += (
            f" ({len(demo_names)} demo account(s) of `make run`: expected in development, a failure in production)"
        )
    return CheckResult(PASS, summary, evidence)


@register("accounts.superuser_sealed")
def superuser_sealed(ctx) -> CheckResult:
    """The superuser is a sealed break-glass account (docs/access-control.md): once it has been used
    (a login, or one of its tokens) since its password was last set on the host, or when it changed
    its own password (then whoever used it knows the new one), or while it holds a live token, it
    is open until it is resealed on the host."""
    from apps.accounts.models import ApiToken
    from apps.audit.models import AuditEvent

    supers = list(_active_users().filter(is_superuser=True).select_related("profile").order_by("username"))
    opened = [row for row in (_superuser_state(u, ctx.now) for u in supers) if row["open"]]
    since = ctx.now - timedelta(days=30)
    evidence = {
        "active_superusers": [u.get_username() for u in supers],
        "open": opened[:LIST_LIMIT],
        "superuser_use_events_30_days": AuditEvent.objects.filter(
            event_type="auth.superuser.use", timestamp__gte=since
        ).count(),
        "live_superuser_tokens": ApiToken.objects.filter(
            user__in=supers, revoked_at__isnull=True, expires_at__gt=ctx.now
        ).count(),
    }
    if opened:
        return CheckResult(
            FAIL,
            f"{len(opened)} superuser account(s) used or opened since last sealed",
            evidence,
            "Review the account's auth.superuser.use events, revoke its tokens, then reseal it on the host: "
            "`manage.py changepassword NAME` with a new password kept under dual control.",
        )
    return CheckResult(PASS, f"{len(supers)} superuser account(s), all sealed (unused since last set)", evidence)


def _superuser_state(user, now) -> dict:
    from apps.accounts.models import ApiToken
    from apps.audit.models import AuditEvent

    profile = getattr(user, "profile", None)
    sealed_at = profile.password_changed_at if profile is not None else user.date_joined
    tokens = ApiToken.objects.filter(user=user)
    live = tokens.filter(revoked_at__isnull=True, expires_at__gt=now).count()
    token_used = tokens.aggregate(last=Max("last_used_at"))["last"]
    # A change on its own page writes auth.password.change in the password's transaction; the
    # host's `manage.py changepassword` writes none.
    self_changed = AuditEvent.objects.filter(
        event_type="auth.password.change", actor=user, timestamp__gte=sealed_at - timedelta(seconds=5)
    ).exists()
    used = [t for t in (user.last_login, token_used) if t is not None and t > sealed_at]
    return {
        "user": user.get_username(),
        "password_set": sealed_at.isoformat(),
        "last_used": max(used).isoformat() if used else None,
        "changed_own_password": self_changed,
        "live_tokens": live,
        "open": bool(used or self_changed or live),
    }


@register("accounts.dormant")
def dormant(ctx) -> CheckResult:
    cutoff = ctx.now - settings.DORMANT_ACCOUNT_AGE
    users = _active_users().annotate(token_used=Max("api_tokens__last_used_at"))
    stale = users.filter(
        (Q(last_login__lt=cutoff) | Q(last_login__isnull=True, date_joined__lt=cutoff))
        & (Q(token_used__isnull=True) | Q(token_used__lt=cutoff))
    )
    names = sorted(stale.values_list("username", flat=True))
    evidence = {"dormant_after_days": settings.DORMANT_ACCOUNT_AGE.days, "dormant_active_accounts": names[:LIST_LIMIT]}
    if names or settings.DORMANT_ACCOUNT_AGE.days > 90:
        return CheckResult(
            FAIL,
            f"{len(names)} active account(s) unused for more than {settings.DORMANT_ACCOUNT_AGE.days} days",
            evidence,
            "Run apps.accounts.tasks.disable_dormant_accounts from Celery beat; keep SOVEREIGN_DORMANT_DAYS ≤ 90.",
        )
    return CheckResult(PASS, "no dormant account is active", evidence)


def _role_conflicts(roles: frozenset[str]) -> list[str]:
    held = (
        _active_users()
        .annotate(n=Count("groups", filter=Q(groups__name__in=roles), distinct=True))
        .filter(n__gt=1)
        .values_list("username", flat=True)
    )
    return sorted(held)


@register("accounts.role_separation")
def role_separation(ctx) -> CheckResult:
    conflicts = _role_conflicts(EXCLUSIVE)
    groups = set(Group.objects.filter(name__in=EXCLUSIVE).values_list("name", flat=True))
    evidence = {"exclusive_roles": sorted(EXCLUSIVE), "roles_present": sorted(groups), "users_holding_two": conflicts}
    if conflicts or groups != set(EXCLUSIVE):
        return CheckResult(
            FAIL,
            f"{len(conflicts)} user(s) hold more than one of {', '.join(sorted(EXCLUSIVE))}",
            evidence,
            "Remove the extra role from each listed user (apps.accounts.services.remove_role); run `migrate` to "
            "restore missing role groups.",
        )
    return CheckResult(PASS, "system, security and audit administration are held by different people", evidence)


@register("accounts.crypto_role_separation")
def crypto_role_separation(ctx) -> CheckResult:
    key_perms = ("rotate_keyencryptionkey", "retire_keyencryptionkey")
    auditor_key_perms = sorted(
        Group.objects.filter(name=AUDITOR, permissions__codename__in=key_perms).values_list(
            "permissions__codename", flat=True
        )
    )
    both = _role_conflicts(frozenset({AUDITOR, SECURITY_OFFICER}))
    evidence = {"auditor_key_permissions": auditor_key_perms, "users_auditor_and_key_admin": both}
    if auditor_key_perms or both:
        return CheckResult(
            FAIL,
            "the cryptography auditor can also administer keys",
            evidence,
            "Remove key-management permissions from the auditor role and split the listed users' roles.",
        )
    return CheckResult(PASS, "auditors cannot rotate or retire keys, and no auditor is a key administrator", evidence)


BREAK_GLASS_WINDOW = timedelta(days=30)


@register("accounts.break_glass_audited")
def break_glass_audited(ctx) -> CheckResult:
    """Every break-glass activation of the last 30 days (a grant of an emergency role, a use of the
    sealed superuser) has its audit event and an alert the channel acknowledged (2xx); an alert
    channel is configured, so the next one reaches someone."""
    from apps.accounts.models import EmergencyAccess
    from apps.audit.models import AuditEvent
    from apps.audit.selectors import alert_channel, alert_deliveries

    since = ctx.now - BREAK_GLASS_WINDOW
    grants = list(EmergencyAccess.objects.filter(granted_at__gte=since).select_related("user").order_by("granted_at"))
    uses = list(AuditEvent.objects.filter(event_type="auth.superuser.use", timestamp__gte=since).order_by("timestamp"))
    rows = [_grant_row(g) for g in grants] + [_activation_row(e, f"superuser {e.actor_name} used") for e in uses]
    delivered = set(
        alert_deliveries()
        .filter(event_id__in=[r["event"] for r in rows if r["event"]], acknowledged_at__isnull=False)
        .values_list("event_id", flat=True)
    )
    unaudited = [r["what"] for r in rows if r["event"] is None]
    unalerted = [r["what"] for r in rows if r["event"] is not None and r["event"] not in delivered]
    channel = alert_channel()
    evidence = {
        "window_days": BREAK_GLASS_WINDOW.days,
        "break_glass_grants": len(grants),
        "superuser_uses": len(uses),
        "without_audit_event": unaudited[:LIST_LIMIT],
        "without_delivered_alert": unalerted[:LIST_LIMIT],
        "alert_channel": channel["channel"],
        "active_break_glass_grants": sum(1 for g in grants if g.is_active(ctx.now)),
        "max_hours": settings.BREAK_GLASS_MAX.total_seconds() / 3600,
    }
    problems = []
    if not channel["configured"]:
        problems.append("no alert channel is configured: a break-glass activation alerts nobody")
    if unaudited:
        problems.append(f"{len(unaudited)} break-glass activation(s) without their audit event")
    if unalerted:
        problems.append(f"{len(unalerted)} break-glass activation(s) whose alert was not delivered")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Configure SOVEREIGN_ALERT_WEBHOOK_URL and prove it (`manage.py send_test_alert`); review each listed "
            "activation with the security team, since nobody was told of it when it happened.",
        )
    return CheckResult(
        PASS,
        f"{len(rows)} break-glass activation(s) in {BREAK_GLASS_WINDOW.days} days, each audited and its alert "
        "delivered",
        evidence,
    )


def _grant_row(grant) -> dict:
    from apps.audit.models import AuditEvent

    events = AuditEvent.objects.filter(
        event_type="auth.breakglass.grant", target_type="auth.user", target_id=str(grant.user_id)
    )
    event = (
        events.filter(details__access_id=grant.pk).first()
        or events.filter(details__expires_at=grant.expires_at.isoformat()).first()  # events before access_id
    )
    return _activation_row(event, f"{grant.role} to {grant.user.get_username()} at {grant.granted_at:%Y-%m-%d %H:%M}")


def _activation_row(event, what: str) -> dict:
    return {"event": event.pk if event is not None else None, "what": what}


@register("access.grant_expiry")
def grant_expiry(ctx) -> CheckResult:
    from apps.accounts.models import ModelGroupGrant, ModelUserGrant

    from ..effective import phi_model_ids

    phi = phi_model_ids()
    if not phi:
        return CheckResult(NA, "no model receives PHI or personal information", {"phi_models": 0})
    open_user = ModelUserGrant.objects.filter(content_object_id__in=phi, expires_at__isnull=True)
    open_group = ModelGroupGrant.objects.filter(content_object_id__in=phi, expires_at__isnull=True)
    rows = [f"{g.user} on {g.content_object}" for g in open_user.select_related("user", "content_object")[:LIST_LIMIT]]
    rows += [f"group {g.group} on {g.content_object}" for g in open_group.select_related("group", "content_object")]
    evidence = {"phi_models": len(phi), "grants_without_expiry": rows[:LIST_LIMIT]}
    if rows:
        return CheckResult(
            FAIL,
            f"{len(rows)} grant(s) on PHI models never expire",
            evidence,
            "Revoke the listed grants and grant them again with an expiry (expires_at).",
        )
    return CheckResult(PASS, "every grant on a PHI model expires", evidence)
