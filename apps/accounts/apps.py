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
        self.throttle_after_grace()
        self.govern_models()

        post_migrate.connect(on_post_migrate, dispatch_uid="sovereign-sync-roles")

    def throttle_after_grace(self) -> None:
        """A wrong one-time code costs no wait for the first few in a row (apps.accounts.otp)."""
        from django_otp.plugins.otp_totp.models import TOTPDevice

        from .otp import grace_throttle_factor

        TOTPDevice.get_throttle_factor = grace_throttle_factor  # django-otp's own device: no subclass hook

    def govern_models(self) -> None:
        """Field-level history of the access-control models (the token's digest and last-use noise excluded)."""
        from apps.audit.services import govern

        from .models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant, Profile

        govern(ApiToken, exclude=("digest", "last_used_at", "last_used_ip"))
        for model in (ModelUserGrant, ModelGroupGrant, EmergencyAccess, Profile):
            govern(model)
