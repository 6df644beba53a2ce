"""Checks of configuration: TLS, session lifetime, lockout, password policy, deployment checks."""

from __future__ import annotations

from django.conf import settings

from . import FAIL, PASS, CheckResult, register

MAX_IDLE_MINUTES = 15
MIN_HSTS_SECONDS = 31536000


def override_evidence(name: str) -> dict:
    """`{"insecure_override": ...}` when SOVEREIGN_INSECURE_OVERRIDE lets production run with the
    weakness `name` (apps/core/production.py), else `{}`. A check given this evidence fails, and its
    evidence names the override and the audit event that recorded it (None if none did yet)."""
    from apps.audit.selectors import latest_event
    from apps.core.production import EVENT, OVERRIDE_VAR, in_effect

    problems = in_effect(settings)
    if name not in problems:
        return {}
    event = latest_event(EVENT)  # recorded by apps/audit/platform.py
    recorded = event is not None and name in (event["details"] or {}).get("in_effect", [])
    return {
        "insecure_override": {
            "setting": f"{OVERRIDE_VAR}={name}",
            "problem": problems[name],
            "audit_event": event["id"] if recorded else None,
            "recorded_at": event["timestamp"].isoformat() if recorded else None,
        }
    }


def override_note(evidence: dict) -> str:
    found = evidence.get("insecure_override")
    return f" (allowed by {found['setting']})" if found else ""


@register("settings.idle_timeout", proof="query")
def idle_timeout(ctx) -> CheckResult:
    idle = getattr(settings, "SESSION_IDLE_TIMEOUT", None)
    absolute = getattr(settings, "SESSION_ABSOLUTE_TIMEOUT", None)
    middleware = "apps.accounts.middleware.SessionLifetimeMiddleware" in settings.MIDDLEWARE
    evidence = {
        "SESSION_IDLE_TIMEOUT_minutes": idle.total_seconds() / 60 if idle else None,
        "SESSION_ABSOLUTE_TIMEOUT_hours": absolute.total_seconds() / 3600 if absolute else None,
        "SessionLifetimeMiddleware": middleware,
    }
    problems = []
    if not idle or idle.total_seconds() <= 0 or idle.total_seconds() > MAX_IDLE_MINUTES * 60:
        problems.append(f"the idle timeout is {evidence['SESSION_IDLE_TIMEOUT_minutes']} minutes (at most 15)")
    if not middleware:
        problems.append("SessionLifetimeMiddleware is not installed, so no timeout is enforced")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Set SOVEREIGN_SESSION_IDLE_MINUTES to 15 or less and keep SessionLifetimeMiddleware in MIDDLEWARE.",
        )
    return CheckResult(PASS, f"sessions end after {evidence['SESSION_IDLE_TIMEOUT_minutes']:g} idle minutes", evidence)


@register("settings.tls", proof="query")
def tls(ctx) -> CheckResult:
    evidence = {
        "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
        "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
        "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
        "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
    }
    problems = [k for k in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE") if not evidence[k]]
    if (settings.SECURE_HSTS_SECONDS or 0) < MIN_HSTS_SECONDS:
        problems.append(f"SECURE_HSTS_SECONDS < {MIN_HSTS_SECONDS}")
    evidence.update(override_evidence("no_tls"))
    if problems or "insecure_override" in evidence:
        return CheckResult(
            FAIL,
            "not TLS-only: " + ", ".join(problems) + override_note(evidence),
            evidence,
            "Set SOVEREIGN_SSL_REDIRECT=true, SOVEREIGN_HSTS_SECONDS=31536000 and SOVEREIGN_SECURE_COOKIES=true.",
        )
    return CheckResult(PASS, "HTTPS redirect, HSTS and secure cookies are on", evidence)


@register("settings.lockout", proof="query")
def lockout(ctx) -> CheckResult:
    limit = getattr(settings, "AXES_FAILURE_LIMIT", None)
    cooloff = getattr(settings, "AXES_COOLOFF_TIME", None)
    evidence = {
        "AXES_FAILURE_LIMIT": limit,
        "AXES_COOLOFF_TIME_minutes": cooloff.total_seconds() / 60 if hasattr(cooloff, "total_seconds") else cooloff,
        "axes_installed": "axes" in settings.INSTALLED_APPS,
        "axes_backend": any("axes" in b for b in settings.AUTHENTICATION_BACKENDS),
        "axes_middleware": "axes.middleware.AxesMiddleware" in settings.MIDDLEWARE,
        "AXES_ENABLED": getattr(settings, "AXES_ENABLED", True),
    }
    problems = [k for k in ("axes_installed", "axes_backend", "axes_middleware", "AXES_ENABLED") if not evidence[k]]
    if not isinstance(limit, int) or not 1 <= limit <= 10:
        problems.append(f"AXES_FAILURE_LIMIT is {limit!r} (1-10 required)")
    if problems:
        return CheckResult(
            FAIL,
            "login failures are not handled: " + ", ".join(problems),
            evidence,
            "Keep django-axes installed and enabled and set SOVEREIGN_LOCKOUT_FAILURES between 1 and 10.",
        )
    return CheckResult(PASS, f"accounts lock after {limit} failed logins", evidence)


@register("settings.password_policy", proof="query")
def password_policy(ctx) -> CheckResult:
    validators = {v["NAME"].rsplit(".", 1)[-1]: v.get("OPTIONS", {}) for v in settings.AUTH_PASSWORD_VALIDATORS}
    min_length = validators.get("MinimumLengthValidator", {}).get("min_length", 8)
    max_age = getattr(settings, "PASSWORD_MAX_AGE", None)
    evidence = {
        "validators": sorted(validators),
        "min_length": min_length if "MinimumLengthValidator" in validators else None,
        "PASSWORD_MAX_AGE_days": max_age.days if max_age else None,
    }
    problems = [
        f"{name} missing"
        for name in ("MinimumLengthValidator", "CommonPasswordValidator", "NumericPasswordValidator")
        if name not in validators
    ]
    if "MinimumLengthValidator" in validators and min_length < 8:
        problems.append(f"minimum length {min_length} < 8")
    if not max_age or max_age.days <= 0 or max_age.days > 90:
        problems.append("PASSWORD_MAX_AGE is not between 1 and 90 days")
    if problems:
        return CheckResult(
            FAIL,
            "password policy too weak: " + "; ".join(problems),
            evidence,
            "Restore the password validators in settings and set SOVEREIGN_PASSWORD_MAX_AGE_DAYS to 90 or less.",
        )
    return CheckResult(PASS, f"passwords ≥ {min_length} characters, changed every {max_age.days} days", evidence)


@register("settings.deploy_check", proof="probe")
def deploy_check(ctx) -> CheckResult:
    from django.core import checks

    from apps.core.production import in_effect

    messages = checks.run_checks(include_deployment_checks=True, tags=[checks.Tags.security])
    found = [f"{m.id}: {m.msg.splitlines()[0][:160]}" for m in messages if m.level >= checks.WARNING]
    evidence = {"warnings": found, "DEBUG": settings.DEBUG, "insecure_overrides": in_effect(settings)}
    evidence.update(override_evidence("debug"))
    if found or settings.DEBUG or evidence["insecure_overrides"]:
        return CheckResult(
            FAIL,
            f"`check --deploy` reports {len(found)} security warning(s)"
            + ("; DEBUG is on" if settings.DEBUG else "")
            + override_note(evidence),
            evidence,
            "Run `python manage.py check --deploy` and fix each warning listed in the evidence.",
        )
    return CheckResult(PASS, "`check --deploy` reports no security warning", evidence)
