from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "apps.deployments"
    label = "deployments"

    def ready(self) -> None:
        from apps.audit.services import govern

        from .models import Deployment, InferenceServer

        govern(InferenceServer)  # field-level history of the fleet and of what runs on it
        govern(Deployment)
