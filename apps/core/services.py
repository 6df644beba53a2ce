"""Platform events that belong to no governed object: the `make run` supervisor's restarts."""

from __future__ import annotations

import signal

from django.db import transaction

from apps.audit.models import Outcome
from apps.audit.services import record_event


def _exit_details(exit_code: int) -> dict:
    details: dict = {"exit_code": exit_code}
    if exit_code < 0:  # killed by a signal (subprocess reports -SIGNUM)
        try:
            details["signal"] = signal.Signals(-exit_code).name
        except ValueError:
            details["signal"] = str(-exit_code)
    return details


def record_process_restart(*, process: str, exit_code: int, attempt: int, delay: float, pid: int | None):
    """A supervised process (triton, worker, web) exited and the launcher started it again."""
    details = {"process": process, **_exit_details(exit_code), "attempt": attempt, "backoff_seconds": delay}
    if pid is not None:
        details["pid"] = pid
    with transaction.atomic():
        return record_event(
            "platform.process.restart",
            actor=None,
            target_type="process",
            target_id=process,
            target_display=process,
            details=details,
        )


def record_process_giveup(*, process: str, exit_code: int, failures: int, window: float):
    """The launcher stopped restarting a process that kept failing, and stopped everything."""
    details = {"process": process, **_exit_details(exit_code), "failures": failures, "window_seconds": window}
    with transaction.atomic():
        return record_event(
            "platform.process.giveup",
            actor=None,
            target_type="process",
            target_id=process,
            target_display=process,
            outcome=Outcome.FAILURE,
            error_code="process_failing",
            details=details,
        )
