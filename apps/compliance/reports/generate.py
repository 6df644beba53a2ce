"""Generate a report: gather, render PDF / CSV / JSON, sign each, record the outcome.

Runs in a Celery worker (apps.compliance.tasks.generate_report_task). Files are written
atomically (0600), so a worker killed half-way leaves at most `*.tmp-*` files; running the task
again redoes the report from the start."""

from __future__ import annotations

import json

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import record_event
from inference_backend.private_file import write_private

from ..models import ComplianceReport, ReportState
from ..storage import directory
from . import data as report_data
from . import render
from .signing import sign_bytes

FORMATS = ("json", "csv", "pdf")


def _progress(report_id: int, pct: int) -> None:
    ComplianceReport.objects.filter(pk=report_id).update(progress=pct)


def generate_report(report_id: int, actor=None) -> ComplianceReport | None:
    """Produce and sign the files of one report; None if it is gone or already finished."""
    claimed = ComplianceReport.objects.filter(
        Q(state=ReportState.QUEUED) | Q(state=ReportState.RUNNING), pk=report_id
    ).update(state=ReportState.RUNNING, progress=5, error="")
    if not claimed:
        return None
    report = ComplianceReport.objects.get(pk=report_id)
    try:
        files, key_id = _build(report)
    except Exception as exc:
        _finish(report, actor, state=ReportState.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    return _finish(report, actor, state=ReportState.DONE, files=files, key_id=key_id)


def _build(report: ComplianceReport) -> tuple[dict, str]:
    content = report_data.gather(report, progress=lambda pct: _progress(report.pk, pct))
    content["report"]["generated_at"] = timezone.now().isoformat()
    rendered = {"json": render.to_json(content), "csv": render.to_csv(content)}
    _progress(report.pk, 70)
    rendered["pdf"] = render.to_pdf(content)
    _progress(report.pk, 90)
    out = directory("reports")
    stem = f"compliance-{report.profile}-{report.pk}"
    files, key_id = {}, ""
    for fmt in FORMATS:
        name = f"{stem}.{fmt}"
        signature = sign_bytes(rendered[fmt], name)
        write_private(out / name, rendered[fmt])
        write_private(out / f"{name}.sig", json.dumps(signature, indent=2).encode())
        files[fmt] = name
        files[f"{fmt}.sig"] = f"{name}.sig"
        key_id = signature["statement"]["key_id"]
    return files, key_id


def _finish(report, actor, *, state, files=None, key_id="", error="") -> ComplianceReport:
    with transaction.atomic():
        ComplianceReport.objects.filter(pk=report.pk).update(
            state=state,
            progress=100 if state == ReportState.DONE else report.progress,
            files=files or {},
            key_id=key_id,
            error=error,
            finished_at=timezone.now(),
        )
        record_event(
            "compliance.report.generate",
            actor=actor,
            target=report,
            outcome=Outcome.SUCCESS if state == ReportState.DONE else Outcome.FAILURE,
            error_code="" if state == ReportState.DONE else "report_failed",
            details={"profile": report.profile, "state": state, "files": files or {}, "key_id": key_id, "error": error},
        )
    report.refresh_from_db()
    return report
