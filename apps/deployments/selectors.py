"""Reads of the deployments app that other apps (and other apps' hooks) use."""

from __future__ import annotations

from django.db.models import Q

from apps.core.errors import Conflict

from .models import Deployment, Desired, Observed
from .transport import server_policy, tls_config

# How the portal may reach a Triton server: the gateway's connection pool obeys the same address
# policy and TLS files as the deployment services (apps/deployments/transport.py, docs/triton-tls.md).
__all__ = ["refuse_if_deployed", "server_policy", "tls_config", "version_is_live"]

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
