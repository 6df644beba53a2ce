"""Reads of the deployments app that other apps (and other apps' hooks) use."""

from __future__ import annotations

from django.db.models import Q

from apps.core.errors import Conflict

from .credentials import CREDENTIAL_HEADER, credentials_for
from .models import Deployment, Desired, InferenceServer, Observed
from .transport import client_for, server_policy, tls_config

# How the portal may reach a Triton server: the gateway's connection pool obeys the same address
# policy and TLS files as the deployment services (apps/deployments/transport.py, docs/triton-tls.md),
# and sends each server's restricted-API credential (apps/deployments/credentials.py) in CREDENTIAL_HEADER.
__all__ = [
    "CREDENTIAL_HEADER",
    "client_for",
    "credentials_for",
    "refuse_if_deployed",
    "server_credential_labels",
    "server_policy",
    "tls_config",
    "version_is_live",
]

# Wanted, or not yet known to be gone from its server.
LIVE = Q(desired_state=Desired.ACTIVE) | ~Q(observed_state__in=[Observed.INACTIVE, Observed.FAILED])


def version_is_live(model_version_id: int) -> bool:
    """Whether any deployment of the version is wanted or may still be loaded on a server."""
    return Deployment.objects.filter(LIVE, model_version_id=model_version_id).exists()


def refuse_if_deployed(model_version) -> None:
    """The registry's version-in-use check (registered in DeploymentsConfig.ready()): a deployed
    version's data key must not be destroyed under a running model."""
    if version_is_live(model_version.pk):
        raise Conflict("version_deployed", f"{model_version} is deployed; undeploy it before destroying its data key")


def server_credential_labels(data_key_ids: list[int]) -> dict[int, str]:
    """The key inventory's labels of credential data keys: the server each one seals the credential of."""
    rows = InferenceServer.objects.filter(credential_key_id__in=data_key_ids).values_list("credential_key_id", "name")
    return {key_id: f"Triton credential of server {name}" for key_id, name in rows}
