"""The installation's pseudonymisation key (issue 6): an HMAC key that makes the gateway's
pseudonyms consistent within the installation (the tenant) and unguessable outside it.

The 32 random bytes exist on disk only wrapped by the KEK (inside the HSM with the pkcs11
provider), in `SOVEREIGN_PSEUDONYM_KEY_FILE` (JSON: kek_id, wrapped, base64; mode 0600). A
process unwraps it once and keeps it in memory. KEK rotation re-wraps it with the new version
and retirement refuses a version that still wraps it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

from django.conf import settings

from inference_backend.private_file import write_private

from .providers import get_kek_provider

_lock = threading.Lock()
_cache: dict[str, bytes] = {}


def _path() -> Path:
    return Path(settings.PSEUDONYM_KEY_FILE)


def _read() -> dict | None:
    try:
        return json.loads(_path().read_text())
    except FileNotFoundError:
        return None


def _write(record: dict, *, exclusive: bool) -> bool:
    """Write the record (mode 0600, atomically). `exclusive`: only if no key file exists yet
    (another process that created it first wins); returns whether it was written."""
    return write_private(_path(), json.dumps(record).encode(), exclusive=exclusive)


def pseudonym_key() -> bytes:
    """The key, unwrapped through the KEK provider (created and wrapped on first use)."""
    path = str(_path())
    with _lock:
        if path in _cache:
            return _cache[path]
        record = _read()
        if record is None:
            from .services import active_kek

            kek_id = active_kek().kek_id
            wrapped = get_kek_provider().wrap(os.urandom(32), kek_id)
            _write({"kek_id": kek_id, "wrapped": base64.b64encode(wrapped).decode()}, exclusive=True)
            record = _read()
        key = get_kek_provider().unwrap(base64.b64decode(record["wrapped"]), record["kek_id"])
        _cache[path] = key
        return key


def wrapping_kek_id() -> str | None:
    """The KEK version that wraps the key, or None when no key exists yet."""
    record = _read()
    return record["kek_id"] if record else None


def rewrap(to_kek_id: str) -> bool:
    """Re-wrap the key with `to_kek_id` (a rotation's last step). True if it was re-wrapped."""
    with _lock:
        record = _read()
        if record is None or record["kek_id"] == to_kek_id:
            return False
        provider = get_kek_provider()
        key = provider.unwrap(base64.b64decode(record["wrapped"]), record["kek_id"])
        wrapped = provider.wrap(key, to_kek_id)
        _write({"kek_id": to_kek_id, "wrapped": base64.b64encode(wrapped).decode()}, exclusive=False)
        return True


def forget() -> None:
    """Drop the in-memory copy (tests; a key file replaced by an operator)."""
    with _lock:
        _cache.clear()
