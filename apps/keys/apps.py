from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "apps.keys"
    label = "keys"

    def ready(self) -> None:
        from apps.audit.services import govern

        from .models import DataKey

        # Field-level history of every data key (re-wrapped to another KEK version, destroyed), beside
        # the keys.dek.* events; the wrapped bytes never enter it.
        govern(DataKey, exclude=("wrapped",))
