from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"

    def ready(self) -> None:
        from apps.audit.services import govern
        from apps.keys.models import Purpose
        from apps.keys.selectors import register_label_provider

        from .models import Artifact, Model, ModelVersion
        from .selectors import artifact_labels

        # Field-level history of the catalogue (the data key itself lives in apps.keys, never here).
        govern(Model)
        govern(ModelVersion)
        govern(Artifact)
        # The key inventory and rotation events name the model version an artifact key protects.
        register_label_provider(Purpose.ARTIFACT, artifact_labels)
