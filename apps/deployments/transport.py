"""The portal's side of talking to Triton servers: the address policy and TLS files from settings.

Used by the deployment services (registration, reconcile, probes) and by the gateway's pool, so
every connection the portal opens to a Triton server obeys the same rules (docs/triton-tls.md).
"""

from __future__ import annotations

import socket

from django.conf import settings
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from apps.core.errors import ServiceError, _
from inference_backend.client import TritonClient
from inference_backend.netpolicy import AddressRefused, ServerPolicy, parse_networks
from inference_backend.transport import TlsConfig

SCHEMES = ("http", "https")


def server_policy() -> ServerPolicy:
    """The policy of the current settings (production requires TLS off loopback)."""
    return ServerPolicy(
        allowed_networks=parse_networks(settings.TRITON_ALLOWED_NETWORKS),
        require_tls=settings.PRODUCTION,
        ca_pinned=bool(settings.TRITON_CA_FILE),
    )


def tls_config() -> TlsConfig:
    """The pinned CA and client certificate of the current settings."""
    return TlsConfig(settings.TRITON_CA_FILE, settings.TRITON_CLIENT_CERT_FILE, settings.TRITON_CLIENT_KEY_FILE)


def client_for(base_url: str, timeout: float, credential: str | None = None) -> TritonClient:
    """A :class:`TritonClient` whose connections obey the policy and TLS settings, sending the
    server's restricted-API ``credential`` when it has one (apps/deployments/credentials.py)."""
    return TritonClient(base_url, timeout=timeout, policy=server_policy(), tls=tls_config(), credential=credential)


def check_server_url(url: str, field: str = "http_url") -> None:
    """Refuse a Triton server URL the policy does not allow (ServiceError, 400, stable code).

    The host is resolved and every address checked. A name that does not resolve (yet) is
    accepted — it cannot be checked now, and every connection checks it again anyway — but in
    production it must then use https, as a non-loopback server would.
    """
    try:
        parsed = parse_url(url)
    except LocationParseError:
        parsed = None
    if parsed is None or parsed.scheme not in SCHEMES or not parsed.host:
        raise ServiceError("invalid_server_url", _("a Triton server URL is http(s)://host[:port]"), field=field)
    policy = server_policy()
    try:
        try:
            addresses = policy.resolve(parsed.host, parsed.port)
        except (socket.gaierror, UnicodeError):
            addresses = []
        policy.check_transport(parsed.scheme, parsed.host, addresses)
    except AddressRefused as err:
        raise ServiceError(err.code, err.message, field=field) from err  # i18n-ok: inference_backend's network policy


def check_grpc_address(address: str) -> None:
    """The informational gRPC endpoint (``host:port``, or ``grpc(s)://host:port``): the same address
    rules apply (the portal itself does not dial it)."""
    try:
        parsed = parse_url(address if "://" in address else f"grpc://{address}")
    except LocationParseError:
        parsed = None
    if parsed is None or parsed.scheme not in ("grpc", "grpcs") or not parsed.host:
        raise ServiceError("invalid_server_url", _("the gRPC endpoint is host:port"), field="grpc_url")
    try:
        server_policy().resolve(parsed.host, parsed.port)
    except (socket.gaierror, UnicodeError):
        pass
    except AddressRefused as err:
        raise ServiceError(
            err.code, err.message, field="grpc_url"
        ) from err  # i18n-ok: inference_backend's network policy
