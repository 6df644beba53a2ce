from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from django.conf import settings

        from . import checks, production, task_context  # noqa: F401 - register the checks, connect Celery signals

        # Every process (web, worker, beat, manage.py) passes here: production refuses insecure settings.
        # (Recording an allowed override in the audit log is the audit app's: apps/audit/platform.py.)
        production.enforce(settings)

        from .i18n import translate_labels

        translate_labels()  # model and field labels in the person's language (every model is loaded by now)
