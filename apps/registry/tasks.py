"""Celery tasks of the registry: thin wrappers that load by id and call one service."""

from celery import shared_task

from apps.core.context import bound_request_id

from . import imports


@shared_task(acks_late=True)
def run_import_task(job_id: int, request_id: str = "") -> str:
    """Convert and register one staged GGUF upload (apps/registry/imports.py). Permanent failures
    end the job FAILED with the reason; a job already taken or gone is skipped."""
    with bound_request_id(request_id):
        job = imports.run_import_job(job_id)
    return job.state if job else "skipped"


@shared_task(acks_late=True)
def verify_artifacts_task() -> str:
    """Periodic: decrypt a sample of stored artifacts and check their digests (apps/registry/integrity.py)."""
    from . import integrity

    run = integrity.verify_artifacts()
    return f"{run.verified}/{run.sampled} verified, {len(run.failures)} failed"
