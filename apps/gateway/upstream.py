"""Pooled keep-alive HTTP connections to Triton servers, shared by all gateway threads.

The pool obeys the Triton server policy and TLS settings (apps/deployments/transport.py): every
new connection re-resolves and re-checks the server's address and, for https, verifies the
certificate against the pinned CA and presents the client certificate. Reused keep-alive
connections cost nothing extra.
"""

from __future__ import annotations

import logging
import threading

import urllib3
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from apps.core.errors import ServiceError
from apps.deployments.selectors import server_policy, tls_config
from inference_backend.client import clean_upstream_text
from inference_backend.netpolicy import AddressRefused
from inference_backend.transport import GuardedPoolManager

log = logging.getLogger(__name__)
UNREACHABLE = "the inference server is unreachable; quote the X-Request-ID header to the operator"

_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()
_POOL_SETTINGS = frozenset(
    {
        "GATEWAY_POOL_SIZE",
        "PRODUCTION",
        "TRITON_ALLOWED_NETWORKS",
        "TRITON_CA_FILE",
        "TRITON_CLIENT_CERT_FILE",
        "TRITON_CLIENT_KEY_FILE",
    }
)


def pool() -> urllib3.PoolManager:
    global _pool
    if _pool is not None:
        return _pool
    with _pool_lock:  # two threads' first calls must not build two pools
        if _pool is None:
            size = settings.GATEWAY_POOL_SIZE
            _pool = GuardedPoolManager(
                server_policy(), tls_config(), num_pools=32, maxsize=size, block=False, retries=False
            )
    return _pool


def reset_pool() -> None:
    """Drop the pool (and its connections): the next call builds one from the current settings."""
    global _pool
    with _pool_lock:
        old, _pool = _pool, None
    if old is not None:
        old.clear()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting in _POOL_SETTINGS:
        reset_pool()


def forward(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> urllib3.BaseHTTPResponse:
    """One request upstream. Connection failures, timeouts, refused addresses and failed TLS
    handshakes become ServiceErrors with stable codes (their text cleaned)."""
    try:
        return pool().request(
            method,
            url,
            body=body,
            headers=headers,
            preload_content=True,
            redirect=False,
            timeout=urllib3.Timeout(connect=3.0, read=settings.TRITON_TIMEOUT),
        )
    # urllib3's text names the server's internal address and port: it goes to the log, not to the
    # caller (the audit event names the deployment and server).
    except AddressRefused as err:
        log.warning("inference server address refused by the server policy: %s", err.message)
        raise ServiceError(
            "triton_address_refused", "the inference server's address is refused by the server policy", 502
        ) from None
    except urllib3.exceptions.NewConnectionError as err:
        # urllib3 2 derives NewConnectionError (e.g. connection refused) from ConnectTimeoutError:
        # catch it first, or a server that is down would be reported as slow.
        raise _upstream("triton_unavailable", UNREACHABLE, err, 503) from None
    except urllib3.exceptions.TimeoutError as err:
        raise _upstream("triton_timeout", "the inference server did not answer in time", err, 504) from None
    except urllib3.exceptions.SSLError as err:
        raise _upstream("triton_tls_failed", "the TLS connection to the inference server failed", err, 502) from None
    except urllib3.exceptions.HTTPError as err:
        raise _upstream("triton_unavailable", UNREACHABLE, err, 503) from None


def _upstream(code: str, detail: str, err: Exception, status: int) -> ServiceError:
    """The caller gets the generic detail; the server log gets urllib3's words (cleaned)."""
    log.warning("inference server call failed (%s): %s", code, clean_upstream_text(str(err)))
    return ServiceError(code, detail, status)
