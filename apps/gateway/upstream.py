"""Pooled keep-alive HTTP connections to Triton servers, shared by all gateway threads."""

from __future__ import annotations

import logging
import threading

import urllib3
from django.conf import settings

from apps.core.errors import ServiceError

log = logging.getLogger(__name__)
UNREACHABLE = "the inference server is unreachable; quote the X-Request-ID header to the operator"

_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()


def pool() -> urllib3.PoolManager:
    global _pool
    if _pool is not None:
        return _pool
    with _pool_lock:  # two threads' first calls must not build two pools
        if _pool is None:
            _pool = urllib3.PoolManager(num_pools=32, maxsize=settings.GATEWAY_POOL_SIZE, block=False, retries=False)
    return _pool


def forward(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> urllib3.BaseHTTPResponse:
    """One request upstream. Connection failures and timeouts become ServiceErrors with stable codes."""
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
    except urllib3.exceptions.NewConnectionError as err:
        # urllib3 2 derives NewConnectionError (e.g. connection refused) from ConnectTimeoutError:
        # catch it first, or a server that is down would be reported as slow.
        log.warning("inference server unreachable: %s", err)
        raise ServiceError("triton_unavailable", UNREACHABLE, 503) from None
    except urllib3.exceptions.TimeoutError as err:
        log.warning("inference server timed out: %s", err)
        raise ServiceError("triton_timeout", "the inference server did not answer in time", 504) from None
    except urllib3.exceptions.HTTPError as err:
        log.warning("inference server unreachable: %s", err)
        raise ServiceError("triton_unavailable", UNREACHABLE, 503) from None
