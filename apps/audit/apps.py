from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from . import fieldlog, platform

        fieldlog.connect()
        # Production running with an allowed insecure setting is recorded once the database is reachable.
        connection_created.connect(platform.on_connection_created, dispatch_uid="sovereign-insecure-override")
        post_migrate.connect(platform.on_post_migrate, dispatch_uid="sovereign-insecure-override")
