"""Detached signatures of report files, by the audit checkpoint signer (ECDSA P-256 in the HSM
with SOVEREIGN_KEK_PROVIDER=pkcs11, a local key file in development).

The signature file is JSON: a statement (file name, size, SHA-256, key id, time) and a DER
signature over its canonical form. Verification recomputes the file's digest and checks the
signature with a *trusted* key chosen by key id (never the public key carried in the file,
which is there only as a hint for offline tools).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

FORMAT = "sovereign-report-signature-v1"
ALG = "ECDSA-P256-SHA256"


class ReportSignatureError(Exception):
    """The report or its signature does not verify; the message says why."""


def _canonical(statement: dict) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_bytes(data: bytes, file_name: str) -> dict:
    from apps.audit.signing import get_signer, public_pem

    signer = get_signer()
    statement = {
        "format": FORMAT,
        "alg": ALG,
        "file": file_name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "key_id": signer.key_id,
        "signed_at": timezone.now().isoformat(),
    }
    signature = signer.sign(_canonical(statement))
    return {
        "statement": statement,
        "signature": base64.b64encode(signature).decode(),
        "public_key": public_pem(signer),
    }


def verify_bytes(data: bytes, sig: dict, trusted: dict[str, ec.EllipticCurvePublicKey]) -> str:
    """Return the key id that signed `data`; raise ReportSignatureError if anything is off."""
    try:
        statement = sig["statement"]
        signature = base64.b64decode(sig["signature"], validate=True)
        key_id = statement["key_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportSignatureError(f"malformed signature file: {exc}") from exc
    if statement.get("format") != FORMAT or statement.get("alg") != ALG:
        raise ReportSignatureError(f"unsupported signature format {statement.get('format')!r}/{statement.get('alg')!r}")
    key = trusted.get(key_id)
    if key is None:
        raise ReportSignatureError(f"signed by key {key_id}, which is not a trusted key")
    try:
        key.verify(signature, _canonical(statement), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise ReportSignatureError("the signature does not match its statement (signature file altered)") from exc
    if statement.get("size") != len(data) or statement.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ReportSignatureError("the report's SHA-256 differs from the signed one (report altered)")
    return key_id


def verify_file(path: str | Path, sig_path: str | Path, trusted=None) -> str:
    from apps.audit.signing import trusted_public_keys

    try:
        sig = json.loads(Path(sig_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportSignatureError(f"cannot read the signature file: {exc}") from exc
    if not isinstance(sig, dict):
        raise ReportSignatureError("malformed signature file: not a JSON object")
    return verify_bytes(Path(path).read_bytes(), sig, trusted if trusted is not None else trusted_public_keys())
