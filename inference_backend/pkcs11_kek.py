"""PKCS#11 (HSM) key encryption key provider.

The KEK is an AES-256 secret key object on an HSM token, created with
``EXTRACTABLE=False, SENSITIVE=True``: its value never leaves the HSM and this module never
asks for it. Data keys (DEKs) are wrapped and unwrapped *inside* the HSM with
``CKM_AES_KEY_WRAP_PAD`` (RFC 5649, the same wrapping as the local keystore).

Unwrapping creates the DEK as a *session* object (``TOKEN=False``) with ``EXTRACTABLE=True,
SENSITIVE=False`` so that its value can be read back and the artifact decrypted locally with
AES-GCM: the DEK, not the KEK, is what decrypts weights on the Triton host, and decrypting
hundreds of gigabytes through the HSM would be far too slow. The session object is destroyed
right after its value is read. Wrapping likewise imports the DEK as a short-lived session
object and asks the HSM to wrap it.

KEK labels carry a version suffix (``sovereign-kek-v1``); ``kek_id`` is
``pkcs11:<token label>:<key label>``. The configured label names the *family* (``sovereign-kek``)
and the first version: a rotation adds ``sovereign-kek-v2`` next to it, every wrapped key names
the version that wrapped it, and a provider unwraps with any version of its family that is still
on the token (looked up by label, handles cached per session).

PKCS#11 login is per process and token, not per session: the first session of a provider logs
in and the other sessions of its pool share that login, so ``unwrap`` never logs in per call.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import queue
import re
import threading
from collections.abc import Iterator

from inference_backend.kek import KekError, KekProvider, KekVersion

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
DEFAULT_KEY_LABEL = "sovereign-kek-v1"
KEK_BITS = 256
_VERSIONED = re.compile(r"^(?P<base>.+)-v(?P<n>[1-9][0-9]{0,8})$")
_POOL_TIMEOUT = 30.0

# Process-wide record of which PIN logged in to which token (login state is shared by every
# session of the process), so that a second provider with a wrong PIN is still refused while
# another provider keeps the token logged in.
_logins: dict[tuple[str, str], bytes] = {}
_logins_lock = threading.Lock()

# python-pkcs11 calls C_Initialize(NULL), which tells the module that the application will not
# call it from several threads at once (PKCS#11 v2.40 section 5.4); SoftHSM2 then runs without
# its own locks and crashes under concurrent calls. Every call into a module therefore holds
# that module's lock. The pool still saves a login and a C_OpenSession per operation.
_module_locks: dict[str, threading.RLock] = {}
_module_locks_guard = threading.Lock()


def _module_lock(module_path: str) -> threading.RLock:
    with _module_locks_guard:
        return _module_locks.setdefault(module_path, threading.RLock())


def _pkcs11():
    try:
        import pkcs11
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise KekError("python-pkcs11 is not installed: `pip install -r requirements.txt`") from exc
    return pkcs11


def _load_module(module_path: str):
    pkcs11 = _pkcs11()
    if not os.path.isfile(module_path):
        raise KekError(f"PKCS#11 module {module_path} not found (set SOVEREIGN_PKCS11_MODULE to the HSM's library)")
    try:
        with _module_lock(module_path):
            return pkcs11.lib(module_path)
    except pkcs11.PKCS11Error as exc:
        raise KekError(f"PKCS#11 module {module_path} cannot be loaded: {exc or type(exc).__name__}") from exc


def _get_token(lib, module_path: str, token_label: str):
    pkcs11 = _pkcs11()
    try:
        with _module_lock(module_path):
            return lib.get_token(token_label=token_label)
    except pkcs11.NoSuchToken as exc:
        raise KekError(f"PKCS#11 token {token_label!r} not found in module {module_path}") from exc
    except pkcs11.MultipleTokensReturned as exc:
        raise KekError(f"more than one PKCS#11 token is labelled {token_label!r} in module {module_path}") from exc
    except pkcs11.PKCS11Error as exc:
        raise KekError(f"cannot list the tokens of PKCS#11 module {module_path}: {type(exc).__name__}") from exc


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(b"sovereign-pkcs11-pin\0" + pin.encode()).digest()


def _open_logged_in(token, module_path: str, token_label: str, pin: str, rw: bool = False):
    """Open a session and log in as the user, tolerating a login already held by this process."""
    pkcs11 = _pkcs11()
    key = (module_path, token_label)
    with _logins_lock, _module_lock(module_path):
        try:
            session = token.open(rw=rw, user_pin=pin)
        except pkcs11.UserAlreadyLoggedIn:
            # Another session of this process is logged in; C_Login does not check the PIN then,
            # so compare it with the PIN that did log in.
            known = _logins.get(key)
            if known is not None and not hmac.compare_digest(known, _pin_digest(pin)):
                raise KekError(f"wrong PIN for PKCS#11 token {token_label!r}") from None
            session = token.open(rw=rw)
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange) as exc:
            raise KekError(f"wrong PIN for PKCS#11 token {token_label!r}") from exc
        except pkcs11.PinLocked as exc:
            raise KekError(f"the user PIN of PKCS#11 token {token_label!r} is locked") from exc
        except pkcs11.PKCS11Error as exc:
            raise KekError(f"cannot log in to PKCS#11 token {token_label!r}: {type(exc).__name__}") from exc
        _logins[key] = _pin_digest(pin)
        return session


def _find_kek(session, token_label: str, key_label: str):
    pkcs11 = _pkcs11()
    try:
        return session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=key_label)
    except pkcs11.NoSuchKey as exc:
        raise KekError(f"KEK {key_label!r} not found on PKCS#11 token {token_label!r}") from exc
    except pkcs11.MultipleObjectsReturned as exc:
        raise KekError(f"more than one key is labelled {key_label!r} on PKCS#11 token {token_label!r}") from exc


def create_kek(module_path: str, token_label: str, pin: str, key_label: str = DEFAULT_KEY_LABEL) -> str:
    """Create the AES-256 KEK ``key_label`` on the token if it does not exist; return its ``kek_id``.

    The key is a token object with ``EXTRACTABLE=False, SENSITIVE=True, WRAP=True, UNWRAP=True``.
    An existing key with that label is returned as is (idempotent).
    """
    pkcs11 = _pkcs11()
    A = pkcs11.Attribute
    lib = _load_module(module_path)
    token = _get_token(lib, module_path, token_label)
    session = _open_logged_in(token, module_path, token_label, pin, rw=True)
    try:
        with _module_lock(module_path):
            try:
                _find_kek(session, token_label, key_label)
            except KekError:
                session.generate_key(
                    pkcs11.KeyType.AES,
                    KEK_BITS,
                    label=key_label,
                    store=True,
                    capabilities=pkcs11.MechanismFlag.WRAP | pkcs11.MechanismFlag.UNWRAP,
                    template={
                        A.TOKEN: True,
                        A.PRIVATE: True,
                        A.EXTRACTABLE: False,
                        A.SENSITIVE: True,
                        A.WRAP: True,
                        A.UNWRAP: True,
                        A.ENCRYPT: False,
                        A.DECRYPT: False,
                    },
                )
    except pkcs11.PKCS11Error as exc:
        raise KekError(
            f"cannot create KEK {key_label!r} on PKCS#11 token {token_label!r}: {type(exc).__name__}"
        ) from exc
    finally:
        with _module_lock(module_path):
            session.close()
    return f"pkcs11:{token_label}:{key_label}"


class Pkcs11KekProvider(KekProvider):
    """KEK held in a PKCS#11 token; wraps/unwraps DEKs inside the HSM through a pool of sessions.

    The token is opened, logged in and the KEK looked up when the provider is built, so a
    misconfiguration fails immediately with a :class:`KekError` naming it. Thread-safe: each
    operation borrows one session (PKCS#11 sessions must not be used by two threads at once).
    """

    def __init__(
        self, module_path: str, token_label: str, pin: str, key_label: str = DEFAULT_KEY_LABEL, pool_size: int = 4
    ) -> None:
        """Open ``pool_size`` sessions on ``token_label`` (the first logs in with ``pin``) and find the KEK."""
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.module_path = module_path
        self.token_label = token_label
        self.key_label = key_label
        self._pin = pin
        self._lock = _module_lock(module_path)
        self._lib = _load_module(module_path)
        self._token = _get_token(self._lib, module_path, token_label)
        self._pool: queue.Queue = queue.Queue()
        self._all: list = []
        self._closed = False
        try:
            for i in range(pool_size):
                self._pool.put(self._new_entry(login=i == 0))
            self._resolve_current()
        except BaseException:
            self.close()
            raise

    def _resolve_current(self) -> None:
        """Find the configured KEK. If that version was rotated away and destroyed, the newest
        *later* version of the family is current; if there is none, the KEK is missing."""
        pkcs11 = _pkcs11()
        with self._borrow() as (session, keys):
            try:
                keys[self.key_label] = session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=self.key_label)
                return
            except pkcs11.NoSuchKey:
                pass
            except pkcs11.MultipleObjectsReturned as exc:
                raise KekError(
                    f"more than one key is labelled {self.key_label!r} on PKCS#11 token {self.token_label!r}"
                ) from exc
        match = _VERSIONED.match(self.key_label)
        later = [n for n in self._versions_on_token() if match and n > int(match["n"])]
        if not later:
            raise KekError(f"KEK {self.key_label!r} not found on PKCS#11 token {self.token_label!r}")
        self.key_label = f"{self.family}-v{max(later)}"

    def _new_entry(self, login: bool) -> tuple:
        pkcs11 = _pkcs11()
        if login:
            session = _open_logged_in(self._token, self.module_path, self.token_label, self._pin)
        else:
            try:
                with self._lock:
                    session = self._token.open()
            except pkcs11.PKCS11Error as exc:
                raise KekError(f"cannot open a session on PKCS#11 token {self.token_label!r}: {exc!r}") from exc
        self._all.append(session)
        return session, {}

    def _discard(self, session) -> None:
        with contextlib.suppress(Exception), self._lock:
            session.close()
        with contextlib.suppress(ValueError):
            self._all.remove(session)

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[tuple]:
        if self._closed:
            raise KekError(f"PKCS#11 provider for {self.kek_id} is closed")
        try:
            entry = self._pool.get(timeout=_POOL_TIMEOUT)
        except queue.Empty:
            raise KekError(
                f"no PKCS#11 session free on token {self.token_label!r} after {_POOL_TIMEOUT:.0f} s"
            ) from None
        pkcs11 = _pkcs11()
        try:
            with self._lock:
                yield entry
        except (
            pkcs11.SessionHandleInvalid,
            pkcs11.SessionClosed,
            pkcs11.DeviceRemoved,
            pkcs11.TokenNotPresent,
            pkcs11.UserNotLoggedIn,
        ) as exc:
            # The session is gone (HSM restarted, token removed): replace it.
            self._discard(entry[0])
            entry = None
            raise KekError(
                f"PKCS#11 session on token {self.token_label!r} was lost (HSM restarted or token removed?)"
            ) from exc
        finally:
            if entry is None:
                with contextlib.suppress(KekError):
                    entry = self._new_entry(login=True)
            if entry is not None:
                self._pool.put(entry)

    def close(self) -> None:
        """Close every session of the pool (the token logs out when its last session closes)."""
        self._closed = True
        while True:
            try:
                self._pool.get_nowait()
            except queue.Empty:
                break
        for session in list(self._all):
            self._discard(session)

    # -- versions ------------------------------------------------------------------------

    @property
    def kek_id(self) -> str:
        """``pkcs11:<token label>:<key label>`` of the current version; the ``-vN`` suffix is the version."""
        return f"pkcs11:{self.token_label}:{self.key_label}"

    @property
    def family(self) -> str:
        """The label without its ``-vN`` suffix (the whole label if it has none)."""
        match = _VERSIONED.match(self.key_label)
        return match["base"] if match else self.key_label

    def _label_of(self, kek_id: str) -> str:
        """The key label of ``kek_id`` if it names a version of this provider's KEK on its token."""
        prefix = f"pkcs11:{self.token_label}:"
        label = kek_id[len(prefix) :] if kek_id.startswith(prefix) else ""
        match = _VERSIONED.match(label)
        if label != self.key_label and not (match and match["base"] == self.family):
            raise KekError(f"data key was wrapped with KEK {kek_id}, this host has KEK {self.kek_id}")
        return label

    def describe(self, kek_id: str) -> KekVersion:
        label = self._label_of(kek_id)
        match = _VERSIONED.match(label)
        return KekVersion(
            kek_id=kek_id,
            provider="pkcs11",
            version=int(match["n"]) if match else 1,
            hsm_token=self.token_label,
            hsm_label=label,
        )

    def _versions_on_token(self) -> list[int]:
        pkcs11 = _pkcs11()
        with self._borrow() as (session, _keys):
            labels = [
                obj[pkcs11.Attribute.LABEL]
                for obj in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY})
            ]
        versions = []
        for label in labels:
            match = _VERSIONED.match(label or "")
            if match and match["base"] == self.family:
                versions.append(int(match["n"]))
        return sorted(versions)

    def create_version(self) -> str:
        """Create ``<family>-v<N+1>`` (N = the highest version on the token) inside the HSM, with the
        same non-extractable template as :func:`create_kek`, and make it current."""
        if not _VERSIONED.match(self.key_label):
            raise KekError(
                f"KEK label {self.key_label!r} has no -vN version suffix, so it cannot be rotated; "
                f"use a label such as {self.key_label}-v1"
            )
        label = f"{self.family}-v{max(self._versions_on_token(), default=0) + 1}"
        kek_id = create_kek(self.module_path, self.token_label, self._pin, label)
        self.key_label = label
        return kek_id

    def destroy_version(self, kek_id: str) -> None:
        """Destroy the key object of an old version on the token (C_DestroyObject)."""
        label = self._label_of(kek_id)
        if label == self.key_label:
            raise KekError(f"KEK {kek_id} is the current version; rotate before destroying it")
        pkcs11 = _pkcs11()
        session = _open_logged_in(self._token, self.module_path, self.token_label, self._pin, rw=True)
        try:
            with self._lock:
                _find_kek(session, self.token_label, label).destroy()
        except pkcs11.PKCS11Error as exc:
            raise KekError(
                f"cannot destroy KEK {label!r} on PKCS#11 token {self.token_label!r}: {type(exc).__name__}"
            ) from exc
        finally:
            with self._lock:
                session.close()

    def _key(self, session, keys: dict, label: str):
        """The key object labelled ``label`` (cached per session; the caller holds the session)."""
        if label not in keys:
            keys[label] = _find_kek(session, self.token_label, label)
        return keys[label]

    def _gone(self, keys: dict, label: str, exc: Exception) -> KekError:
        keys.pop(label, None)  # a stale handle: look the label up again next time
        return KekError(
            f"KEK {label!r} is no longer usable on PKCS#11 token {self.token_label!r} "
            f"(deleted or token removed?): {type(exc).__name__}"
        )

    # -- wrapping ------------------------------------------------------------------------

    def wrap(self, dek: bytes, kek_id: str | None = None) -> bytes:
        """Import ``dek`` as a short-lived session object and wrap it with the KEK inside the HSM."""
        if not dek:
            raise KekError("cannot wrap an empty data key")
        label = self.key_label if kek_id is None else self._label_of(kek_id)
        pkcs11 = _pkcs11()
        A = pkcs11.Attribute
        with self._borrow() as (session, keys):
            kek = self._key(session, keys, label)
            try:
                obj = session.create_object(
                    {
                        A.CLASS: pkcs11.ObjectClass.SECRET_KEY,
                        A.KEY_TYPE: pkcs11.KeyType.GENERIC_SECRET,
                        A.VALUE: bytes(dek),
                        A.TOKEN: False,
                        A.EXTRACTABLE: True,
                        A.SENSITIVE: False,
                    }
                )
                try:
                    return kek.wrap_key(obj, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)
                finally:
                    obj.destroy()
            except (pkcs11.ObjectHandleInvalid, pkcs11.KeyHandleInvalid, pkcs11.WrappingKeyHandleInvalid) as exc:
                raise self._gone(keys, label, exc) from exc
            except pkcs11.PKCS11Error as exc:
                if isinstance(exc, pkcs11.SessionHandleInvalid | pkcs11.SessionClosed | pkcs11.DeviceRemoved):
                    raise
                raise KekError(
                    f"PKCS#11 token {self.token_label!r} cannot wrap a data key: {type(exc).__name__}"
                ) from exc

    def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        """Unwrap inside the HSM into a session object, read its value and destroy it."""
        label = self._label_of(kek_id)
        pkcs11 = _pkcs11()
        A = pkcs11.Attribute
        with self._borrow() as (session, keys):
            kek = self._key(session, keys, label)
            try:
                obj = kek.unwrap_key(
                    pkcs11.ObjectClass.SECRET_KEY,
                    pkcs11.KeyType.GENERIC_SECRET,
                    bytes(wrapped),
                    mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD,
                    store=False,
                    template={A.TOKEN: False, A.EXTRACTABLE: True, A.SENSITIVE: False},
                )
            except (pkcs11.ObjectHandleInvalid, pkcs11.KeyHandleInvalid, pkcs11.UnwrappingKeyHandleInvalid) as exc:
                raise self._gone(keys, label, exc) from exc
            except pkcs11.PKCS11Error as exc:
                if isinstance(exc, pkcs11.SessionHandleInvalid | pkcs11.SessionClosed | pkcs11.DeviceRemoved):
                    raise
                raise KekError(
                    f"wrapped data key does not unwrap with KEK {kek_id}: it is corrupt or truncated"
                ) from exc
            try:
                return bytes(obj[A.VALUE])
            finally:
                with contextlib.suppress(pkcs11.PKCS11Error):
                    obj.destroy()


def read_pin_file(path: str) -> str:
    """Read a PIN from ``path`` (trailing newline stripped); refuse a file accessible by others."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            pin = fh.read().rstrip("\r\n")
    except OSError as exc:
        raise KekError(f"cannot read the PKCS#11 PIN file {path}: {exc.strerror}") from exc
    if st.st_mode & 0o007:
        raise KekError(f"PKCS#11 PIN file {path} is accessible by others; run `chmod 600 {path}`")
    if not pin:
        raise KekError(f"PKCS#11 PIN file {path} is empty")
    return pin
