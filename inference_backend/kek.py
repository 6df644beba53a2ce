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
import errno
import hashlib
import hmac
import os
import stat
import threading
from collections.abc import Mapping

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

KEK_LEN = 32
_KEK_ID_LABEL = b"sovereign-kek-id"
SUPPORTED_PROVIDERS = ("local", "pkcs11")


class KekError(Exception):
    """A KEK cannot be loaded, or a data key cannot be wrapped/unwrapped with it."""


class KekProvider(abc.ABC):
    """Interface of every key encryption key provider."""

    @property
    @abc.abstractmethod
    def kek_id(self) -> str:
        """Identifier of the KEK and its version, e.g. ``local:0123456789abcdef``; reveals no key material."""

    @abc.abstractmethod
    def wrap(self, dek: bytes) -> bytes:
        """Wrap (encrypt) a data key with this provider's KEK."""

    @abc.abstractmethod
    def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        """Unwrap a data key that was wrapped by the KEK ``kek_id``.

        Raises :class:`KekError` when ``kek_id`` is not this provider's KEK or
        the wrapped key does not unwrap.
        """


def _fingerprint(kek: bytes) -> str:
    return hmac.new(kek, _KEK_ID_LABEL, hashlib.sha256).hexdigest()[:16]


class LocalKeystoreProvider(KekProvider):
    """Development keystore: a 32-byte KEK in a file readable only by its owner.

    The file is created on first use (atomically, mode 0600, parent directory
    0700). A file that is accessible by group or others, or whose size is not
    32 bytes, is refused.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Remember the keystore path; the key is loaded (or created) lazily on first use."""
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._kek: bytes | None = None

    def _key(self) -> bytes:
        with self._lock:
            if self._kek is None:
                self._kek = self._load_or_create()
            return self._kek

    def _load_or_create(self) -> bytes:
        try:
            return self._read()
        except FileNotFoundError:
            pass
        self._create()
        return self._read()

    def _read(self) -> bytes:
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
            if st.st_size != KEK_LEN:
                raise KekError(f"KEK file {self.path} holds {st.st_size} bytes, expected {KEK_LEN}")
            data = b""
            while len(data) < KEK_LEN:
                chunk = os.read(fd, KEK_LEN - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) != KEK_LEN:
            raise KekError(f"KEK file {self.path}: short read ({len(data)} bytes)")
        return data

    def _create(self) -> None:
        """Create the keystore without ever exposing a partially written file.

        The key is written to a private temporary file that is then hard-linked
        to the final name: ``link`` fails with EEXIST if another process won the
        race, in which case that process's key is used. On filesystems without
        hard links, fall back to ``O_CREAT | O_EXCL`` on the final name.
        """
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        key = os.urandom(KEK_LEN)
        tmp = f"{self.path}.tmp-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        self._write_exclusive(tmp, key)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise KekError(f"cannot create KEK file {self.path}: {exc}") from exc
            with contextlib.suppress(FileExistsError):  # lost the race: use the winner's key
                self._write_exclusive(self.path, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @staticmethod
    def _write_exclusive(path: str, key: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(key)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def kek_id(self) -> str:
        """``local:`` followed by 16 hex digits of HMAC-SHA256(KEK, "sovereign-kek-id")."""
        return f"local:{_fingerprint(self._key())}"

    def wrap(self, dek: bytes) -> bytes:
        """Wrap ``dek`` with AES key wrap with padding (RFC 5649)."""
        if not dek:
            raise KekError("cannot wrap an empty data key")
        return aes_key_wrap_with_padding(self._key(), bytes(dek))

    def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        """Unwrap an RFC 5649 wrapped key after checking that ``kek_id`` names this host's KEK."""
        mine = self.kek_id
        if kek_id != mine:
            raise KekError(f"data key was wrapped with KEK {kek_id}, this host has KEK {mine}")
        try:
            return aes_key_unwrap_with_padding(self._key(), bytes(wrapped))
        except (InvalidUnwrap, ValueError) as exc:
            raise KekError(f"wrapped data key does not unwrap with KEK {mine}: it is corrupt or truncated") from exc


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
