"""The key that signs audit checkpoints: ECDSA P-256, in the HSM (PKCS#11) or, for development,
in a local key file (0600, beside the local KEK keystore).

The provider follows SOVEREIGN_KEK_PROVIDER: with `pkcs11` the signing key is a non-extractable
key pair on the same token as the KEK (label SOVEREIGN_AUDIT_SIGNING_KEY_LABEL), created on first
use; the private key never leaves the HSM, which signs the SHA-256 digest of each checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from django.conf import settings

from .offline_verify import key_id_of


class SigningError(RuntimeError):
    """The checkpoint key is missing, unreadable or the HSM refused."""


class CheckpointSigner(Protocol):
    key_id: str

    def sign(self, payload: bytes) -> bytes:
        """A DER-encoded ECDSA P-256 / SHA-256 signature over `payload`."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...


def public_pem(signer: CheckpointSigner) -> str:
    return (
        signer.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class LocalSigner:
    """A P-256 private key in a PEM file (mode 0600), created on first use. Development only."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._key = self._load_or_create()
        self.key_id = key_id_of(self._key.public_key())

    def _load_or_create(self) -> ec.EllipticCurvePrivateKey:
        if self.path.exists():
            if self.path.stat().st_mode & 0o077:
                raise SigningError(f"audit signing key {self.path} is readable by others; run `chmod 600 {self.path}`")
            key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise SigningError(f"audit signing key {self.path} is not an EC private key")
            return key
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return key

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


class Pkcs11Signer:
    """An EC P-256 key pair on a PKCS#11 token: private key SENSITIVE, not EXTRACTABLE, SIGN only."""

    def __init__(self, module_path: str, token_label: str, pin: str, key_label: str):
        from inference_backend import pkcs11_kek as p11

        self._p11 = p11
        self.module_path, self.token_label, self.key_label = module_path, token_label, key_label
        self._lock = p11._module_lock(module_path)
        try:
            lib = p11._load_module(module_path)
            token = p11._get_token(lib, module_path, token_label)
            self._session = p11._open_logged_in(token, module_path, token_label, pin, rw=True)
            with self._lock:
                self._private, public = self._find_or_create()
                self._public = self._load_public(public)
        except p11.KekError as exc:
            raise SigningError(str(exc)) from exc
        self.key_id = key_id_of(self._public)

    def _find_or_create(self):
        import pkcs11
        from pkcs11.util.ec import encode_named_curve_parameters

        A, OC, EC = pkcs11.Attribute, pkcs11.ObjectClass, pkcs11.KeyType.EC
        try:
            private = self._session.get_key(object_class=OC.PRIVATE_KEY, key_type=EC, label=self.key_label)
            public = self._session.get_key(object_class=OC.PUBLIC_KEY, key_type=EC, label=self.key_label)
            return private, public
        except pkcs11.NoSuchKey:
            pass
        params = self._session.create_domain_parameters(
            pkcs11.KeyType.EC, {A.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        public, private = params.generate_keypair(
            label=self.key_label,
            store=True,
            public_template={A.TOKEN: True, A.VERIFY: True},
            private_template={A.TOKEN: True, A.PRIVATE: True, A.SENSITIVE: True, A.EXTRACTABLE: False, A.SIGN: True},
        )
        return private, public

    @staticmethod
    def _load_public(public) -> ec.EllipticCurvePublicKey:
        from pkcs11.util.ec import encode_ec_public_key

        key = serialization.load_der_public_key(encode_ec_public_key(public))
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise SigningError("the audit signing key on the HSM is not an EC P-256 key")
        return key

    def sign(self, payload: bytes) -> bytes:
        import pkcs11

        digest = hashlib.sha256(payload).digest()
        try:
            with self._lock:
                raw = self._private.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
        except pkcs11.PKCS11Error as exc:
            raise SigningError(f"the HSM refused to sign an audit checkpoint: {type(exc).__name__}") from exc
        half = len(raw) // 2
        signature = encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
        # Check before it is stored: a signature that does not verify is worse than none.
        self._public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return signature

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public


@lru_cache(maxsize=1)
def get_signer() -> CheckpointSigner:
    """The configured checkpoint signer (cached: the HSM session is opened once per process)."""
    if settings.KEK_PROVIDER == "pkcs11":
        from inference_backend.pkcs11_kek import read_pin_file

        cfg = settings.PKCS11
        if not (cfg["MODULE"] and cfg["TOKEN"] and cfg["PIN_FILE"]):
            raise SigningError("set SOVEREIGN_PKCS11_MODULE, _TOKEN and _PIN_FILE for the audit signing key")
        pin = read_pin_file(cfg["PIN_FILE"])
        return Pkcs11Signer(cfg["MODULE"], cfg["TOKEN"], pin, settings.AUDIT_SIGNING_KEY_LABEL)
    return LocalSigner(settings.AUDIT_SIGNING_KEY_FILE)


def trusted_public_keys() -> dict[str, ec.EllipticCurvePublicKey]:
    """The keys whose checkpoint signatures the portal accepts: the current signer's, plus retired
    keys listed in SOVEREIGN_AUDIT_TRUSTED_KEYS (PEM files). Never keys read from the database."""
    from .offline_verify import load_public_keys

    keys = load_public_keys(Path(p).read_bytes() for p in settings.AUDIT_TRUSTED_KEYS)
    signer = get_signer()
    keys[signer.key_id] = signer.public_key()
    return keys
