from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "apps.deployments"
    label = "deployments"

    def ready(self):
        from apps.registry.services import register_version_in_use_check

        from .selectors import refuse_if_deployed

        # Registry must not know deployments: it asks its hook before shredding a version.
        register_version_in_use_check(refuse_if_deployed)
