"""Checks of people and privileges: second factors, dormant, shared and default accounts, role
separation, break-glass and grants."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Max, Q

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


def _effective(ctx) -> dict[str, dict[str, list[str]]]:
    """{username: {exclusive role: [how]}} of active users, once per evaluation run."""
    from apps.accounts.selectors import effective_roles

    held = ctx.cache.get("effective_roles")
    if held is None:
        held = ctx.cache["effective_roles"] = effective_roles(now=ctx.now)
    return held


@register("access.privileged_2fa", proof="query")
def privileged_2fa(ctx) -> CheckResult:
    """Privileged means holding a privileged role effectively (apps.accounts.selectors): a role
    group, break-glass, the superuser flag, or a role's own power through a direct permission or
    another group. The 2FA gate enforces a second factor on the first three; a power held the other
    ways escapes it, so it fails here whatever the person's devices."""
    from apps.accounts.selectors import users_with_confirmed_device

    held = _effective(ctx)
    users = _active_users().filter(Q(pk__in=privileged_users().values("pk")) | Q(username__in=list(held)))
    gated = set(privileged_users().values_list("username", flat=True))
    outside = {
        name: sorted(how for hows in roles.values() for how in hows)
        for name, roles in held.items()
        if name not in gated and not any(how == "break-glass" for hows in roles.values() for how in hows)
    }
    enrolled = users_with_confirmed_device()  # TOTP or SM3 OTP devices
    missing = sorted(u.get_username() for u in users if u.pk not in enrolled)
    tokens = get_user_model().objects.filter(pk__in=users.values("pk"), api_tokens__revoked_at__isnull=True)
    evidence = {
        "privileged_users": users.count(),
        "without_confirmed_totp": missing[:LIST_LIMIT],
        "privileged_powers_outside_role_groups": dict(sorted(outside.items())[:LIST_LIMIT]),
        "gate_middleware": "apps.accounts.middleware.AccountGateMiddleware" in settings.MIDDLEWARE,
        "single_factor_api_tokens_of_privileged_users": tokens.count(),
    }
    if missing or outside or not evidence["gate_middleware"]:
        problems = [f"{len(missing)} privileged user(s) without a confirmed TOTP device"] if missing else []
        if outside:
            problems.append(
                f"{len(outside)} user(s) hold a privileged power outside a role group, which the 2FA gate does not "
                f"see: {', '.join(sorted(outside)[:5])}"
            )
        if not evidence["gate_middleware"]:
            problems.append("AccountGateMiddleware is not installed")
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Have each listed user enrol a TOTP device at /accounts/2fa/setup/, or remove their privileged role; "
            "remove privileged permissions given directly or through other groups (assign the role instead).",
        )
    return CheckResult(PASS, f"all {evidence['privileged_users']} privileged user(s) use a second factor", evidence)


@register("access.sm3_otp", proof="query")
def sm3_otp(ctx) -> CheckResult:
    """GB/T 39786 8.4 a in 国密 mode: the cryptographic authentication technique must be an approved
    algorithm. Reads every confirmed device of every privileged user: HMAC-SHA1 TOTP fails, SM3 OTP
    (GM/T 0021, apps.accounts.sm3otp) passes. Proves which algorithm verifies the codes; not that the
    person's token is a certified product."""
    from apps.accounts.selectors import SM3, confirmed_devices, device_algorithm, otp_algorithm

    users = list(privileged_users().order_by("username"))
    by_user = {}
    for u in users:
        by_user[u.get_username()] = sorted(device_algorithm(d) for d in confirmed_devices(u))
    sha1 = sorted(name for name, algs in by_user.items() if any(a != SM3 for a in algs))
    without = sorted(name for name, algs in by_user.items() if not algs)
    evidence = {
        "enrolment_algorithm": otp_algorithm(),
        "privileged_users": len(users),
        "devices_by_user": dict(list(by_user.items())[:LIST_LIMIT]),
        "totp_sha1_users": sha1[:LIST_LIMIT],
        "without_device": without[:LIST_LIMIT],
    }
    problems = []
    if sha1:
        problems.append(
            f"HMAC-SHA1 TOTP is not an approved 国密 algorithm: {len(sha1)} privileged user(s) hold TOTP-SHA1 devices"
        )
    if without:
        problems.append(f"{len(without)} privileged user(s) have no confirmed one-time-password device")
    if otp_algorithm() != SM3:
        problems.append(f"new enrolments use {otp_algorithm()}, not SM3 OTP")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Set SOVEREIGN_OTP_ALGORITHM=SM3 (the default in 国密 mode), remove the listed users' TOTP-SHA1 devices "
            "(a security officer, /api/v1/accounts/) and have them enrol an SM3 OTP token (GM/T 0021).",
        )
    if not users:
        return CheckResult(NA, "no privileged user", evidence)
    return CheckResult(PASS, f"all {len(users)} privileged user(s) authenticate with SM3 OTP (GM/T 0021)", evidence)


@register("accounts.unique_users", proof="query")
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


@register("accounts.no_default_credentials", proof="query")
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


@register("accounts.superuser_sealed", proof="query")
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


