"""Detached signatures of report files, by the audit checkpoint signer (ECDSA P-256 in the HSM
with SOVEREIGN_KEK_PROVIDER=pkcs11, a local key file in development; in 国密 mode SM2 with SM3,
GB/T 32918, from the local SM2 key file).

The signature file is JSON: a statement (file name, size, digest, key id, time) and a DER
signature over its canonical form. The digest is the file's SHA-256 (alg ECDSA-P256-SHA256) or,
in 国密 mode, its SM3 (alg SM2-SM3: field `sm3` instead of `sha256`). Verification recomputes
the file's digest and checks the signature with a *trusted* key chosen by key id (never the
public key carried in the file, which is there only as a hint for offline tools).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from django.utils import timezone

from apps.audit.selectors import SIG_ALG, SM2_SIG_ALG, VerifierUnavailable, trusted_signing_keys, verify_signature
from apps.audit.services import audit_signer

FORMAT = "sovereign-report-signature-v1"
ALG = "ECDSA-P256-SHA256"
SM2_ALG = "SM2-SM3"
# statement alg -> (checkpoint sig_alg of the key, digest field, digest function)
ALGS = {
    ALG: (SIG_ALG, "sha256", lambda data: hashlib.sha256(data).hexdigest()),
    SM2_ALG: (SM2_SIG_ALG, "sm3", lambda data: sm3(data).hex()),
}
ALG_OF_SIGNER = {SIG_ALG: ALG, SM2_SIG_ALG: SM2_ALG}


def sm3(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


class ReportSignatureError(Exception):
    """The report or its signature does not verify; the message says why."""


def _canonical(statement: dict) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_bytes(data: bytes, file_name: str) -> dict:
    signer = audit_signer()
    alg = ALG_OF_SIGNER[signer.sig_alg]
    _, field, digest = ALGS[alg]
    statement = {
        "format": FORMAT,
        "alg": alg,
        "file": file_name,
        "size": len(data),
        field: digest(data),
        "key_id": signer.key_id,
        "signed_at": timezone.now().isoformat(),
    }
    signature = signer.sign(_canonical(statement))
    return {
        "statement": statement,
        "signature": base64.b64encode(signature).decode(),
        "public_key": signer.public_key,
    }


def verify_bytes(data: bytes, sig: dict, trusted: dict) -> str:
    """Return the key id that signed `data`; raise ReportSignatureError if anything is off."""
    try:
        statement = sig["statement"]
        signature = base64.b64decode(sig["signature"], validate=True)
        key_id = statement["key_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportSignatureError(f"malformed signature file: {exc}") from exc
    if not isinstance(statement, dict) or statement.get("format") != FORMAT or statement.get("alg") not in ALGS:
        fmt, alg = (statement.get("format"), statement.get("alg")) if isinstance(statement, dict) else (None, None)
        raise ReportSignatureError(f"unsupported signature format {fmt!r}/{alg!r}")
    sig_alg, field, digest = ALGS[statement["alg"]]
    key = trusted.get(key_id)
    if key is None:
        raise ReportSignatureError(f"signed by key {key_id}, which is not a trusted key")
    try:
        verify_signature(key, sig_alg, signature, _canonical(statement))
    except InvalidSignature as exc:
        raise ReportSignatureError("the signature does not match its statement (signature file altered)") from exc
    except VerifierUnavailable as exc:
        raise ReportSignatureError(str(exc)) from exc
    if statement.get("size") != len(data) or statement.get(field) != digest(data):
        raise ReportSignatureError(f"the report's {field.upper()} differs from the signed one (report altered)")
    return key_id


def verify_file(path: str | Path, sig_path: str | Path, trusted=None) -> str:
    try:
        sig = json.loads(Path(sig_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportSignatureError(f"cannot read the signature file: {exc}") from exc
    if not isinstance(sig, dict):
        raise ReportSignatureError("malformed signature file: not a JSON object")
    return verify_bytes(Path(path).read_bytes(), sig, trusted if trusted is not None else trusted_signing_keys())
