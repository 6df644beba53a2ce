from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"

    def ready(self) -> None:
        from apps.audit.services import govern

        from .models import Artifact, Model, ModelVersion

        # Field-level history of the catalogue; the artifact's wrapped data key never enters it.
        govern(Model)
        govern(ModelVersion)
        govern(Artifact, exclude=("wrapped_dek",))
