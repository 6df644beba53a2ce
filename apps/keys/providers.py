"""The portal's KEK provider, chosen by settings, and the envelope primitives the services use.
Internal to apps.keys: other apps go through apps.keys.services. The provider implementations
live in inference_backend.kek (no Django) because Triton hosts use the same code to unwrap."""

from __future__ import annotations

import io
from functools import lru_cache

from django.conf import settings

from inference_backend import envelope, stream
from inference_backend.kek import KekError, KekProvider, provider_from_env


@lru_cache(maxsize=1)
def get_kek_provider() -> KekProvider:
    return provider_from_env(
        {
            "SOVEREIGN_KEK_PROVIDER": settings.KEK_PROVIDER,
            "SOVEREIGN_LOCAL_KEK_FILE": str(settings.LOCAL_KEK_FILE),
            **{f"SOVEREIGN_PKCS11_{key}": value for key, value in settings.PKCS11.items() if value},
        }
    )


def encrypt(plaintext: bytes, aad: bytes, dek: bytes, *, suite: str, kek_id: str, kek_version: str) -> bytes:
    """The segmented stream format (docs/encryption-format.md): each segment verified on its own.
    `kek_id`/`kek_version` only go into the header (informational); the data key row is authoritative."""
    out = io.BytesIO()
    stream.encrypt_stream(io.BytesIO(plaintext), out, dek, aad, suite=suite, kek_id=kek_id, kek_version=kek_version)
    return out.getvalue()


def decrypt(ciphertext: bytes, wrapped: bytes, kek_id: str, aad: bytes) -> bytes:
    """Unwrap the data key and decrypt in memory (v1 and v2 files)."""
    dek = get_kek_provider().unwrap(wrapped, kek_id)
    return stream.decrypt_artifact_file(io.BytesIO(ciphertext), dek, aad)


__all__ = ["KekError", "decrypt", "encrypt", "envelope", "get_kek_provider"]
