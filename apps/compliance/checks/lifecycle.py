"""Checks of the access life cycle (HIPAA 164.308(a)(3)(ii)(C) termination, 164.308(a)(4)(ii)(B,C)
access authorisation; 等保 8.1.4.2): disabled people keep no credential and lose access within a
bounded time; every live model grant has a grantor and was made through the audited service."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q

from . import FAIL, PASS, CheckResult, register

LIST_LIMIT = 50
# HIPAA asks that access end "as soon as possible" after employment ends; the data plane's policy
# snapshot must not keep serving a disabled person longer than this (`max_seconds_to_lose_access`
# in the evaluation context overrides it; the catalogue has no such option today).
MAX_SECONDS_TO_LOSE_ACCESS = 60.0
# A grant row and its audit event are written in one transaction, the row first.
EVENT_LAG = timedelta(seconds=60)
DB_SESSION_ENGINES = ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db")


@register("accounts.termination", proof="query")
def termination(ctx) -> CheckResult:
    """Disabled accounts (is_active false) hold no live token, no live session, and issued no live
    token someone else still uses; the configured worst case from disabling a person to the gateway
    refusing them is within the limit."""
    from apps.accounts.models import ApiToken, EmergencyAccess, ModelUserGrant

    inactive = get_user_model().objects.filter(is_active=False)
    live = ApiToken.objects.filter(revoked_at__isnull=True, expires_at__gt=ctx.now)
    own = live.filter(user__in=inactive).select_related("user").order_by("user__username")
    issued = live.filter(created_by__in=inactive).exclude(user__in=inactive)
    issued = issued.select_related("user", "created_by").order_by("created_by__username")
    sessions, session_note = _live_sessions_of(set(inactive.values_list("pk", flat=True)), ctx.now)
    limit = float(ctx.options.get("max_seconds_to_lose_access", MAX_SECONDS_TO_LOSE_ACCESS))
    timing = _time_to_lose_access()
    evidence = {
        "inactive_accounts": inactive.count(),
        "live_tokens_of_inactive_accounts": [f"{t.user.get_username()}: token {t.pk} {t.name!r}" for t in own][
            :LIST_LIMIT
        ],
        "live_tokens_issued_by_inactive_accounts": [
            f"{t.created_by.get_username()} issued token {t.pk} {t.name!r} of {t.user.get_username()}" for t in issued
        ][:LIST_LIMIT],
        "live_sessions_of_inactive_accounts": sessions[:LIST_LIMIT],
        "sessions": session_note,
        "inert_grants_of_inactive_accounts": ModelUserGrant.objects.filter(user__in=inactive).count(),
        "inert_break_glass_of_inactive_accounts": EmergencyAccess.objects.filter(
            user__in=inactive, revoked_at__isnull=True, expires_at__gt=ctx.now
        ).count(),
        "inert_because": "every credential path refuses an inactive user: token_refusal (`user_inactive`) on the "
        "API and the data plane, RoleBackend.user_can_authenticate for sessions",
        **timing,
        "max_seconds_allowed": limit,
        "queried_at": ctx.now.isoformat(),
    }
    problems = []
    if own:
        problems.append(f"{len(own)} live token(s) of disabled account(s): {_names(t.user for t in own)}")
    if issued:
        problems.append(
            f"{len(issued)} live token(s) issued by disabled person(s), who saw their plaintext: "
            f"{_names(t.created_by for t in issued)}"
        )
    if sessions:
        problems.append(f"{len(sessions)} live session(s) of disabled account(s): {', '.join(sorted(set(sessions)))}")
    if session_note.startswith("not visible"):
        problems.append("sessions are not stored in the database, so they cannot be checked")
    if timing["worst_case_seconds_to_lose_access"] > limit:
        problems.append(
            f"a disabled person may keep gateway access for up to {timing['worst_case_seconds_to_lose_access']:g} s "
            f"(limit {limit:g} s)"
        )
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Disable people only through the service (POST /api/v1/accounts/users/{id}/active/ with is_active false: "
            "it revokes their tokens and ends their sessions in the same transaction); revoke the listed tokens "
            "(and reissue a service account's token by someone still employed); keep SOVEREIGN_POLICY_MAX_AGE and "
            "SOVEREIGN_POLICY_HARD_LIMIT at or under the limit.",
        )
    return CheckResult(
        PASS,
        f"{evidence['inactive_accounts']} disabled account(s) hold no live token or session; the gateway refuses a "
        f"disabled person within {timing['worst_case_seconds_to_lose_access']:g} s at worst",
        evidence,
    )


def _names(users) -> str:
    return ", ".join(sorted({u.get_username() for u in users})[:10])


def _live_sessions_of(user_ids: set[int], now) -> tuple[list[str], str]:
    """User names of the unexpired database sessions of `user_ids` (decoding each live session:
    the user id is inside the signed session data)."""
    if settings.SESSION_ENGINE not in DB_SESSION_ENGINES:
        return [], f"not visible: SESSION_ENGINE is {settings.SESSION_ENGINE}"
    from django.contrib.sessions.models import Session

    wanted = {str(pk) for pk in user_ids}
    names = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    found, total = [], 0
    for session in Session.objects.filter(expire_date__gt=now).iterator():
        total += 1
        uid = session.get_decoded().get("_auth_user_id")
        if uid in wanted:
            found.append(names[int(uid)])
    return sorted(found), f"{total} unexpired database session(s) decoded"


def _time_to_lose_access() -> dict:
    """What bounds the time from disabling a person to the last call served to them. The API and
    the portal read the database on every request (0 s). The data plane decides on its policy
    snapshot: rebuilt on the change's commit (NOTIFY / epoch poll, under a second), at least every
    SOVEREIGN_POLICY_MAX_AGE seconds when a notification is lost or a write bypassed the services,
    and served while rebuilds fail for up to SOVEREIGN_POLICY_HARD_LIMIT seconds."""
    max_age, hard = float(settings.POLICY_MAX_AGE), float(settings.POLICY_HARD_LIMIT)
    return {
        "api_and_portal_seconds": 0,
        "dataplane_on_notification": "rebuilt when the disabling transaction commits (measured < 1 s by the tests)",
        "dataplane_policy_max_age_seconds": max_age,
        "dataplane_policy_hard_limit_seconds": hard,
        "worst_case_seconds_to_lose_access": max(max_age, hard),
    }


@register("access.authorisation", proof="query")
def authorisation(ctx) -> CheckResult:
    """Every live model grant (user or group, unexpired) has a grantor and an `access.grant.create`
    event of the audited service that matches it — same model, grantee, permission and expiry,
    written within a minute after the grant row — not followed by a revoke or expiry of it."""
    from apps.accounts.models import ModelGroupGrant, ModelUserGrant
    from apps.audit.models import AuditEvent

    grants = []
    for table, key in ((ModelUserGrant, "user"), (ModelGroupGrant, "group")):
        live = table.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=ctx.now))
        for g in live.select_related(key, "permission", "content_object", "granted_by"):
            grants.append((key, g))
    events = _grant_events(AuditEvent, {g.content_object_id for _, g in grants})
    unaudited, mismatched, by_system, no_expiry = [], [], [], 0
    for key, g in grants:
        grantee = getattr(g, key)
        label = f"{g.permission.codename} on {g.content_object} to {key} {grantee}"
        event = _matching_create(events.get(g.content_object_id, []), key, grantee, g)
        if event is None:
            unaudited.append(label)
            continue
        if g.granted_by_id != event.actor_id:
            mismatched.append(f"{label}: row says {g.granted_by}, the audit trail {event.actor_name or 'the system'}")
        elif g.granted_by_id is None:
            by_system.append(label)  # the host (a management command): its event is the grantor's record
        no_expiry += g.expires_at is None
    evidence = {
        "live_grants": len(grants),
        "grants_without_audit_trail": unaudited[:LIST_LIMIT],
        "grantor_differs_from_audit_trail": mismatched[:LIST_LIMIT],
        "grants_by_the_system": by_system[:LIST_LIMIT],
        "grants_without_expiry": no_expiry,
        "matched_on": "access.grant.create events: model, grantee id (or name), permission, expiry, written "
        f"within {EVENT_LAG.seconds} s after the grant row, and no later revoke or expiry of it",
        "queried_at": ctx.now.isoformat(),
    }
    problems = []
    if unaudited:
        problems.append(f"{len(unaudited)} live grant(s) without an audit trail: {'; '.join(unaudited[:5])}")
    if mismatched:
        problems.append(f"{len(mismatched)} grant(s) whose grantor differs from the audit trail")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Investigate how the listed grants were written (they bypassed apps.accounts.services.grants); revoke "
            "them and, where access is still justified, grant again through POST /api/v1/accounts/grants/.",
        )
    return CheckResult(
        PASS,
        f"all {len(grants)} live grant(s) were made through the audited service by a named grantor"
        + (f" ({no_expiry} without expiry; access.grant_expiry judges those on PHI models)" if no_expiry else ""),
        evidence,
    )


def _grant_events(AuditEvent, model_ids: set[int]) -> dict[int, list]:
    rows = AuditEvent.objects.filter(
        event_type__in=("access.grant.create", "access.grant.revoke", "access.grant.expire"),
        target_type="registry.model",
        target_id__in=[str(pk) for pk in model_ids],
    ).order_by("timestamp", "pk")
    out: dict[int, list] = defaultdict(list)
    for event in rows:
        out[int(event.target_id)].append(event)
    return out


def _names_grantee(event, key: str, grantee) -> bool:
    details = event.details or {}
    if "grantee_id" in details:
        return details["grantee"].split(":", 1)[0] == key and details["grantee_id"] == grantee.pk
    return details.get("grantee") == f"{key}:{grantee}"


def _matching_create(events: list, key: str, grantee, grant):
    """The create event that made this grant as it is now, unless a later event took it away."""
    perm, expiry = grant.permission.codename, grant.expires_at.isoformat() if grant.expires_at else None
    found = None
    for event in events:
        details = event.details or {}
        if not _names_grantee(event, key, grantee) or perm not in details.get("permissions", []):
            continue
        if event.event_type == "access.grant.create":
            window = grant.granted_at <= event.timestamp <= grant.granted_at + EVENT_LAG
            found = event if window and details.get("expires_at") == expiry else found
        elif found is not None:
            found = None  # revoked or expired after the matching grant: this row outlived it
    return found
