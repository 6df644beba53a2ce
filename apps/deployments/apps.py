from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "apps.deployments"
    label = "deployments"

    def ready(self) -> None:
        from apps.audit.services import govern
        from apps.keys.models import Purpose
        from apps.keys.selectors import register_label_provider
        from apps.registry.services import register_version_in_use_check

        from .models import Deployment, InferenceServer, ReplicaSet
        from .selectors import refuse_if_deployed, server_credential_labels

        # Field-level history of the fleet and of what runs on it (never the sealed credential).
        govern(InferenceServer, exclude=["credential_ciphertext"])
        govern(Deployment)
        # replicas, placement, traffic weight, state, autoscaling settings (docs/fleet.md); not the
        # autoscaler's per-tick memory (its decisions are audit events of their own)
        govern(ReplicaSet, exclude=["autoscale_state"])
        # Registry must not know deployments: it asks its hook before shredding a version.
        register_version_in_use_check(refuse_if_deployed)
        # The key inventory names the server whose restricted-API credential a data key seals.
        register_label_provider(Purpose.TRITON_CREDENTIAL, server_credential_labels)
