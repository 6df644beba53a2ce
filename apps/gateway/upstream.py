"""Pooled keep-alive HTTP connections to Triton servers, shared by all gateway threads."""

from __future__ import annotations

import threading

import urllib3
from django.conf import settings

from apps.core.errors import ServiceError

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
    except urllib3.exceptions.NewConnectionError as err:
        # urllib3 2 derives NewConnectionError (e.g. connection refused) from ConnectTimeoutError:
        # catch it first, or a server that is down would be reported as slow.
        raise ServiceError("triton_unavailable", f"the inference server is unreachable: {err}", 503) from None
    except urllib3.exceptions.TimeoutError as err:
        raise ServiceError("triton_timeout", f"the inference server did not answer in time: {err}", 504) from None
    except urllib3.exceptions.HTTPError as err:
        raise ServiceError("triton_unavailable", f"the inference server is unreachable: {err}", 503) from None
