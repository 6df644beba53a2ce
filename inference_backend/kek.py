"""Key encryption key (KEK) providers.

A provider wraps and unwraps data encryption keys (DEKs). Every provider exposes
a ``kek_id`` that names the KEK (and its version) without revealing it, so a
host can tell "this DEK was wrapped by a KEK I do not have" apart from
"this wrapped DEK is corrupt".

Providers: the development ``local`` keystore, and ``pkcs11`` (an HSM, see
:mod:`inference_backend.pkcs11_kek`) using the same RFC 5649 wrapping as
PKCS#11 ``CKM_AES_KEY_WRAP_PAD``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import hmac
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from .private_file import write_private

KEK_LEN = 32
_KEK_ID_LABEL = b"sovereign-kek-id"
SUPPORTED_PROVIDERS = ("local", "pkcs11")


class KekError(Exception):
    """A KEK cannot be loaded, or a data key cannot be wrapped/unwrapped with it."""


class KekProvider(abc.ABC):
    """Interface of every key encryption key provider.

    A provider holds one or more *versions* of its KEK. ``kek_id`` names the current version,
    which ``wrap`` uses unless told otherwise; ``unwrap`` accepts any version the provider still
    holds, so data keys wrapped before a rotation stay readable until they are re-wrapped and the
    old version is destroyed (``destroy_version``).
    """

    @property
    @abc.abstractmethod
    def kek_id(self) -> str:
        """Identifier of the current KEK version, e.g. ``local:0123456789abcdef``; reveals no key material."""

    @abc.abstractmethod
    def wrap(self, dek: bytes, kek_id: str | None = None) -> bytes:
        """Wrap (encrypt) a data key with the KEK version ``kek_id`` (default: the current one)."""

    @abc.abstractmethod
    def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        """Unwrap a data key that was wrapped by the KEK version ``kek_id``.

        Raises :class:`KekError` when this provider does not hold ``kek_id`` or the wrapped key
        does not unwrap.
        """

    @abc.abstractmethod
    def create_version(self) -> str:
        """Create the next KEK version, make it this provider's current one and return its id."""

    @abc.abstractmethod
    def destroy_version(self, kek_id: str) -> None:
        """Destroy the KEK version ``kek_id`` for good (never the current one)."""

    @abc.abstractmethod
    def describe(self, kek_id: str) -> KekVersion:
        """Version number and location of ``kek_id`` (no key material); KekError if not this provider's."""


@dataclass(frozen=True)
class KekVersion:
    kek_id: str
    provider: str
    version: int
    hsm_token: str = ""
    hsm_label: str = ""


def _fingerprint(kek: bytes) -> str:
    return hmac.new(kek, _KEK_ID_LABEL, hashlib.sha256).hexdigest()[:16]


_DESTROYED = bytes(KEK_LEN)  # a destroyed version's slot: zeros, never reused
MAX_VERSIONS = 1024


