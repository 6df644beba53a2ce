"""The portal's KEK provider, chosen by settings. The provider implementations themselves live
in inference_backend.kek (no Django) because Triton hosts use the same code to unwrap."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from inference_backend import envelope, stream
from inference_backend.kek import KekError, KekProvider, provider_from_env

SUITE_AES_256_GCM = "AES-256-GCM"


@lru_cache(maxsize=1)
def get_kek_provider() -> KekProvider:
    return provider_from_env(
        {
            "SOVEREIGN_KEK_PROVIDER": settings.KEK_PROVIDER,
            "SOVEREIGN_LOCAL_KEK_FILE": str(settings.LOCAL_KEK_FILE),
            **{f"SOVEREIGN_PKCS11_{key}": value for key, value in settings.PKCS11.items() if value},
        }
    )


@dataclass(frozen=True)
class SealedArtifact:
    ciphertext: bytes
    wrapped_dek: bytes
    kek_id: str
    suite: str


def seal(plaintext: bytes, aad: bytes) -> SealedArtifact:
    """Encrypt with a fresh 256-bit data key and wrap that key with the active KEK version. The
    data key exists only in this function's frame. The caller's transaction must confirm the
    version with `apps.keys.services.lock_for_artifact` (a rotation may have happened meanwhile)."""
    from .services import active_kek

    kek = active_kek()
    provider = get_kek_provider()
    dek = envelope.generate_dek()
    out = io.BytesIO()
    # The segmented stream format (docs/encryption-format.md): each segment verified on its own.
    stream.encrypt_stream(
        io.BytesIO(plaintext),
        out,
        dek,
        aad,
        suite=settings.ARTIFACT_SUITE,
        kek_id=kek.kek_id,
        kek_version=str(kek.version),
    )
    try:
        wrapped = provider.wrap(dek, kek.kek_id)
    finally:
        del dek
    return SealedArtifact(
        ciphertext=out.getvalue(), wrapped_dek=wrapped, kek_id=kek.kek_id, suite=settings.ARTIFACT_SUITE
    )


def open_sealed(ciphertext: bytes, wrapped_dek: bytes, kek_id: str, aad: bytes) -> bytes:
    """Decrypt an artifact in memory (used by integrity checks; deploys never decrypt in the portal)."""
    dek = get_kek_provider().unwrap(wrapped_dek, kek_id)
    return stream.decrypt_artifact_file(io.BytesIO(ciphertext), dek, aad)


__all__ = ["KekError", "SealedArtifact", "get_kek_provider", "open_sealed", "seal"]
