from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "apps.registry"
    label = "registry"

    def ready(self):
        from apps.keys.models import Purpose
        from apps.keys.selectors import register_label_provider

        from .selectors import artifact_labels

        # The key inventory and rotation events name the model version an artifact key protects.
        register_label_provider(Purpose.ARTIFACT, artifact_labels)
