"""The key that signs audit checkpoints (and compliance reports): ECDSA P-256, in the HSM (PKCS#11)
or, for development, in a local key file (0600, beside the local KEK keystore); in 国密 mode
(SOVEREIGN_ARTIFACT_SUITE=SM4-GCM) SM2 with SM3, in a local key file.

The provider follows SOVEREIGN_KEK_PROVIDER: with `pkcs11` the signing key is a non-extractable
key pair on the same token as the KEK (label SOVEREIGN_AUDIT_SIGNING_KEY_LABEL), created on first
use; the private key never leaves the HSM, which signs the SHA-256 digest of each checkpoint.

SM2 (sig_alg "sm2-sm3", GB/T 32918 with the GM/T 0009 default user id) is computed by the
pure-Python gmssl package from a local key file (SOVEREIGN_AUDIT_SM2_SIGNING_KEY_FILE, 0600),
whatever the KEK provider: SoftHSM2 and the PKCS#11 tokens we test offer no SM2 mechanism. See
docs/audit.md ("国密 mode: SM2 signatures").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from django.conf import settings

from inference_backend.private_file import write_private

from .offline_verify import (
    SIG_ALG,
    SM2_CURVE,
    SM2_SIG_ALG,
    Sm2PublicKey,
    VerifierUnavailable,
    key_id_of,
    key_text,
    sm2_engine,
)

log = logging.getLogger(__name__)
SM2_KEY_FORMAT = "sovereign-sm2-private-key-v1"


class SigningError(RuntimeError):
    """The checkpoint key is missing, unreadable or the HSM refused."""


class CheckpointSigner(Protocol):
    key_id: str
    sig_alg: str  # "ecdsa-p256-sha256" or "sm2-sm3"

    def sign(self, payload: bytes) -> bytes:
        """A DER-encoded signature over `payload`: ECDSA P-256 / SHA-256, or SM2 / SM3 (r, s)."""

    def public_key(self) -> ec.EllipticCurvePublicKey | Sm2PublicKey: ...


def public_key_text(signer: CheckpointSigner) -> str:
    """The signer's public key for verifiers: PEM for P-256, the uncompressed point's hex for SM2."""
    return key_text(signer.public_key())


public_pem = public_key_text  # the name it had when every key was PEM


def _check_private_file(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        raise SigningError(f"audit signing key {path} is readable by others; run `chmod 600 {path}`")


class LocalSigner:
    """A P-256 private key in a PEM file (mode 0600), created on first use. Development only."""

    sig_alg = SIG_ALG

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._key = self._load_or_create()
        self.key_id = key_id_of(self._key.public_key())

    def _load_or_create(self) -> ec.EllipticCurvePrivateKey:
        if self.path.exists():
            _check_private_file(self.path)
            key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise SigningError(f"audit signing key {self.path} is not an EC private key")
            return key
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if not write_private(self.path, pem, exclusive=True):
            return self._load_or_create()  # another process created it first: use that key
        return key

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


class Sm2Signer:
    """An SM2 private key (GB/T 32918, recommended curve) in a JSON file (mode 0600), created on
    first use; signatures are SM2 over SM3(Z_A || M) with the default user id "1234567812345678"
    (GM/T 0009), DER-encoded, computed by gmssl. The nonce k comes from `secrets` (gmssl's own
    default uses `random`, which is not a cryptographic generator)."""

    sig_alg = SM2_SIG_ALG

    def __init__(self, path: str | os.PathLike, curve: dict = SM2_CURVE):
        self.path, self.curve = Path(path), curve
        self._n = int(curve["n"], 16)
        self._size = len(curve["n"]) // 2
        try:
            self._d = self._load_or_create()
            self._public = self.public_key_of(self._d, curve)
        except VerifierUnavailable as exc:
            raise SigningError(str(exc)) from exc
        self.key_id = key_id_of(self._public)

    @staticmethod
    def public_key_of(d: int, curve: dict = SM2_CURVE) -> Sm2PublicKey:
        size = len(curve["n"]) // 2
        xy = sm2_engine(curve, "")._kg(d, curve["g"])
        return Sm2PublicKey(int(xy[: 2 * size], 16), int(xy[2 * size :], 16), curve)

    def _load_or_create(self) -> int:
        if self.path.exists():
            _check_private_file(self.path)
            try:
                data = json.loads(self.path.read_text(encoding="ascii"))
                if data.get("format") != SM2_KEY_FORMAT or data.get("curve") != "sm2p256v1":
                    raise ValueError("unknown format")
                d = int(data["d"], 16)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SigningError(f"audit signing key {self.path} is not an SM2 key file ({exc})") from exc
            if not 1 <= d <= self._n - 2:
                raise SigningError(f"audit signing key {self.path} holds an invalid SM2 private key")
            return d
        d = secrets.randbelow(self._n - 2) + 1  # [1, n-2] (GB/T 32918.1, 6.1)
        record = {"format": SM2_KEY_FORMAT, "curve": "sm2p256v1", "d": f"{d:0{2 * self._size}x}"}
        if not write_private(self.path, json.dumps(record).encode() + b"\n", exclusive=True):
            return self._load_or_create()  # another process created it first: use that key
        return d

    def sign(self, payload: bytes) -> bytes:
        try:
            engine = sm2_engine(self.curve, self._public.xy_hex(), f"{self._d:0{2 * self._size}x}")
        except VerifierUnavailable as exc:
            raise SigningError(str(exc)) from exc
        e = self._public.digest(payload)
        raw = None
        while raw is None:  # gmssl returns None for the (negligible) r = 0, r + k = n, s = 0 cases
            raw = engine.sign(e, f"{secrets.randbelow(self._n - 1) + 1:0{2 * self._size}x}")
        r, s = int(raw[: 2 * self._size], 16), int(raw[2 * self._size :], 16)
        signature = encode_dss_signature(r, s)
        self._public.verify(signature, payload)  # as for the HSM: never store one that does not verify
        return signature

    def public_key(self) -> Sm2PublicKey:
        return self._public


class Pkcs11Signer:
    """An EC P-256 key pair on a PKCS#11 token: private key SENSITIVE, not EXTRACTABLE, SIGN only."""

    sig_alg = SIG_ALG

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
    """The configured checkpoint signer (cached: the HSM session is opened once per process).

    In 国密 mode (SOVEREIGN_ARTIFACT_SUITE=SM4-GCM) SM2 from the local SM2 key file, with either
    KEK provider: the PKCS#11 tokens Sovereign supports (SoftHSM2) have no SM2 mechanism."""
    if settings.ARTIFACT_SUITE == "SM4-GCM":
        if settings.KEK_PROVIDER == "pkcs11":
            log.info(
                "国密 mode: audit checkpoints are signed with SM2 from %s, not in the HSM (no SM2 on the token)",
                settings.AUDIT_SM2_SIGNING_KEY_FILE,
            )
        return Sm2Signer(settings.AUDIT_SM2_SIGNING_KEY_FILE)
    if settings.KEK_PROVIDER == "pkcs11":
        from inference_backend.pkcs11_kek import read_pin_file

        cfg = settings.PKCS11
        if not (cfg["MODULE"] and cfg["TOKEN"] and cfg["PIN_FILE"]):
            raise SigningError("set SOVEREIGN_PKCS11_MODULE, _TOKEN and _PIN_FILE for the audit signing key")
        pin = read_pin_file(cfg["PIN_FILE"])
        return Pkcs11Signer(cfg["MODULE"], cfg["TOKEN"], pin, settings.AUDIT_SIGNING_KEY_LABEL)
    return LocalSigner(settings.AUDIT_SIGNING_KEY_FILE)


def trusted_public_keys() -> dict[str, ec.EllipticCurvePublicKey | Sm2PublicKey]:
    """The keys whose checkpoint signatures the portal accepts: the current signer's, plus retired
    keys listed in SOVEREIGN_AUDIT_TRUSTED_KEYS (P-256 PEM or SM2 hex files). Never keys read from
    the database."""
    from .offline_verify import load_public_keys

    keys = load_public_keys(Path(p).read_bytes() for p in settings.AUDIT_TRUSTED_KEYS)
    signer = get_signer()
    keys[signer.key_id] = signer.public_key()
    return keys
