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
    """Asks PostgreSQL whether the role the portal connects as could get around the append-only
    trigger: superuser, BYPASSRLS, owner of an audit table or guard function, TRUNCATE / DELETE /
    TRIGGER / UPDATE beyond the sealer's columns, session_replication_role; and whether the
    triggers are enabled. Only PostgreSQL enforces this: any other database fails."""
    evidence = {"vendor": connection.vendor, "probed_at": ctx.now.isoformat(), **override_evidence("sqlite")}
    if connection.vendor != "postgresql" or "insecure_override" in evidence:
        return CheckResult(
            FAIL,
            f"the database is {connection.vendor}, not PostgreSQL: only PostgreSQL can enforce append-only "
            "audit rows (trigger and role privileges); here any process with the file can change or delete them"
            + override_note(evidence),
            evidence,
            "Run Sovereign on PostgreSQL (DATABASE_URL) with a separate owner role and application role "
            "(`python manage.py db_roles --print-sql`, docs/audit.md).",
        )
    from apps.audit.selectors import append_only_posture

    facts = append_only_posture()
    problems = facts.pop("problems")
    evidence.update(facts)
    evidence["problems"] = problems
    if problems:
        return CheckResult(
            FAIL,
            f"the application role {facts['role']} can get around the append-only guard: " + "; ".join(problems),
            evidence,
            "Run migrations as an owner role and the portal as a separate application role with the grants of "
            "`python manage.py db_roles --print-sql` (docs/audit.md, 'Append-only in PostgreSQL'); re-enable "
            "the triggers with ALTER TABLE ... ENABLE TRIGGER.",
        )
    return CheckResult(
        PASS,
        f"PostgreSQL refuses UPDATE and DELETE on audit rows and the application role {facts['role']} "
        "cannot remove that guard",
        evidence,
    )


@register("audit.retention", proof="query")
def retention(ctx) -> CheckResult:
    """Effective retention and the database purge floor, each against the longest retention of
    the profile evaluated and every attached profile."""
    from apps.audit.selectors import purge_floor_days, retention_days

    from ..catalog import get_profile
    from ..effective import attached_retention_days

    profile = get_profile(ctx.profile)
    attached = attached_retention_days()
    required = max([profile.audit_retention_days if profile else 0, *attached.values()])
    days, floor = retention_days(), purge_floor_days()
    evidence = {
        "effective_retention_days": days,
        "purge_floor_days": floor,
        "purge_floor_enforced_by": (
            "the database function sovereign_audit_purge()"
            if connection.vendor == "postgresql"
            else "the application only (not PostgreSQL)"
        ),
        "required_days": required,
        "profile": ctx.profile,
        "attached_profiles_days": attached,
    }
    problems = []
    if days < required:
        problems.append(f"audit events are kept {days} days; {required} are required")
    if floor < required:
        problems.append(
            f"the database purge floor is {floor} days: it would let events younger than {required} days go"
        )
    if problems:
        return CheckResult(
            FAIL,
            "; ".join(problems),
            evidence,
            f"Raise SOVEREIGN_AUDIT_RETENTION_DAYS to at least {required}; attach the profile again or run "
            f"`python manage.py audit_purge_floor --raise-to {required}` to raise the purge floor.",
        )
    return CheckResult(
        PASS, f"audit events are kept {days} days and the purge floor is {floor} days (both ≥ {required})", evidence
    )


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