@register("accounts.dormant", proof="query")
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


def _role_conflicts(roles: frozenset[str], ctx) -> dict[str, dict[str, list[str]]]:
    """Active users holding more than one of `roles`, effectively (apps.accounts.selectors): by
    group, break-glass, the superuser flag, or any one of a role's own powers reaching them by a
    direct permission or another group. {username: {role: [how]}}."""
    out = {}
    for name, by_role in _effective(ctx).items():
        mine = {r: how for r, how in by_role.items() if r in roles}
        if len(mine) > 1:
            out[name] = mine
    return dict(sorted(out.items()))


def _active_superusers() -> list[str]:
    return sorted(_active_users().filter(is_superuser=True).values_list("username", flat=True))


@register("accounts.role_separation", proof="query")
def role_separation(ctx) -> CheckResult:
    conflicts = _role_conflicts(EXCLUSIVE, ctx)
    groups = set(Group.objects.filter(name__in=EXCLUSIVE).values_list("name", flat=True))
    supers = _active_superusers()
    evidence = {
        "exclusive_roles": sorted(EXCLUSIVE),
        "roles_present": sorted(groups),
        "users_holding_two": sorted(conflicts)[:LIST_LIMIT],
        "how_held": dict(list(conflicts.items())[:LIST_LIMIT]),
        "active_superusers": supers,
        "resolved_from": "role groups, break-glass grants, the superuser flag, direct user permissions and every "
        "group's permissions (each role's own powers), queried now",
    }
    if conflicts or groups != set(EXCLUSIVE):
        summary = f"{len(conflicts)} user(s) hold more than one of {', '.join(sorted(EXCLUSIVE))}"
        if supers:
            summary += f" (active superuser(s), who hold every role: {', '.join(supers[:5])})"
        if groups != set(EXCLUSIVE):
            summary += f"; missing role group(s): {', '.join(sorted(set(EXCLUSIVE) - groups))}"
        return CheckResult(
            FAIL,
            summary,
            evidence,
            "Remove the extra role from each listed user (apps.accounts.services.remove_role), the direct "
            "permissions and the extra group permissions named in how_held; keep the superuser inactive while it is "
            "not in emergency use (a security officer disables it: POST /api/v1/accounts/users/{id}/active/); run "
            "`migrate` to restore missing role groups.",
        )
    return CheckResult(
        PASS,
        "system, security and audit administration are held by different people (no active superuser)",
        evidence,
    )


@register("accounts.crypto_role_separation", proof="query")
def crypto_role_separation(ctx) -> CheckResult:
    key_perms = ("rotate_keyencryptionkey", "retire_keyencryptionkey")
    auditor_key_perms = sorted(
        Group.objects.filter(name=AUDITOR, permissions__codename__in=key_perms).values_list(
            "permissions__codename", flat=True
        )
    )
    both = _role_conflicts(frozenset({AUDITOR, SECURITY_OFFICER}), ctx)
    evidence = {
        "auditor_key_permissions": auditor_key_perms,
        "users_auditor_and_key_admin": sorted(both)[:LIST_LIMIT],
        "how_held": dict(list(both.items())[:LIST_LIMIT]),
        "active_superusers": _active_superusers(),
    }
    if auditor_key_perms or both:
        return CheckResult(
            FAIL,
            "the cryptography auditor can also administer keys" + (f": {', '.join(sorted(both)[:5])}" if both else ""),
            evidence,
            "Remove key-management permissions from the auditor role, split the listed users' roles (and direct "
            "permissions), and keep the superuser inactive while it is not in emergency use.",
        )
    return CheckResult(PASS, "auditors cannot rotate or retire keys, and no auditor is a key administrator", evidence)


BREAK_GLASS_WINDOW = timedelta(days=30)


@register("accounts.break_glass_audited", proof="query")
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


@register("access.grant_expiry", proof="query")
def grant_expiry(ctx) -> CheckResult:
    from apps.accounts.models import ModelGroupGrant, ModelUserGrant

    from ..effective import phi_model_ids

    phi = phi_model_ids()
    if not phi:
        return CheckResult(NA, "no model receives PHI or personal information", {"phi_models": 0})
    open_user = ModelUserGrant.objects.filter(content_object_id__in=phi, expires_at__isnull=True)
    open_group = ModelGroupGrant.objects.filter(content_object_id__in=phi, expires_at__isnull=True)
    related = ("content_object", "permission")
    rows = [
        f"{g.user} on {g.content_object} ({g.permission.codename})"
        for g in open_user.select_related("user", *related)[:LIST_LIMIT]
    ]
    rows += [
        f"group {g.group} on {g.content_object} ({g.permission.codename})"
        for g in open_group.select_related("group", *related)[:LIST_LIMIT]
    ]
    evidence = {"phi_models": len(phi), "grants_without_expiry": rows[:LIST_LIMIT]}
    if rows:
        return CheckResult(
            FAIL,
            f"{len(rows)} grant(s) on PHI models never expire",
            evidence,
            "Revoke the listed grants and grant them again with an expiry (expires_at).",
        )
    return CheckResult(PASS, "every grant on a PHI model expires", evidence)
