"""Checks of the audit log: the chain verifies, the sealer keeps up, rows are append-only,
retention is long enough, only auditors read it, events name their user."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.models import Q

from . import FAIL, NA, PASS, CheckResult, register
from .settings import override_evidence, override_note

SEALER_LAG = timedelta(minutes=5)


def chain_report(ctx) -> dict:
    """Verify once per evaluation run (several controls cite it)."""
    if "chain" not in ctx.cache:
        from apps.audit.selectors import verify_chain

        ctx.cache["chain"] = verify_chain()
    return ctx.cache["chain"]


@register("audit.chain_verifies", proof="probe")
def chain_verifies(ctx) -> CheckResult:
    report = chain_report(ctx)
    evidence = {k: report.get(k) for k in ("ok", "last_sequence", "problem", "pending", "detail")}
    evidence["chain_status"] = report.get("status")
    if not report["ok"]:
        return CheckResult(
            FAIL,
            f"the audit chain does not verify: {report.get('detail')}",
            evidence,
            "Stop and investigate: compare with the last exported archive from the first bad sequence; "
            "run `python manage.py audit_verify` for the full report.",
        )
    return CheckResult(PASS, f"the audit chain verifies ({report.get('status')})", evidence)


@register("audit.sealer_running", proof="query")
def sealer_running(ctx) -> CheckResult:
    from apps.audit.models import AuditEvent

    oldest = AuditEvent.objects.filter(sequence__isnull=True).order_by("timestamp").values_list("timestamp", flat=True)
    first = oldest.first()
    lag = (ctx.now - first) if first else timedelta(0)
    evidence = {"unsealed_events": oldest.count(), "oldest_unsealed_age_seconds": int(lag.total_seconds())}
    if lag > SEALER_LAG:
        return CheckResult(
            FAIL,
            f"audit events wait {int(lag.total_seconds())} s to be sealed: the sealer is not running",
            evidence,
            "Start Celery beat and a worker (task apps.audit.tasks.seal_audit_log), or run `manage.py audit_seal`.",
        )
    return CheckResult(PASS, "the sealer keeps up with the audit log", evidence)


@register("audit.append_only", proof="query")
def append_only(ctx) -> CheckResult:
    evidence = {"vendor": connection.vendor, **override_evidence("sqlite")}
    if connection.vendor != "postgresql" or "insecure_override" in evidence:
        return CheckResult(
            FAIL,
            "the database is not PostgreSQL: no trigger protects audit rows" + override_note(evidence),
            evidence,
            "Run Sovereign on PostgreSQL (DATABASE_URL).",
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D' AND tgname IN "
            "('audit_event_guard', 'audit_checkpoint_guard')"
        )
        found = sorted(r[0] for r in cursor.fetchall())
    evidence = {"vendor": "postgresql", "enabled_triggers": found}
    if found != ["audit_checkpoint_guard", "audit_event_guard"]:
        return CheckResult(
            FAIL,
            "the append-only trigger is missing or disabled",
            evidence,
            "Run `python manage.py migrate audit` and re-enable the triggers (ALTER TABLE ... ENABLE TRIGGER).",
        )
    return CheckResult(PASS, "the database refuses UPDATE and DELETE on audit rows", evidence)


@register("audit.retention", proof="query")
def retention(ctx) -> CheckResult:
    from apps.audit.selectors import retention_days

    from ..catalog import get_profile

    profile = get_profile(ctx.profile)
    required = profile.audit_retention_days if profile else 0
    days = retention_days()
    evidence = {"effective_retention_days": days, "required_days": required, "profile": ctx.profile}
    if days < required:
        return CheckResult(
            FAIL,
            f"audit events are kept {days} days; {ctx.profile} requires {required}",
            evidence,
            f"Raise SOVEREIGN_AUDIT_RETENTION_DAYS to at least {required} (and keep the compliance retention hook).",
        )
    return CheckResult(PASS, f"audit events are kept {days} days (≥ {required})", evidence)


@register("audit.reader_roles", proof="query")
def reader_roles(ctx) -> CheckResult:
    """Who can read the audit log, as Django decides it: roles holding `audit.view_auditevent`, and
    active people outside the auditor role who hold it anyway (a direct permission, a superuser)."""
    from django.contrib.auth import get_user_model

    from apps.accounts.roles import AUDITOR

    perm = Q(codename="view_auditevent", content_type__app_label="audit")
    readers = sorted(
        Group.objects.filter(permissions__codename="view_auditevent", permissions__content_type__app_label="audit")
        .values_list("name", flat=True)
        .distinct()
    )
    others = sorted(
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(user_permissions__in=Permission.objects.filter(perm)))
        .exclude(groups__name=AUDITOR)
        .values_list("username", flat=True)
        .distinct()
    )
    evidence = {"roles_reading_audit": readers, "people_outside_the_auditor_role_reading_audit": others}
    problems = []
    if readers != [AUDITOR]:
        problems.append(f"audit read access is held by the role(s) {readers or 'none'}")
    if others:
        problems.append(f"{len(others)} active account(s) outside the auditor role can read it: {', '.join(others)}")
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            "Run `python manage.py migrate` to restore the role permissions (only the auditor reads the audit log); "
            "remove direct audit permissions from the listed accounts; keep superusers sealed and inactive "
            "outside an emergency.",
        )
    return CheckResult(PASS, "only the auditor role reads the audit log", evidence)


@register("audit.sm3_chain", proof="query")
def sm3_chain(ctx) -> CheckResult:
    from apps.audit.selectors import chain_hash_alg

    alg = chain_hash_alg()
    evidence = {"hash_alg": alg}
    if alg != "sm3":
        return CheckResult(
            FAIL,
            f"the audit chain uses {alg}, not SM3",
            evidence,
            "Start a new chain in 国密 mode (SOVEREIGN_ARTIFACT_SUITE=SM4-GCM before the first checkpoint).",
        )
    return CheckResult(PASS, "the audit chain is hashed with SM3", evidence)


@register("audit.events_name_users", proof="query")
def events_name_users(ctx) -> CheckResult:
    from apps.audit.models import AuditEvent

    since = ctx.now - timedelta(days=30)
    recent = AuditEvent.objects.filter(timestamp__gte=since, token_id__isnull=False)
    anonymous = recent.filter(actor_name="").exclude(event_type="auth.token.denied")
    evidence = {"window_days": 30, "token_calls": recent.count(), "token_calls_naming_no_user": anonymous.count()}
    if not recent.exists():
        return CheckResult(NA, "no token call recorded in the last 30 days", evidence)
    if anonymous.exists():
        return CheckResult(
            FAIL,
            f"{anonymous.count()} audited token call(s) name no user",
            evidence,
            "Find the route that records events without the acting user and pass actor=request.user.",
        )
    return CheckResult(PASS, "every audited call names the user who made it", evidence)
