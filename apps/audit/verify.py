"""Verify the audit log in the database: the hash chain and every checkpoint signature.

The checks themselves are apps/audit/offline_verify.py's, the same code an auditor runs on an
export, so the portal and the offline verifier cannot disagree about what is intact.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterable, Iterator

from .chain import checkpoint_record, event_record, hash_alg, row_fields
from .models import AuditCheckpoint, AuditEvent
from .offline_verify import verify_records
from .signing import trusted_public_keys

CHUNK = 2000


def merged(events: Iterable[dict], checkpoints: Iterable[dict]) -> Iterator[dict]:
    """Events and checkpoints in one sequence order; a checkpoint follows the event it covers."""
    return heapq.merge(events, checkpoints, key=lambda r: (r["sequence"], r["type"] == "checkpoint"))


def sealed_records(first: int | None = None, last: int | None = None, using: str = "default") -> Iterator[dict]:
    """Sealed events (as hashed records) and checkpoints, streamed in sequence order."""
    events = AuditEvent.objects.using(using).filter(sequence__isnull=False)
    checkpoints = AuditCheckpoint.objects.using(using).all()
    if first is not None:
        events, checkpoints = events.filter(sequence__gte=first), checkpoints.filter(sequence__gte=first)
    if last is not None:
        events, checkpoints = events.filter(sequence__lte=last), checkpoints.filter(sequence__lte=last)
    rows = events.order_by("sequence").values(*row_fields()).iterator(chunk_size=CHUNK)
    cps = checkpoints.order_by("sequence").iterator(chunk_size=CHUNK)
    try:
        yield from merged((event_record(r) for r in rows), (checkpoint_record(c) for c in cps))
    finally:
        # Close the server-side cursors now, not whenever the garbage collector gets to them (it
        # may do so while psycopg holds the connection's lock, and wait for it forever).
        rows.close()
        cps.close()


def verify_chain(using: str = "default") -> dict:
    """Check the whole log (of the database alias `using`: a restored copy in a restore drill). The
    report names the first bad sequence and the kind of damage (modified, deleted, inserted,
    reordered, forged_checkpoint), or says the log is empty."""
    with contextlib.closing(sealed_records(using=using)) as records:
        report = verify_records(records, trusted_public_keys(), hash_alg(using))
    report["pending"] = AuditEvent.objects.using(using).filter(sequence__isnull=True).count()
    if report["status"] == "empty" and report["pending"]:
        report["detail"] = f"no event is sealed yet ({report['pending']} waiting for the sealer)"
    return report
