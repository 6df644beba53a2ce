"""Audit export files: JSON Lines that an auditor verifies offline (apps/audit/offline_verify.py).

One header line, then in sequence order: the anchor checkpoint (the last one before the
selection), every event of the selection, a `link` line (sequence, prev_hash, hash only) for each
event between them that is not selected, every checkpoint in that span up to the first checkpoint
after the selection; then unsealed events of the selection as `pending` lines (not yet
verifiable), and a footer with the counts. docs/audit.md describes each line.

iter_export_jsonl streams: memory stays constant whatever the number of rows. iter_export_csv
turns those lines into CSV rows for a spreadsheet, each cell neutralised against formula injection.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from django.db import transaction
from django.db.models import Exists, Max, Min, OuterRef, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from apps.core.errors import ServiceError, _
from apps.core.spreadsheet import safe_row

from .chain import checkpoint_record, event_record, hash_alg, row_fields
from .models import AuditCheckpoint, AuditEvent
from .offline_verify import FOOTER_COUNTS, FORMAT, FORMAT_VERSION, format_timestamp, key_text
from .signing import trusted_public_keys
from .verify import CHUNK, merged

LINK_FIELDS = ("sequence", "prev_hash", "hash")


def csv_columns() -> tuple[str, ...]:
    """One CSV row per line of the JSONL export: its type, the record's fields, and the whole line."""
    return ("type", *row_fields(), "record")


def _line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def _span(selected: QuerySet) -> tuple[dict | None, int, int] | None:
    """(anchor checkpoint, first, last sequence) of the chain span that proves `selected`."""
    bounds = selected.aggregate(lo=Min("sequence"), hi=Max("sequence"))
    if bounds["lo"] is None:
        return None
    anchor = AuditCheckpoint.objects.filter(sequence__lt=bounds["lo"]).order_by("-sequence").first()
    closing = AuditCheckpoint.objects.filter(sequence__gte=bounds["hi"]).order_by("sequence").first()
    first = anchor.sequence + 1 if anchor else 1
    return anchor, first, closing.sequence if closing else bounds["hi"]


def _chain_lines(queryset: QuerySet, first: int, last: int, counts: dict) -> Iterator[str]:
    rows = AuditEvent.objects.filter(sequence__gte=first, sequence__lte=last)
    everything = not queryset.query.has_filters()
    if not everything:
        rows = rows.annotate(selected=Exists(queryset.filter(pk=OuterRef("pk"))))
    fields = (*row_fields(), "selected") if not everything else row_fields()
    events = rows.order_by("sequence").values(*fields).iterator(chunk_size=CHUNK)
    cps = AuditCheckpoint.objects.filter(sequence__gte=first, sequence__lte=last).order_by("sequence").iterator()
    try:
        for record in merged((_event_or_link(r, everything) for r in events), (checkpoint_record(c) for c in cps)):
            counts[record["type"]] += 1
            yield _line(record)
    finally:  # a reader that stops early: close the server-side cursors now (see verify.sealed_records)
        events.close()
        cps.close()


def _event_or_link(row: dict, everything: bool) -> dict:
    if everything or row.pop("selected"):
        return event_record(row)
    return {"type": "link", **{k: row[k] for k in LINK_FIELDS}}


def _layout(span: tuple[dict | None, int, int] | None) -> int:
    """Layout 1 while every event of the span is of encoding 1 (readable by verifiers from before
    encoding versions), else FORMAT_VERSION (which those verifiers refuse rather than misreport)."""
    if span is None:
        return 1
    later = AuditEvent.objects.filter(sequence__gte=span[1], sequence__lte=span[2], encoding_version__gt=1)
    return FORMAT_VERSION if later.exists() else 1


def iter_export_jsonl(queryset: QuerySet, *, selection: dict | None = None) -> Iterator[str]:
    """Stream `queryset` (AuditEvent rows, any filter) as an export file, line by line.
    `selection` (e.g. the filters the caller used) is copied into the header for the reader."""
    counts = {"event": 0, "link": 0, "checkpoint": 0, "pending": 0}
    span = _span(queryset.filter(sequence__isnull=False))
    header = {
        "type": "header",
        "format": FORMAT,
        "version": _layout(span),
        "hash_alg": hash_alg(),
        "exported_at": format_timestamp(timezone.now()),
        "selection": selection or {},
        "range": [span[1], span[2]] if span else None,
        # every key the portal trusts (the signer's and retired ones: a chain may span a switch from
        # ECDSA to SM2); P-256 as PEM, SM2 as the point's hex
        "public_keys": {key_id: key_text(key) for key_id, key in trusted_public_keys().items()},
    }
    yield _line(header)
    if span is not None:
        anchor, first, last = span
        if anchor is not None:
            counts["checkpoint"] += 1
            yield _line(checkpoint_record(anchor))
        yield from _chain_lines(queryset, first, last, counts)
    pending = queryset.filter(sequence__isnull=True).order_by("id").values(*row_fields()).iterator(chunk_size=CHUNK)
    for row in pending:
        counts["pending"] += 1
        yield _line({**event_record(row), "type": "pending"})
    yield _line({"type": "footer", **{FOOTER_COUNTS[k]: v for k, v in counts.items()}})


def iter_export_csv(jsonl: Iterable[str]) -> Iterator[str]:
    """The JSON Lines export as CSV: one row per line, the readable columns filled from the record
    and the whole record in `record`, so the CSV verifies offline exactly like the JSONL.

    The readable columns hold attacker-controlled text (user agents, names, request ids): each
    cell passes through apps.core.spreadsheet.safe_cell, so `=HYPERLINK(...)` arrives as text.
    The `record` column is the JSON line itself, which starts with `{` and is never rewritten:
    it is what the verifier hashes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = csv_columns()
    writer.writerow(columns)
    for line in jsonl:
        record = json.loads(line)
        row = []
        for column in columns[:-1]:
            value = record.get(column, "")
            row.append(json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value)
        writer.writerow([*safe_row(row), line.rstrip("\n")])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


def audited_export(queryset: QuerySet, selection: dict, file_format: str, *, actor, source) -> StreamingHttpResponse:
    """The export of `queryset` (already narrowed to what `actor` may read) as a streamed download,
    recorded as `audit.export` before the first byte leaves. Refused with `invalid_format`, or
    `export_too_large` (413) above the caller's row limit. The API and the admin both call this."""
    from .selectors import export_limit
    from .services import record_event

    if file_format not in EXPORT_FORMATS:
        raise ServiceError(
            "invalid_format",
            _("export format must be one of: %(export_formats)s") % {"export_formats": ", ".join(EXPORT_FORMATS)},
        )
    limit = export_limit(actor)
    rows = queryset.count()
    if rows > limit:
        raise ServiceError(
            "export_too_large",
            _("the selection holds %(rows)s events; your role may export at most %(limit)s at once: narrow the filters")
            % {"rows": rows, "limit": limit},
            413,
        )
    with transaction.atomic():  # recorded before the first byte leaves; if it cannot be, nothing does
        record_event(
            "audit.export",
            actor=actor,
            source=source,
            details={"format": file_format, "filters": selection, "rows": rows},
        )
    lines = iter_export_jsonl(queryset, selection=selection)
    body = iter_export_csv(lines) if file_format == "csv" else lines
    response = StreamingHttpResponse(body, content_type=EXPORT_FORMATS[file_format])
    response["Content-Disposition"] = f'attachment; filename="audit-export.{file_format}"'
    return response