class LocalKeystoreProvider(KekProvider):
    """Development keystore: AES-256 KEK versions in one file readable only by its owner.

    The file holds one 32-byte key per version, version 1 first (a keystore from before
    rotation existed is a file of exactly one key). A destroyed version's slot is overwritten
    with zeros, so version numbers never shift. The file is created on first use (atomically,
    mode 0600, parent directory 0700) and rewritten atomically (temporary file + rename, under
    an exclusive ``flock`` on ``<file>.lock``) by ``create_version`` and ``destroy_version``.
    A file that is accessible by group or others, or whose size is not a positive multiple of
    32 bytes, is refused. Each version's id is ``local:`` + HMAC-SHA256(key, label)[:16 hex].
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Remember the keystore path; the keys are loaded (or created) lazily on first use."""
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._slots: list[bytes] | None = None

    # -- loading -------------------------------------------------------------------------

    def _keys(self, reload: bool = False) -> list[bytes]:
        with self._lock:
            if self._slots is None or reload:
                self._slots = self._load_or_create()
            return self._slots

    def _load_or_create(self) -> list[bytes]:
        try:
            return self._read()
        except FileNotFoundError:
            pass
        self._create()
        return self._read()

    def _read(self) -> list[bytes]:
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KekError(f"KEK file {self.path} is not a regular file")
            if st.st_mode & 0o077:
                raise KekError(
                    f"KEK file {self.path} has mode {stat.S_IMODE(st.st_mode):04o}: it is accessible by group or "
                    f"others; run `chmod 600 {self.path}`"
                )
            size = st.st_size
            if size == 0 or size % KEK_LEN or size > KEK_LEN * MAX_VERSIONS:
                raise KekError(
                    f"KEK file {self.path} holds {size} bytes, expected {KEK_LEN} per KEK version "
                    f"(a positive multiple of {KEK_LEN})"
                )
            data = b""
            while len(data) < size:
                chunk = os.read(fd, size - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) != size:
            raise KekError(f"KEK file {self.path}: short read ({len(data)} of {size} bytes)")
        slots = [data[i : i + KEK_LEN] for i in range(0, size, KEK_LEN)]
        if all(slot == _DESTROYED for slot in slots):
            raise KekError(f"KEK file {self.path} holds no live KEK version (every version was destroyed)")
        return slots

    def _create(self) -> None:
        """Create the keystore without ever exposing a partially written file; if another
        process won the race, its key is used."""
        try:
            write_private(self.path, os.urandom(KEK_LEN), exclusive=True)
        except OSError as exc:
            raise KekError(f"cannot create KEK file {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _rewriting(self):
        """Hold the keystore's exclusive lock; yield the current slots (a list to modify), then
        replace the file atomically with the modified slots."""
        import fcntl

        self._keys()  # make sure the file exists
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            slots = list(self._read())
            yield slots
            write_private(self.path, b"".join(slots))
        finally:
            os.close(lock_fd)
        self._keys(reload=True)

    # -- versions ------------------------------------------------------------------------

    def _find(self, kek_id: str) -> tuple[int, bytes] | None:
        """(version, key) for ``kek_id``, re-reading the file once in case another process rotated."""
        for reload in (False, True):
            for index, slot in enumerate(self._keys(reload=reload)):
                if slot != _DESTROYED and f"local:{_fingerprint(slot)}" == kek_id:
                    return index + 1, slot
        return None

    def _live_ids(self) -> list[str]:
        return [f"local:{_fingerprint(slot)}" for slot in self._keys() if slot != _DESTROYED]

    @property
    def kek_id(self) -> str:
        """The newest live version: ``local:`` followed by 16 hex digits of HMAC-SHA256(KEK, "sovereign-kek-id")."""
        return self._live_ids()[-1]

    def describe(self, kek_id: str) -> KekVersion:
        found = self._find(kek_id)
        if found is None:
            raise KekError(f"KEK {kek_id} is not in the keystore {self.path}")
        return KekVersion(kek_id=kek_id, provider="local", version=found[0])

    def create_version(self) -> str:
        with self._rewriting() as slots:
            if len(slots) >= MAX_VERSIONS:
                raise KekError(f"KEK file {self.path} already holds {MAX_VERSIONS} versions")
            key = os.urandom(KEK_LEN)
            slots.append(key)
        return f"local:{_fingerprint(key)}"

    def destroy_version(self, kek_id: str) -> None:
        with self._rewriting() as slots:
            live = [i for i, slot in enumerate(slots) if slot != _DESTROYED]
            match = [i for i in live if f"local:{_fingerprint(slots[i])}" == kek_id]
            if not match:
                raise KekError(f"KEK {kek_id} is not in the keystore {self.path} (already destroyed?)")
            if match[0] == live[-1]:
                raise KekError(f"KEK {kek_id} is the current version; rotate before destroying it")
            slots[match[0]] = _DESTROYED

    # -- wrapping ------------------------------------------------------------------------

    def wrap(self, dek: bytes, kek_id: str | None = None) -> bytes:
        """Wrap ``dek`` with AES key wrap with padding (RFC 5649)."""
        if not dek:
            raise KekError("cannot wrap an empty data key")
        if kek_id is None:
            key = self._keys()[max(i for i, s in enumerate(self._keys()) if s != _DESTROYED)]
        else:
            found = self._find(kek_id)
            if found is None:
                raise KekError(f"cannot wrap with KEK {kek_id}: this host has KEK {', '.join(self._live_ids())}")
            key = found[1]
        return aes_key_wrap_with_padding(key, bytes(dek))

    def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        """Unwrap an RFC 5649 wrapped key after checking that ``kek_id`` names a KEK version of this host."""
        found = self._find(kek_id)
        if found is None:
            raise KekError(f"data key was wrapped with KEK {kek_id}, this host has KEK {', '.join(self._live_ids())}")
        try:
            return aes_key_unwrap_with_padding(found[1], bytes(wrapped))
        except (InvalidUnwrap, ValueError) as exc:
            raise KekError(f"wrapped data key does not unwrap with KEK {kek_id}: it is corrupt or truncated") from exc


def provider_from_env(environ: Mapping[str, str] = os.environ) -> KekProvider:
    """Build the KEK provider configured by ``SOVEREIGN_KEK_PROVIDER`` (default ``local``).

    For ``local``, ``SOVEREIGN_LOCAL_KEK_FILE`` names the keystore file. For ``pkcs11``:
    ``SOVEREIGN_PKCS11_MODULE`` (default SoftHSM2's library), ``SOVEREIGN_PKCS11_TOKEN``,
    ``SOVEREIGN_PKCS11_PIN_FILE`` (the PIN is only ever read from that file) and
    ``SOVEREIGN_PKCS11_KEY_LABEL`` (e.g. ``sovereign-kek-v1``).
    """
    name = (environ.get("SOVEREIGN_KEK_PROVIDER") or "local").strip().lower()
    if name == "local":
        path = (environ.get("SOVEREIGN_LOCAL_KEK_FILE") or "").strip()
        if not path:
            raise KekError("SOVEREIGN_LOCAL_KEK_FILE is not set: the local KEK provider needs the keystore file path")
        return LocalKeystoreProvider(path)
    if name == "pkcs11":
        from inference_backend import pkcs11_kek

        settings = {}
        for var in ("SOVEREIGN_PKCS11_TOKEN", "SOVEREIGN_PKCS11_PIN_FILE", "SOVEREIGN_PKCS11_KEY_LABEL"):
            settings[var] = (environ.get(var) or "").strip()
            if not settings[var]:
                raise KekError(f"{var} is not set: the pkcs11 KEK provider needs it")
        return pkcs11_kek.Pkcs11KekProvider(
            module_path=(environ.get("SOVEREIGN_PKCS11_MODULE") or "").strip() or pkcs11_kek.DEFAULT_MODULE,
            token_label=settings["SOVEREIGN_PKCS11_TOKEN"],
            pin=pkcs11_kek.read_pin_file(settings["SOVEREIGN_PKCS11_PIN_FILE"]),
            key_label=settings["SOVEREIGN_PKCS11_KEY_LABEL"],
        )
    raise KekError(f"unknown KEK provider {name!r}; supported: {', '.join(SUPPORTED_PROVIDERS)}")
