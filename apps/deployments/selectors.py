"""Reads of the deployments app that other apps (and other apps' hooks) use."""

from __future__ import annotations

import json
import logging
import time

from django.db.models import Q

from apps.core.errors import Conflict, _

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
    "GATEWAY_VIEW_KEY",
    "GATEWAY_VIEW_TTL",
    "gateway_says",
    "gateway_view",
    "refuse_if_deployed",
    "server_credential_labels",
    "server_policy",
    "tls_config",
    "version_is_live",
]

log = logging.getLogger(__name__)

# The gateway's data plane publishes its circuit breaker for each server (apps/gateway/dataplane/balancer.py):
# one Redis hash per server, a field per data-plane process holding JSON with its time ("at"); the
# key lives GATEWAY_VIEW_TTL seconds past the last publication, a process silent that long is ignored.
GATEWAY_VIEW_KEY = "sov:gw:breaker:{server_id}"
GATEWAY_VIEW_TTL = 30


def gateway_view(server_id: int) -> list[dict]:
    """What each live data-plane process says of the server (state, last error…); [] if none or no Redis."""
    from apps.core.throttling import redis_client

    client = redis_client()
    if client is None:
        return []
    try:
        fields = client.hgetall(GATEWAY_VIEW_KEY.format(server_id=server_id))
    except Exception:  # noqa: BLE001 - Redis down: the view is unknown, nothing else depends on it
        log.warning("gateway view of server %s unreadable", server_id, exc_info=True)
        return []
    now, out = time.time(), []
    for raw in fields.values():
        try:
            view = json.loads(raw)
        except ValueError:
            continue
        if now - float(view.get("at", 0)) <= GATEWAY_VIEW_TTL:
            out.append(view)
    return out


def gateway_says(server_id: int) -> str:
    """One line for the server's health: the gateway's own experience of it ('' when it has none)."""
    views = gateway_view(server_id)
    if not views:
        return ""
    tripped = [v for v in views if v.get("state") != "closed"]
    if not tripped:
        return f"reachable (circuit closed in {len(views)} data-plane process{'es' if len(views) > 1 else ''})"
    error = max(tripped, key=lambda v: v.get("last_error_at") or 0).get("last_error") or "unknown error"
    return f"circuit open in {len(tripped)} of {len(views)} data-plane processes: {error}"


# Wanted, or not yet known to be gone from its server.
LIVE = Q(desired_state=Desired.ACTIVE) | ~Q(observed_state__in=[Observed.INACTIVE, Observed.FAILED])


def version_is_live(model_version_id: int) -> bool:
    """Whether any deployment of the version is wanted or may still be loaded on a server."""
    return Deployment.objects.filter(LIVE, model_version_id=model_version_id).exists()


def refuse_if_deployed(model_version) -> None:
    """The registry's version-in-use check (registered in DeploymentsConfig.ready()): a deployed
    version's data key must not be destroyed under a running model."""
    if version_is_live(model_version.pk):
        raise Conflict(
            "version_deployed",
            _("%(model_version)s is deployed; undeploy it before destroying its data key")
            % {"model_version": model_version},
        )


def server_credential_labels(data_key_ids: list[int]) -> dict[int, str]:
    """The key inventory's labels of credential data keys: the server each one seals the credential of."""
    rows = InferenceServer.objects.filter(credential_key_id__in=data_key_ids).values_list("credential_key_id", "name")
    return {key_id: f"Triton credential of server {name}" for key_id, name in rows}
