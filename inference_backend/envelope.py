"""Envelope encryption of model artifacts.

A model artifact is encrypted with a per-artifact data encryption key (DEK);
the DEK itself is wrapped by a key encryption key (see :mod:`inference_backend.kek`).

Blob layout (format version 1)::

    offset  size  field
    0       4     magic b"SVRN"
    4       1     format version (1)
    5       1     cipher suite (1 = AES-256-GCM)
    6       12    random nonce
    18      n+16  AES-GCM ciphertext || 16-byte tag

The header (magic .. nonce) is prepended to the caller's AAD, so changing any
header byte (for example swapping in the nonce of another blob) fails
authentication. The version and suite bytes leave room for the streamed,
segmented format and the SM4 suite that later issues add.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"SVRN"
FORMAT_VERSION = 1
SUITE_AES_256_GCM = 1
SUPPORTED_SUITES = {SUITE_AES_256_GCM: "AES-256-GCM"}
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
HEADER_LEN = len(MAGIC) + 1 + 1 + NONCE_LEN


class ArtifactDecryptError(Exception):
    """The blob is not a valid Sovereign artifact, or it cannot be authenticated."""


def generate_dek() -> bytes:
    """Return a fresh random 256-bit data encryption key."""
    return AESGCM.generate_key(bit_length=256)


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _check_key(dek: bytes) -> None:
    if not isinstance(dek, bytes | bytearray) or len(dek) != KEY_LEN:
        raise ValueError(f"data key must be {KEY_LEN} bytes")


def encrypt_artifact(plaintext: bytes, dek: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` with AES-256-GCM under ``dek``; ``aad`` is authenticated, not stored.

    Returns the self-describing blob described in the module docstring. The same
    ``aad`` must be passed to :func:`decrypt_artifact`.
    """
    _check_key(dek)
    nonce = os.urandom(NONCE_LEN)
    header = MAGIC + bytes([FORMAT_VERSION, SUITE_AES_256_GCM]) + nonce
    return header + AESGCM(bytes(dek)).encrypt(nonce, bytes(plaintext), header + bytes(aad))


def decrypt_artifact(blob: bytes, dek: bytes, aad: bytes) -> bytes:
    """Decrypt a blob produced by :func:`encrypt_artifact`.

    Raises :class:`ArtifactDecryptError` for a blob that is not a Sovereign
    artifact, uses an unknown format version or cipher suite, is truncated, or
    fails authentication (wrong key, tampered bytes or wrong ``aad``).
    """
    blob = bytes(blob)
    if blob[: len(MAGIC)] != MAGIC:
        if len(blob) < len(MAGIC) and MAGIC.startswith(blob):
            raise ArtifactDecryptError(f"encrypted artifact is truncated: {len(blob)} bytes")
        raise ArtifactDecryptError("not a Sovereign encrypted artifact (bad magic bytes)")
    if len(blob) < HEADER_LEN + TAG_LEN:
        raise ArtifactDecryptError(
            f"encrypted artifact is truncated: {len(blob)} bytes, the minimum is {HEADER_LEN + TAG_LEN}"
        )
    version, suite = blob[4], blob[5]
    if version != FORMAT_VERSION:
        raise ArtifactDecryptError(
            f"unsupported encrypted artifact format version {version} (this host supports {FORMAT_VERSION})"
        )
    if suite not in SUPPORTED_SUITES:
        raise ArtifactDecryptError(
            f"unsupported cipher suite {suite} (this host supports {sorted(SUPPORTED_SUITES.items())})"
        )
    if not isinstance(dek, bytes | bytearray) or len(dek) != KEY_LEN:
        raise ArtifactDecryptError(f"data key must be {KEY_LEN} bytes")
    header, body = blob[:HEADER_LEN], blob[HEADER_LEN:]
    nonce = header[6:HEADER_LEN]
    try:
        return AESGCM(bytes(dek)).decrypt(nonce, body, header + bytes(aad))
    except InvalidTag:
        raise ArtifactDecryptError(
            "encrypted artifact failed authentication: wrong data key, wrong associated data, or tampered bytes"
        ) from None
