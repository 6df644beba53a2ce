"""The sealer: gives committed audit events their place in the hash chain, and signs checkpoints.

record_event inserts rows with empty chain columns, in the request's own transaction, so writers
never wait on each other. The sealer (a Celery beat task every AUDIT_SEAL_SECONDS, and `manage.py
audit_seal`) takes the committed rows that have no sequence yet, in id order, and gives each the
next sequence, its predecessor's hash and its own hash, in batches. Only one sealer runs at a
time (a PostgreSQL advisory lock; SQLite serialises writers anyway).

Why no gap is ever lost: the sealer selects `sequence IS NULL`, not `id > last sealed id`. A
transaction that took id 11 but commits after id 12 was sealed is simply sealed in the next
batch, with the next sequence. The chain's order is the order in which events became visible
to the sealer (commit order, to within a batch), which is what "sequence, not timestamp, orders
the chain" means; ids and timestamps are recorded but order nothing. See docs/audit.md.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from . import offline_verify
from .models import AuditCheckpoint, AuditEvent
from .offline_verify import GENESIS, checkpoint_digest, checkpoint_payload, event_hash, format_timestamp
from .signing import get_signer

SEALER_LOCK = 0x53_4F_56_41  # "SOVA": pg_try_advisory_xact_lock key of the one running sealer


def row_fields() -> tuple[str, ...]:
    """What is read back for hashing and export: the fields any known encoding version hashes, plus
    the row id, the event's encoding version and its own hash."""
    hashed = dict.fromkeys(f for fields in offline_verify.EVENT_ENCODINGS.values() for f in fields)
    return tuple(dict.fromkeys(("id", *hashed, "encoding_version", "hash")))


# The columns as of start-up (the API's field list); readers of rows call row_fields().
ROW_FIELDS = row_fields()
# How a database value becomes its value in the hashed record (JSON: text timestamps, no NULL lists).
_NORMALISE = {
    "timestamp": format_timestamp,
    "source_ip": lambda value: value or None,
    "actor_roles": lambda value: list(value or []),
    "details": lambda value: value if value is not None else {},
}


@dataclass(frozen=True)
class SealResult:
    sealed: int
    checkpoint: AuditCheckpoint | None
    busy: bool = False  # another sealer held the lock


def hash_alg(using: str = "default") -> str:
    """SM3 in 国密 mode (SOVEREIGN_ARTIFACT_SUITE=SM4-GCM), else SHA-256. Once a checkpoint exists
    the chain keeps the algorithm it was started with."""
    first = AuditCheckpoint.objects.using(using).order_by("sequence").values_list("hash_alg", flat=True).first()
    return first or ("sm3" if settings.ARTIFACT_SUITE == "SM4-GCM" else "sha256")


def event_record(row: dict) -> dict:
    """A row of row_fields() (as read back from the database) as the plain record that is hashed and
    exported: the fields of the row's encoding version, its id, version and hash. A row of a version
    this portal does not know keeps every column (verification then reports `unknown_encoding`)."""
    version = row["encoding_version"]
    fields = offline_verify.EVENT_ENCODINGS.get(version, tuple(row))
    record = {"type": "event", "id": row["id"], "encoding_version": version, "hash": row["hash"]}
    for field in fields:
        if field in row:
            normalise = _NORMALISE.get(field)
            record[field] = normalise(row[field]) if normalise else row[field]
    return record


def checkpoint_record(cp: AuditCheckpoint) -> dict:
    return {
        "type": "checkpoint",
        "sequence": cp.sequence,
        "head": cp.head,
        "hash_alg": cp.hash_alg,
        "created_at": format_timestamp(cp.created_at),
        "prev": cp.prev,
        "key_id": cp.key_id,
        "sig_alg": cp.sig_alg,
        "signature": cp.signature,
    }


def _try_lock() -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEALER_LOCK])
        return bool(cursor.fetchone()[0])


def chain_head() -> tuple[int, str]:
    """(last sequence, its hash): the newest sealed event, else the purge anchor, else genesis."""
    last = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").values_list("sequence", "hash")
    row = last.first() or AuditCheckpoint.objects.order_by("-sequence").values_list("sequence", "head").first()
    return row or (0, GENESIS)


def _seal_batch(limit: int, alg: str) -> int:
    sequence, prev = chain_head()
    rows = AuditEvent.objects.filter(sequence__isnull=True).order_by("id").values(*row_fields())[:limit]
    updates = []
    for row in rows:
        sequence += 1
        record = event_record(row)
        record.update(sequence=sequence, prev_hash=prev)
        prev = event_hash(record, alg)
        updates.append((sequence, record["prev_hash"], prev, row["id"]))
    if updates:
        table = AuditEvent._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # One statement per batch, not one per event (bench/audit_scale.py: the sealer
                # shares two cores with thousands of writers a second).
                for start in range(0, len(updates), 2000):
                    chunk = updates[start : start + 2000]
                    values = ", ".join(["(%s::bigint, %s, %s, %s::bigint)"] * len(chunk))
                    cursor.execute(
                        f"UPDATE {table} AS t SET sequence = v.seq, prev_hash = v.prev, hash = v.hash "  # noqa: S608
                        f"FROM (VALUES {values}) AS v(seq, prev, hash, id) WHERE t.id = v.id",
                        [p for row in chunk for p in row],
                    )
            else:
                sql = f"UPDATE {table} SET sequence = %s, prev_hash = %s, hash = %s WHERE id = %s"  # noqa: S608
                cursor.executemany(sql, updates)
    return len(updates)


def seal_pending(*, batch_size: int | None = None, checkpoint: bool | None = None) -> SealResult:
    """Seal every committed unsealed event, batch by batch, then write a checkpoint if one is due
    (`checkpoint=True` forces one when the head moved, `False` skips it). Returns quietly, with
    `busy=True`, when another sealer is running."""
    limit = batch_size or settings.AUDIT_SEAL_BATCH
    alg = hash_alg()
    total = 0
    while True:
        with transaction.atomic():
            if not _try_lock():
                return SealResult(total, None, busy=True)
            sealed = _seal_batch(limit, alg)
        total += sealed
        if sealed < limit:
            break
    cp = None
    if checkpoint is not False:
        with transaction.atomic():
            if not _try_lock():
                return SealResult(total, None, busy=True)
            cp = write_checkpoint(force=bool(checkpoint), alg=alg)
    return SealResult(total, cp)


def write_checkpoint(*, force: bool = False, alg: str | None = None) -> AuditCheckpoint | None:
    """Sign "the chain up to sequence N has head H" if the head moved since the last checkpoint and
    SOVEREIGN_AUDIT_CHECKPOINT_SECONDS have passed (or `force`). Call with the sealer lock held."""
    last = AuditCheckpoint.objects.order_by("-sequence").first()
    head = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").values_list("sequence", "hash")
    head = head.first()
    if head is None or (last is not None and last.sequence >= head[0]):
        return None
    now = timezone.now()
    if not force and last is not None and now - last.created_at < timedelta(seconds=settings.AUDIT_CHECKPOINT_SECONDS):
        return None
    signer = get_signer()
    record = {
        "sequence": head[0],
        "head": head[1],
        "hash_alg": alg or hash_alg(),
        "created_at": format_timestamp(now),
        "prev": checkpoint_digest(checkpoint_record(last)) if last is not None else "",
        "key_id": signer.key_id,
        "sig_alg": signer.sig_alg,
    }
    signature = base64.b64encode(signer.sign(checkpoint_payload(record))).decode()
    return AuditCheckpoint.objects.create(**{**record, "created_at": now, "signature": signature})
