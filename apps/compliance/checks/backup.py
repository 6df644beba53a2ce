"""Backup and disaster recovery (HIPAA 164.308(a)(7)(ii)(A,B,D), 等保 8.1.4.9): continuous WAL
archiving works, and a restore drill whose restored copy passes audit verification succeeded
recently."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection

from . import FAIL, PASS, CheckResult, register


@register("backup.wal_archiving", proof="query")
def wal_archiving(ctx) -> CheckResult:
    from ..backup import probe_wal_archiving

    max_age = timedelta(hours=settings.BACKUP_WAL_MAX_AGE_HOURS)
    if connection.vendor != "postgresql":
        return CheckResult(
            FAIL,
            f"the database is {connection.vendor}: it has no WAL archiving (point-in-time recovery needs PostgreSQL)",
            {"vendor": connection.vendor, "probed_at": ctx.now.isoformat()},
            "Run Sovereign on PostgreSQL with archive_mode=on and an archive_command that copies WAL off the host.",
        )
    evidence = {"vendor": "postgresql", **probe_wal_archiving(connection, now=ctx.now, max_age=max_age)}
    if evidence["problems"]:
        return CheckResult(
            FAIL,
            "; ".join(evidence["problems"]),
            evidence,
            "Set archive_mode=on and an archive_command (or archive_library) that stores WAL off this host "
            "(restart needed for archive_mode); check the archiver's log for failures; "
            f"SOVEREIGN_BACKUP_WAL_MAX_AGE_HOURS is {settings.BACKUP_WAL_MAX_AGE_HOURS:g} h.",
        )
    return CheckResult(PASS, f"WAL is archived; last segment at {evidence['last_archived_time']}", evidence)


@register("backup.restore_drill", proof="query")
def restore_drill(ctx) -> CheckResult:
    from ..models import RestoreDrill

    max_age = timedelta(days=settings.RESTORE_DRILL_MAX_AGE_DAYS)
    last = RestoreDrill.objects.order_by("-finished_at").first()
    remedy = (
        "Run `python manage.py restore_drill` (as a role that may create databases) and fix what it reports; "
        f"a successful drill counts for {settings.RESTORE_DRILL_MAX_AGE_DAYS} days."
    )
    evidence = {"max_age_days": settings.RESTORE_DRILL_MAX_AGE_DAYS, "last_drill": None}
    if last is None:
        return CheckResult(FAIL, "no restore drill has been recorded", evidence, remedy)
    evidence["last_drill"] = _drill_evidence(last, requested_by=str(last.requested_by or ""))
    age = ctx.now - last.finished_at
    if not last.ok:
        return CheckResult(
            FAIL, f"the last restore drill ({last.finished_at:%Y-%m-%d}) failed: {last.detail}", evidence, remedy
        )
    if age > max_age:
        return CheckResult(
            FAIL, f"the last restore drill is {age.days} days old (limit {max_age.days})", evidence, remedy
        )
    return CheckResult(
        PASS,
        f"a restore drill on {last.finished_at:%Y-%m-%d} restored the database and verified "
        f"{last.events_verified} audit event(s) through sequence {last.last_sequence}",
        evidence,
    )


def _drill_evidence(drill, *, requested_by: str) -> dict:
    return {
        "id": drill.pk,
        "started_at": drill.started_at.isoformat(),
        "finished_at": drill.finished_at.isoformat(),
        "ok": drill.ok,
        "events_verified": drill.events_verified,
        "last_sequence": drill.last_sequence,
        "detail": drill.detail,
        "source_database": drill.source_database,
        "dump_bytes": drill.dump_bytes,
        "dump_sha256": drill.dump_sha256,
        "tool": drill.tool,
        "requested_by": requested_by,
    }
