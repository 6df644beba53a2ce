"""urllib3 connections to Triton servers that obey a :class:`~inference_backend.netpolicy.ServerPolicy`
and a pinned TLS configuration.

Every **new** connection resolves the host itself, checks every address the name resolves to,
and then connects to one of those checked addresses (never a second lookup): a name that
resolved to an allowed address at registration and now resolves to a metadata address (DNS
rebinding) is refused at that moment. Keep-alive connections are reused without a lookup; a
pooled connection stays with the address it was opened to. TLS still verifies the certificate
against the **host name** of the URL (SNI and hostname check are urllib3's), with the pinned CA
when one is configured, and presents the client certificate when one is.

No Django here: used by :class:`inference_backend.client.TritonClient` and the gateway's pool.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from inference_backend.netpolicy import ServerPolicy


@dataclass(frozen=True)
class TlsConfig:
    """Files for https to Triton: ``ca_file`` pins the CA (only it is trusted, not the system
    store); ``client_cert_file``/``client_key_file`` (PEM, key unencrypted and 0600) for mutual TLS."""

    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""

    def pool_kwargs(self) -> dict[str, Any]:
        """The urllib3 pool keyword arguments (applied to https pools only)."""
        kwargs: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        if self.ca_file:
            kwargs["ca_certs"] = self.ca_file
        if self.client_cert_file:
            kwargs["cert_file"] = self.client_cert_file
            kwargs["key_file"] = self.client_key_file or None
        return kwargs


class _Guarded:
    """Mixin for urllib3 connections: resolve, check, connect to the checked address."""

    scheme = "http"

    def __init__(self, *args: Any, policy: ServerPolicy, **kwargs: Any) -> None:
        self._policy = policy
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        host, port = self.host, self.port  # type: ignore[attr-defined]
        try:
            addresses = self._policy.resolve(host, port)
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc  # type: ignore[arg-type]
        self._policy.check_transport(self.scheme, host, addresses)
        error: Exception | None = None
        for address in addresses:
            try:
                sock = connection.create_connection(
                    (str(address), port),
                    self.timeout,  # type: ignore[attr-defined]
                    source_address=self.source_address,  # type: ignore[attr-defined]
                    socket_options=self.socket_options,  # type: ignore[attr-defined]
                )
            except TimeoutError:
                error = ConnectTimeoutError(self, f"Connection to {host} timed out. (connect timeout={self.timeout})")  # type: ignore[attr-defined]
                continue
            except OSError as exc:
                error = NewConnectionError(self, f"Failed to establish a new connection: {exc}")  # type: ignore[arg-type]
                continue
            sys.audit("http.client.connect", self, host, port)
            return sock
        assert error is not None
        raise error


class GuardedHTTPConnection(_Guarded, HTTPConnection):
    """Plain HTTP; in production only to loopback addresses."""

    scheme = "http"


class GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    """HTTPS with the pool's TLS settings (pinned CA, client certificate)."""

    scheme = "https"


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedPoolManager(PoolManager):
    """A PoolManager whose every connection obeys ``policy`` and, for https, ``tls``.

    Only ``http`` and ``https`` URLs can be opened.
    """

    def __init__(self, policy: ServerPolicy, tls: TlsConfig | None = None, **kwargs: Any) -> None:
        """``kwargs`` as for urllib3's PoolManager (``maxsize``, ``block``, ``retries`` ...)."""
        super().__init__(**{**(tls or TlsConfig()).pool_kwargs(), **kwargs})
        self.policy = policy
        self.tls = tls or TlsConfig()
        self.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["policy"] = self.policy
        return pool
