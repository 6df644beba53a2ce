"""Celery application. Tasks live in apps/<app>/tasks.py and are discovered from INSTALLED_APPS."""

import logging
import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("sovereign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The loggers that write one INFO line per task sent by beat, received and succeeded.
ROUTINE_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


class QuietRoutineTasks(logging.Filter):
    """Drops the INFO lines of the routine beat tasks (settings.CELERY_QUIET_TASKS); their warnings
    and errors, and every line of every other task, are kept."""

    tasks: tuple[str, ...] | None = None  # read from the settings at the first record, not at import

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        if self.tasks is None:
            from django.conf import settings

            self.tasks = tuple(getattr(settings, "CELERY_QUIET_TASKS", ()))
        message = record.getMessage()
        return not any(task in message for task in self.tasks)


def quiet_routine_tasks() -> QuietRoutineTasks:
    """Attach the filter (once) to the loggers that announce tasks; logger filters survive Celery's
    own logging setup, and forked pool processes inherit them."""
    quiet = QuietRoutineTasks()
    for name in ROUTINE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, QuietRoutineTasks)]:
            logger.removeFilter(old)
        logger.addFilter(quiet)
    return quiet


quiet_routine_tasks()


@worker_ready.connect
def _verify_code_manifest(**kwargs) -> None:
    """等保 8.1.4.6: the worker verifies the installed code against its signed manifest at start."""
    from apps.compliance.manifest import verify_at_start

    verify_at_start("worker")
