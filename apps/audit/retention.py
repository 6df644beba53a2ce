"""Retention: purge whole sealed ranges older than the retention period, archived first.

Only a range that ends at a checkpoint is purged, and only when every event in it is older than
the retention period. The range is first written to an export file (the same format as any
export, verified offline before anything is deleted); then the database's purge function deletes
it and the checkpoints before the last one, which stays as the anchor the remaining chain starts
from. The purge itself is an audit event, sealed right after.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.module_loading import import_string

from .chain import seal_pending
from .export import iter_export_jsonl
from .models import AuditCheckpoint, AuditEvent, AuditPurgeFloor
from .offline_verify import format_timestamp, verify_export
from .services import record_event
from .signing import trusted_public_keys


def retention_days() -> int:
    """How long audit events are kept: the longest of SOVEREIGN_AUDIT_RETENTION_DAYS (default 2192
    days, HIPAA's six years) and what each AUDIT_RETENTION_HOOKS function requires (the compliance
    profiles attached: HIPAA six years, 等保 six months). Hooks are dotted paths, so this app
    never imports the compliance app; a hook of an app that is not installed is skipped."""
    days = settings.AUDIT_RETENTION_DAYS
    for path in getattr(settings, "AUDIT_RETENTION_HOOKS", ()):
        app_module = path.rsplit(".", 2)[0]
        if not apps.is_installed(app_module):
            continue
        days = max(days, int(import_string(path)() or 0))
    return days


# The shortest retention any profile allows (等保: six months); the database function has it too.
MIN_FLOOR_DAYS = 183
# With no row (the owner deleted it, or a test flushed the tables) the floor is HIPAA's six years,
# as in the migration: a missing row never lowers it.
DEFAULT_FLOOR_DAYS = 2192


def purge_floor_days() -> int:
    """The age in days below which nothing is purged: the largest value of the purge-floor table
    (raised to every attached profile's retention), never below MIN_FLOOR_DAYS."""
    stored = AuditPurgeFloor.objects.order_by("-days").values_list("days", flat=True).first()
    return max(MIN_FLOOR_DAYS, DEFAULT_FLOOR_DAYS if stored is None else stored)


@dataclass(frozen=True)
class PurgeResult:
    through_sequence: int
    events: int
    archive: Path
    archive_sha256: str


def purgeable_checkpoint(cutoff: datetime) -> AuditCheckpoint | None:
    """The last checkpoint up to which every sealed event is older than `cutoff`, if it has events to purge."""
    young = AuditEvent.objects.filter(sequence__isnull=False, timestamp__gte=cutoff).aggregate(s=Min("sequence"))["s"]
    candidates = AuditCheckpoint.objects.all()
    if young is not None:
        candidates = candidates.filter(sequence__lt=young)
    cp = candidates.order_by("-sequence").first()
    if cp is None or not AuditEvent.objects.filter(sequence__lte=cp.sequence).exists():
        return None
    return cp


def archive_range(through: int) -> tuple[Path, str]:
    """Write events up to `through` to an export file (atomically) and verify it offline."""
    directory = Path(settings.AUDIT_ARCHIVE_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    first = AuditEvent.objects.filter(sequence__lte=through).aggregate(s=Min("sequence"))["s"]
    path = directory / f"audit-{first:012d}-{through:012d}.jsonl"
    partial = path.with_suffix(".partial")
    digest = hashlib.sha256()
    # Owner-only from creation whatever the umask (the archive names actors, addresses and targets);
    # O_NOFOLLOW: a planted symlink at the partial name is refused, not written through.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # a partial left over from an interrupted run keeps no looser mode
    with open(fd, "w", encoding="utf-8") as fh:
        for line in iter_export_jsonl(AuditEvent.objects.filter(sequence__lte=through), selection={"purge": through}):
            fh.write(line)
            digest.update(line.encode())
        fh.flush()
        os.fsync(fh.fileno())
    with open(partial, encoding="utf-8") as fh:
        report = verify_export(fh, trusted_public_keys())
    if not report["ok"]:
        partial.unlink()
        raise RuntimeError(f"audit archive of sequences {first}..{through} does not verify: {report['detail']}")
    partial.replace(path)
    return path, digest.hexdigest()


def purge_expired(*, now: datetime | None = None) -> PurgeResult | None:
    """Archive then delete the oldest whole sealed range older than retention; None if nothing is due."""
    # A day beyond the floor: the database compares with its own clock, which may be ahead of ours.
    days = max(retention_days(), purge_floor_days() + 1)
    cutoff = (now or timezone.now()) - timedelta(days=days)
    seal_pending(checkpoint=False)
    cp = purgeable_checkpoint(cutoff)
    if cp is None:
        return None
    path, sha = archive_range(cp.sequence)
    with transaction.atomic():
        events = _delete_through(cp.sequence, cutoff)
        record_event(
            "audit.purge",
            actor=None,
            target_type="audit.auditcheckpoint",
            target_id=str(cp.sequence),
            target_display=f"events through sequence {cp.sequence}",
            details={
                "through_sequence": cp.sequence,
                "events": events,
                "cutoff": format_timestamp(cutoff),
                "retention_days": days,
                "archive": path.name,
                "archive_sha256": sha,
            },
        )
    seal_pending(checkpoint=True)
    return PurgeResult(cp.sequence, events, path, sha)


class PurgeRefused(RuntimeError):
    """The cutoff is younger than the purge floor."""


def _delete_through(through: int, cutoff: datetime) -> int:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT sovereign_audit_purge(%s, %s)", [through, cutoff])
            return int(cursor.fetchone()[0])
    floor = purge_floor_days()  # SQLite (development): the database function's refusal, in Python
    if cutoff > timezone.now() - timedelta(days=floor):
        raise PurgeRefused(f"refusing to purge audit events younger than {floor} days (the purge floor)")
    deleted, _ = AuditEvent.objects.filter(sequence__lte=through).delete()  # SQLite (development): no trigger
    AuditCheckpoint.objects.filter(sequence__lt=through).delete()
    return deleted
