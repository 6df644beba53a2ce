"""Per-server credentials for Triton's restricted APIs (issue 15, docs/triton-credential.md).

A Triton server started with `--http-restricted-api` / `--grpc-restricted-protocol` (see
inference_backend/server.py `restriction_flags`) refuses inference, metadata and repository calls
that do not carry its credential in the `sovereign-triton-key` header. The portal keeps that
credential sealed (AES/SM4-GCM under a data key of its own, wrapped by the KEK: apps.keys) in the
server's row, opens it in memory for each client that calls the server (deployments, probes, the
gateway's data plane) and never writes it to a log, an audit event or an answer.

A server without a credential keeps working (the check `triton.bypass_refused` then fails for it).
"""

from __future__ import annotations

import re
import secrets
import threading

from django.db import DEFAULT_DB_ALIAS, transaction

from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import ServiceError, _, get_or_404
from apps.keys import services as keys
from apps.keys.models import Purpose
from inference_backend.server import CREDENTIAL_HEADER

from .models import InferenceServer

# What Triton's option parser accepts inside `<apis>:<key>=<value>` (no ':', '=', ',', spaces), and
# long enough to be a secret: 32 to 256 URL-safe characters.
CREDENTIAL_RE = re.compile(r"[A-Za-z0-9._~+/-]{32,256}")

__all__ = [
    "CREDENTIAL_HEADER",
    "CREDENTIAL_RE",
    "credential_for",
    "credentials_for",
    "generate_credential",
    "set_server_credential",
]


def generate_credential() -> str:
    """A fresh credential: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def _aad(server_pk: int) -> bytes:
    # Bound to the row: a ciphertext copied onto another server's row does not open.
    return f"sovereign:triton-credential:server={server_pk}".encode()


def validate_credential(credential: str) -> str:
    """The credential, or ServiceError 400 `invalid_credential` (the value never appears in the error)."""
    if not isinstance(credential, str) or not CREDENTIAL_RE.fullmatch(credential):
        raise ServiceError(
            "invalid_credential",
            _("a Triton credential is 32 to 256 characters from A-Z a-z 0-9 . _ ~ + / -"),
            field="credential",
        )
    return credential


def set_server_credential(*, server_id: int, credential: str | None, actor, source: Source = SYSTEM) -> InferenceServer:
    """Store (or, with None, remove) a server's credential, sealed; the previous one's data key is
    crypto-shredded. Records `deployment.server.credential` (set / replaced / removed, never the value).
    Nothing is saved when the value is refused or sealing fails."""
    server = get_or_404(
        InferenceServer,
        "server_not_found",
        _("no inference server with id %(server_id)s") % {"server_id": server_id},
        pk=server_id,
    )
    sealed = None
    if credential is not None:
        validate_credential(credential)
        sealed = keys.seal(credential.encode(), _aad(server.pk), purpose=Purpose.TRITON_CREDENTIAL)
    with transaction.atomic():
        server = InferenceServer.objects.select_for_update().get(pk=server.pk)
        old_key_id = server.credential_key_id
        if sealed is None:
            server.credential_ciphertext, server.credential_key = b"", None
        else:
            server.credential_ciphertext = sealed.ciphertext
            server.credential_key = keys.store_data_key(sealed.data_key, actor=actor, source=source)
        server.save(update_fields=["credential_ciphertext", "credential_key"])
        if old_key_id is not None:
            keys.destroy_data_key(
                data_key_id=old_key_id,
                reason="Triton credential replaced" if sealed is not None else "Triton credential removed",
                actor=actor,
                source=source,
                target=server,
            )
        change = "removed" if sealed is None else ("replaced" if old_key_id is not None else "set")
        record_event(
            "deployment.server.credential",
            actor=actor,
            source=source,
            target=server,
            details={"change": change, "has_credential": sealed is not None},
        )
    _forget(server.pk)
    return server


# Opened credentials by server id, with the data key they were sealed under: a changed credential
# has a new data key, so a stale entry is never used. Process memory only.
_cache: dict[int, tuple[int, str]] = {}
_cache_lock = threading.Lock()


def _forget(server_pk: int) -> None:
    with _cache_lock:
        _cache.pop(server_pk, None)


def _open(server: InferenceServer) -> str | None:
    if server.credential_key_id is None:
        return None
    with _cache_lock:
        hit = _cache.get(server.pk)
    if hit is not None and hit[0] == server.credential_key_id:
        return hit[1]
    value = keys.open_sealed(
        bytes(server.credential_ciphertext), _aad(server.pk), data_key=server.credential_key
    ).decode()
    with _cache_lock:
        _cache[server.pk] = (server.credential_key_id, value)
    return value


def credential_for(server: InferenceServer) -> str | None:
    """The server's credential in clear (memory only), or None when it has none."""
    if server.credential_key_id is None:
        return None
    return credentials_for([server.pk]).get(server.pk)


def credentials_for(server_ids, using: str = DEFAULT_DB_ALIAS) -> dict[int, str]:
    """{server id: credential} for those of `server_ids` that have one (one query)."""
    ids = {i for i in server_ids if i is not None}
    if not ids:
        return {}
    rows = (
        InferenceServer.objects.using(using)
        .select_related("credential_key")
        .filter(pk__in=ids, credential_key__isnull=False)
    )
    return {server.pk: value for server in rows if (value := _open(server)) is not None}
