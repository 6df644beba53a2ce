"""GGUF imports: a llama GGUF becomes a language-model version (docs/llm.md).

Two entry points, one conversion (H1's inference_backend/llm/gguf_import.convert) and one
registration (services.register_llm_version):

- `import_gguf(...)`, synchronous, for `manage.py import_gguf FILE` (an operator on the host);
- `create_import_job(...)` + `run_import_job(job_id)`, for `POST /api/v1/registry/imports/`: the
  upload is already encrypted in the staging directory under an ephemeral data key
  (apps/registry/uploads.py); the Celery task decrypts it in memory, converts, registers,
  deletes the staging file and clears the wrapped key, recording progress on the ImportJob row.

Every refusal (a malformed GGUF, an unsupported architecture, a bad option, a set the registry
refuses) raises or records a stable code and writes `registry.version.rejected`; nothing is
half-imported: the version and its files commit together or not at all.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from apps.audit.services import SYSTEM, Source, record_event
from apps.core.context import current_request_id
from apps.core.errors import ServiceError, _
from apps.keys import services as keys
from apps.keys.models import DataKey, Purpose

from . import services
from .models import ImportJob, ImportState, ModelFormat

log = logging.getLogger(__name__)

QUANTS = ("int4", "fp32")
Progress = Callable[[float, str], None]


def _convert(source, quant: str, progress: Progress) -> dict[str, bytes]:
    from inference_backend.llm.gguf_import import GGUFImportError, convert

    try:
        return convert(source, quant=quant, progress=progress)
    except GGUFImportError as err:
        raise ServiceError(err.code, err.message, field="file") from err  # i18n-ok: inference_backend's converter
    except MemoryError as err:
        raise ServiceError("gguf_too_large", _("the GGUF does not fit in this worker's memory"), 413, "file") from err


def _check_options(model_name: str, quant: str, version: int | None) -> None:
    services._validate_name(model_name)
    if quant not in QUANTS:
        raise ServiceError(
            "gguf_invalid_option", _("quant must be one of %(quants)s") % {"quants": ", ".join(QUANTS)}, field="quant"
        )
    if version is not None and version < 1:
        raise ServiceError("invalid_version", _("version must be a positive integer"), field="version")


def _reject(model_name: str, version, size_bytes: int, err: ServiceError, actor, source: Source) -> None:
    services.record_rejection(
        model_name=model_name,
        version=version,
        size_bytes=size_bytes,
        error=err,
        actor=actor,
        source=source,
        extra={"format": ModelFormat.LLM, "importer": "gguf"},
    )


def import_gguf(
    *,
    path,
    model_name: str,
    quant: str = "int4",
    version: int | None = None,
    description: str = "",
    actor,
    source: Source = SYSTEM,
    progress: Progress | None = None,
):
    """Convert the GGUF at `path` and register it (the management command). Refusals are
    audited; the version exists afterwards or nothing does."""
    report = progress or (lambda fraction, message: None)
    size = 0
    try:
        _check_options(model_name, quant, version)
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, io.SEEK_END)
        except OSError as err:
            raise ServiceError(
                "gguf_unreadable",
                _("cannot read %(path)s: %(strerror)s") % {"path": path, "strerror": err.strerror},
                field="file",
            ) from err
        files = _convert(path, quant, lambda f, m: report(0.9 * f, m))
    except ServiceError as err:
        _reject(model_name, version, size, err, actor, source)
        raise
    report(0.9, "encrypting and registering")
    mv = services.register_llm_version(
        model_name=model_name, files=files, version=version, description=description, actor=actor, source=source
    )
    report(1.0, f"registered {mv}")
    return mv


# --------------------------------------------------------------------------- the API's jobs


def create_import_job(
    *,
    staged,
    model_name: str,
    quant: str = "int4",
    version: int | None = None,
    description: str = "",
    actor,
    source: Source = SYSTEM,
) -> ImportJob:
    """Record an import of a staged upload (apps/registry/uploads.StagedUpload) and enqueue its
    task after commit. A refusal here deletes the staging file and is audited."""
    try:
        if staged.too_large:
            from django.conf import settings

            raise ServiceError(
                "file_too_large",
                _("the upload is over the import limit of %(max_import_bytes)s bytes (SOVEREIGN_MAX_IMPORT_BYTES)")
                % {"max_import_bytes": settings.MAX_IMPORT_BYTES},
                413,
                "file",
            )
        _check_options(model_name, quant, version)
        with transaction.atomic():
            job = ImportJob.objects.create(
                model_name=model_name,
                requested_version=version,
                quant=quant,
                description=description,
                file_name=staged.name[:255] if staged.name else "",
                upload_bytes=staged.size,
                upload_sha256=staged.sha256,
                staging_name=staged.staging_name,
                staging_aad=staged.aad,
                staging_suite=staged.suite,
                staging_kek_id=staged.kek_id,
                staging_wrapped_key=staged.wrapped,
                created_by=actor if getattr(actor, "pk", None) else None,
            )
            staged.claimed = True
            record_event(
                "registry.import.create",
                actor=actor,
                source=source,
                target=job,
                details={
                    "after": {
                        "model": model_name,
                        "version": version,
                        "quant": quant,
                        "file_name": job.file_name,
                        "size_bytes": staged.size,
                        "sha256": staged.sha256,
                    }
                },
            )
            rid = current_request_id()
            transaction.on_commit(lambda: _enqueue(job.pk, rid))
        return job
    except ServiceError as err:
        staged.discard()
        _reject(model_name, version, staged.size, err, actor, source)
        raise


def _enqueue(job_id: int, request_id: str) -> None:
    from .tasks import run_import_task

    run_import_task.delay(job_id, request_id)


class _ProgressWriter:
    """Progress on the job row, at most every half second (the UI polls it)."""

    def __init__(self, job_id: int, low: float, high: float) -> None:
        self.job_id, self.low, self.high = job_id, low, high
        self.last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and fraction < 1.0:
            return
        self.last = now
        value = self.low + (self.high - self.low) * max(0.0, min(1.0, float(fraction)))
        ImportJob.objects.filter(pk=self.job_id, state=ImportState.RUNNING).update(
            progress=value, message=str(message)[:500], updated_at=timezone.now()
        )


def run_import_job(job_id: int) -> ImportJob | None:
    """The task's body: claim the job (queued → running), decrypt the staging file in memory,
    convert, register, and end succeeded or failed. Returns None if the job is gone or taken."""
    if not ImportJob.objects.filter(pk=job_id, state=ImportState.QUEUED).update(
        state=ImportState.RUNNING, progress=0.0, message="decrypting the upload", updated_at=timezone.now()
    ):
        return None
    job = ImportJob.objects.select_related("created_by").get(pk=job_id)
    actor = job.created_by
    try:
        try:
            data = _open_staged(job)
            files = _convert(data, job.quant, _ProgressWriter(job.pk, 0.05, 0.85))
            del data
        except ServiceError as err:  # register_llm_version audits its own refusals; these are ours
            _reject(job.model_name, job.requested_version, job.upload_bytes, err, actor, SYSTEM)
            raise
        ImportJob.objects.filter(pk=job.pk).update(progress=0.85, message="encrypting and registering")
        mv = services.register_llm_version(
            model_name=job.model_name,
            files=files,
            version=job.requested_version,
            description=job.description,
            actor=actor,
        )
    except ServiceError as err:
        _finish(job, ImportState.FAILED, err.detail_en, err.code)
        return job
    except Exception as err:  # a bug or an unexpected library error: the job must not stay running
        log.exception("import job %s failed", job.pk)
        _finish(job, ImportState.FAILED, f"the import failed unexpectedly: {type(err).__name__}", "import_failed")
        return job
    _finish(job, ImportState.SUCCEEDED, f"registered {mv}", "", result=mv)
    return job


def _open_staged(job: ImportJob) -> bytes:
    path = job.staging_path
    if path is None or not path.is_file():
        raise ServiceError("staging_missing", _("the staged upload is gone (already imported or cleaned up)"), 410)
    carrier = DataKey(
        purpose=Purpose.ARTIFACT, suite=job.staging_suite, kek_id=job.staging_kek_id, wrapped=job.staging_wrapped_key
    )
    out = io.BytesIO()
    with open(path, "rb") as src:
        keys.open_stream(src, out, job.staging_aad.encode(), data_key=carrier)
    return out.getvalue()


def _finish(job: ImportJob, state: str, message: str, code: str, result=None) -> None:
    path = job.staging_path
    with transaction.atomic():
        ImportJob.objects.filter(pk=job.pk).update(
            state=state,
            progress=1.0 if state == ImportState.SUCCEEDED else job.progress,
            message=message[:500],
            error_code=code,
            result=result,
            finished_at=timezone.now(),
            updated_at=timezone.now(),
            staging_name="",
            staging_wrapped_key=b"",
        )
        record_event(
            "registry.import.finish",
            actor=job.created_by,
            target=job,
            outcome="success" if state == ImportState.SUCCEEDED else "failure",
            error_code=code,
            details={"after": {"state": state, "message": message[:500], "version": result.pk if result else None}},
        )
    if path is not None:
        path.unlink(missing_ok=True)
    job.refresh_from_db()
