from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"

    def ready(self):
        from django.db.models.signals import post_migrate

        from apps.audit.services import register_actor_roles_provider

        from . import schema, signals  # noqa: F401 - registers the OpenAPI auth extension and signal handlers
        from .role_sync import on_post_migrate
        from .services.roles import roles_for_audit

        register_actor_roles_provider(roles_for_audit)  # audit freezes each actor's roles into its events
        self.govern_models()

        post_migrate.connect(on_post_migrate, dispatch_uid="sovereign-sync-roles")

    def govern_models(self) -> None:
        """Field-level history of the access-control models (the token's digest and last-use noise excluded)."""
        from apps.audit.services import govern

        from .models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Profile

        govern(ApiToken, exclude=("digest", "last_used_at", "last_used_ip"))
        for model in (ModelUserGrant, ModelGroupGrant, EmergencyAccess, Profile):
            govern(model)
