"""Reads of the deployments app that other apps may use."""

from __future__ import annotations

from .transport import server_policy, tls_config

# How the portal may reach a Triton server: the gateway's connection pool obeys the same address
# policy and TLS files as the deployment services (apps/deployments/transport.py, docs/triton-tls.md).
__all__ = ["server_policy", "tls_config"]
