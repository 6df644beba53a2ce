from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "apps.deployments"
    label = "deployments"

    def ready(self) -> None:
        from apps.audit.services import govern
        from apps.registry.services import register_version_in_use_check

        from .models import Deployment, InferenceServer
        from .selectors import refuse_if_deployed

        govern(InferenceServer)  # field-level history of the fleet and of what runs on it
        govern(Deployment)
        # Registry must not know deployments: it asks its hook before shredding a version.
        register_version_in_use_check(refuse_if_deployed)
