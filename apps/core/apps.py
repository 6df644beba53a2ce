from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from . import checks, production, task_context  # noqa: F401 - register the checks, connect Celery signals

        # Every process (web, worker, beat, manage.py) passes here: production refuses insecure settings.
        production.enforce(settings)
        connection_created.connect(production.on_connection_created, dispatch_uid="sovereign-insecure-override")
        post_migrate.connect(production.on_post_migrate, dispatch_uid="sovereign-insecure-override")
