"""Verify a Sovereign audit chain: the canonical encoding, the hash chain and the signed checkpoints.

This module is the single definition of how events and checkpoints are hashed and signed. The
portal uses it (sealer, `audit_verify`, `GET /api/v1/audit/verify/`), and an auditor runs it on
an export file without the portal, with the standard library and `cryptography` only::

    python offline_verify.py audit-export.jsonl --public-key audit-signing.pem

Checkpoints signed in 国密 mode (sig_alg "sm2-sm3": SM2 per GB/T 32918, SM3 digest, the default
user id "1234567812345678" of GM/T 0009) also need the pure-Python `gmssl` package, imported
only when such a checkpoint is met (`pip install gmssl==3.2.2`); their public key is the hex of
the uncompressed point (`04` || X || Y), as `manage.py audit_public_key` prints it.

It prints a JSON report and exits 0 when the file verifies, 1 when it does not (the report names
the first bad sequence and what is wrong), 2 when it cannot run (unreadable file, no key).
It imports nothing from Django: copy this one file to a machine that has never seen the portal.
The export format is described in docs/audit.md ("Export file format").
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

FORMAT = "sovereign-audit-export"
# Export layout 1: every event is hashed with encoding 1 (its lines may omit `encoding_version`).
# Layout 2: event lines carry an `encoding_version` above 1. A file holding only encoding-1 events is
# still written as layout 1, so that verifiers older than encoding versions keep reading it; one
# with later encodings is layout 2, which those verifiers refuse clearly instead of misreporting.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)
GENESIS = "0" * 64
SIG_ALG = "ecdsa-p256-sha256"
SM2_SIG_ALG = "sm2-sm3"
SIG_ALGS = (SIG_ALG, SM2_SIG_ALG)
SM2_DEFAULT_UID = b"1234567812345678"  # GM/T 0009's default signer id (ENTL 0x0080)
GMSSL_HINT = "pip install gmssl==3.2.2"
HASH_ALGS = ("sha256", "sm3")

# The event encodings: version -> the fields an event's hash covers, in the order they are listed
# in docs/audit.md. Each event records the version it was hashed with (`encoding_version`; absent in
# older exports, meaning 1), and is verified with that version's list for its whole retention.
#
# The rule (docs/audit.md, "Event encoding versions"): a version, once events have been written with
# it, never changes. To hash a new field, add version N+1 (N's fields plus the new ones), point
# CURRENT_ENCODING at it, and keep every older version here; never edit or remove an old one.
#
# `id` is the database's and is not covered; `sequence` is, so an event cannot be moved to another
# position without changing its hash. Every version covers `sequence` and `prev_hash`.
ENCODING_V1 = (
    "sequence",
    "timestamp",
    "actor_id",
    "actor_name",
    "actor_roles",
    "token_id",
    "source_ip",
    "user_agent",
    "request_id",
    "event_type",
    "event_group",
    "target_type",
    "target_id",
    "target_display",
    "outcome",
    "error_code",
    "details",
    "prev_hash",
)
EVENT_ENCODINGS: dict[int, tuple[str, ...]] = {1: ENCODING_V1}
CURRENT_ENCODING = 1  # what new events are written with
EVENT_FIELDS = ENCODING_V1  # the fields of encoding 1 (kept for readers of this module's older API)
CHECKPOINT_FIELDS = ("sequence", "head", "hash_alg", "created_at", "prev", "key_id", "sig_alg")

MODIFIED, DELETED, INSERTED, REORDERED, FORGED = "modified", "deleted", "inserted", "reordered", "forged_checkpoint"
UNKNOWN_ENCODING = "unknown_encoding"  # an event hashed with an encoding version this verifier does not know
PROBLEM_KINDS = (MODIFIED, DELETED, INSERTED, REORDERED, FORGED, UNKNOWN_ENCODING)
FOOTER_COUNTS = {"event": "events", "link": "links", "checkpoint": "checkpoints", "pending": "pending"}
LOOKAHEAD = 256  # how far ahead a broken link is looked for to tell "reordered" from "deleted"


# --- encoding and hashing -------------------------------------------------------------------


def canonical_json(value) -> bytes:
    """Sorted keys, no whitespace, UTF-8: one byte string per value, on any machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def format_timestamp(value: datetime) -> str:
    """UTC, microseconds, `Z`: `2025-01-31T09:30:00.000000Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def digest(data: bytes, hash_alg: str) -> str:
    if hash_alg == "sha256":
        return hashlib.sha256(data).hexdigest()
    if hash_alg == "sm3":
        return sm3(data).hex()
    raise ValueError(f"unknown hash algorithm {hash_alg!r} (expected one of {', '.join(HASH_ALGS)})")


class UnknownEncoding(ValueError):
    """An event names an encoding version that is not in EVENT_ENCODINGS."""


def encoding_of(event: dict) -> int:
    """The event's encoding version (1 when the record does not say: exports from before versions)."""
    return event.get("encoding_version", 1)


def encoding_fields(version) -> tuple[str, ...]:
    """The fields encoding `version` hashes; UnknownEncoding if this verifier does not know it."""
    fields = EVENT_ENCODINGS.get(version) if type(version) is int else None
    if fields is None:
        known = ", ".join(str(v) for v in sorted(EVENT_ENCODINGS))
        raise UnknownEncoding(f"encoding version {version!r} is not one this verifier knows ({known})")
    return fields


def event_hash(event: dict, hash_alg: str) -> str:
    """The hash of one event: its encoding version's fields, canonical, including its sequence and its
    predecessor's hash, after a prefix naming the version (so an event cannot be passed off as another
    version's). Raises UnknownEncoding for a version not in EVENT_ENCODINGS, KeyError for a missing field."""
    version = encoding_of(event)
    fields = encoding_fields(version)
    prefix = f"sovereign-audit-event/{version}\n".encode()
    return digest(prefix + canonical_json({k: event[k] for k in fields}), hash_alg)


def checkpoint_payload(checkpoint: dict) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return b"sovereign-audit-checkpoint/1\n" + canonical_json({k: checkpoint[k] for k in CHECKPOINT_FIELDS})


def checkpoint_digest(checkpoint: dict) -> str:
    """What the next checkpoint's `prev` holds: the digest of this one's signed payload."""
    return digest(checkpoint_payload(checkpoint), checkpoint["hash_alg"])


# --- SM2 (GB/T 32918) -------------------------------------------------------------------------

# The recommended 256-bit curve (GB/T 32918.5), as hex strings in the form gmssl's CryptSM2 takes.
SM2_CURVE = {
    "p": "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF",
    "a": "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC",
    "b": "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",
    "n": "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123",
    "g": "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"
    "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
}


class VerifierUnavailable(RuntimeError):
    """A signature needs a package that is not installed (gmssl, for SM2)."""


def gmssl_sm2():
    """gmssl's SM2 module, imported only when an SM2 signature is met."""
    try:
        from gmssl import sm2
    except ImportError as exc:
        raise VerifierUnavailable(
            f"an SM2 signature (sig_alg {SM2_SIG_ALG!r}) needs the gmssl package: {GMSSL_HINT}"
        ) from exc
    return sm2


def sm2_engine(curve: dict, public_xy: str, private_hex: str = ""):
    """A gmssl CryptSM2 for one key. The public key is set after construction: gmssl's constructor
    strips leading '0'/'4' characters with lstrip("04"), which corrupts one key in sixteen."""
    engine = gmssl_sm2().CryptSM2(private_key=private_hex, public_key="", ecc_table=curve)
    engine.public_key = public_xy
    return engine


class Sm2PublicKey:
    """An SM2 public key: a point of the curve, exported as the hex of `04` || X || Y (130 digits)."""

    def __init__(self, x: int, y: int, curve: dict = SM2_CURVE):
        p, a, b = (int(curve[k], 16) for k in "pab")
        if not (0 <= x < p and 0 <= y < p) or (y * y - x * x * x - a * x - b) % p:
            raise ValueError("the SM2 public key is not a point of the curve")
        self.x, self.y, self.curve = x, y, curve
        self.size = len(curve["n"]) // 2

    @classmethod
    def from_hex(cls, text: str | bytes, curve: dict = SM2_CURVE) -> Sm2PublicKey:
        text = (text.decode("ascii", "replace") if isinstance(text, bytes) else text).strip().lower()
        size = len(curve["n"]) // 2
        if len(text) != 2 + 4 * size or not text.startswith("04"):
            raise ValueError("an SM2 public key is 04 followed by X and Y in hex (130 hex digits)")
        try:
            x, y = int(text[2 : 2 + 2 * size], 16), int(text[2 + 2 * size :], 16)
        except ValueError:
            raise ValueError("an SM2 public key is 04 followed by X and Y in hex (130 hex digits)") from None
        return cls(x, y, curve)

    def xy_hex(self) -> str:
        return f"{self.x:0{2 * self.size}x}{self.y:0{2 * self.size}x}"

    def hex(self) -> str:
        return "04" + self.xy_hex()

    def point_bytes(self) -> bytes:
        return bytes.fromhex(self.hex())

    def digest(self, message: bytes, uid: bytes = SM2_DEFAULT_UID) -> bytes:
        """e = SM3(Z_A || M), Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA) (GB/T 32918.2, 5.5)."""
        c = self.curve
        entl = (len(uid) * 8).to_bytes(2, "big")
        z = sm3(entl + uid + bytes.fromhex(c["a"] + c["b"] + c["g"]) + bytes.fromhex(self.xy_hex()))
        return sm3(z + message)

    def verify(self, signature: bytes, message: bytes, uid: bytes = SM2_DEFAULT_UID) -> None:
        """Raise InvalidSignature unless `signature` (DER SEQUENCE {r, s}, GM/T 0009) signs `message`."""
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        try:
            r, s = decode_dss_signature(signature)
        except ValueError as exc:
            raise InvalidSignature("not a DER-encoded SM2 signature") from exc
        n = int(self.curve["n"], 16)
        if not (1 <= r < n and 1 <= s < n) or (r + s) % n == 0:  # GB/T 32918.2, 7.1 B1, B2, B5
            raise InvalidSignature("r or s out of range")
        engine = sm2_engine(self.curve, self.xy_hex())
        if not engine.verify(f"{r:0{2 * self.size}x}{s:0{2 * self.size}x}", self.digest(message, uid)):
            raise InvalidSignature("the SM2 signature does not verify")


def sm3(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


# --- keys and signatures --------------------------------------------------------------------


def key_id_of(public_key) -> str:
    """ECDSA: `p256:` and the first 16 bytes (hex) of the SHA-256 of the key's SubjectPublicKeyInfo.
    SM2: `sm2:` and the first 16 bytes (hex) of the SM3 of the 65-byte uncompressed point."""
    if isinstance(public_key, Sm2PublicKey):
        return "sm2:" + sm3(public_key.point_bytes()).hex()[:32]
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "p256:" + hashlib.sha256(spki).hexdigest()[:32]


def key_text(public_key) -> str:
    """How a public key is handed to a verifier: PEM (P-256), or the SM2 point's hex and a newline."""
    if isinstance(public_key, Sm2PublicKey):
        return public_key.hex() + "\n"
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(text: bytes):
    """A P-256 key in PEM, or an SM2 key as the hex of its uncompressed point."""
    if text.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(text)
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError("a PEM checkpoint public key must be an ECDSA P-256 key")
        return key
    try:
        return Sm2PublicKey.from_hex(text)
    except ValueError as exc:
        raise ValueError(f"not a checkpoint public key (neither P-256 PEM nor SM2 hex): {exc}") from exc


def load_public_keys(texts: Iterable[bytes]) -> dict:
    keys = {}
    for text in texts:
        key = load_public_key(text)
        keys[key_id_of(key)] = key
    return keys


def verify_signature(public_key, sig_alg: str, signature: bytes, message: bytes) -> None:
    """Raise InvalidSignature unless `signature` over `message` verifies with `public_key` under
    `sig_alg` (the key must be of that algorithm). VerifierUnavailable if gmssl is missing for SM2."""
    if sig_alg == SM2_SIG_ALG and isinstance(public_key, Sm2PublicKey):
        public_key.verify(signature, message)
    elif sig_alg == SIG_ALG and isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    else:
        raise InvalidSignature(f"key {key_id_of(public_key)} is not a {sig_alg} key")


def signature_valid(checkpoint: dict, public_keys: dict) -> str:
    """'' when the checkpoint's signature verifies, else why not."""
    sig_alg = checkpoint.get("sig_alg")
    if sig_alg not in SIG_ALGS:
        return f"unknown signature algorithm {sig_alg!r}"
    key = public_keys.get(checkpoint.get("key_id"))
    if key is None:
        return f"signed with key {checkpoint.get('key_id')!r}, which is not a trusted checkpoint key"
    try:
        verify_signature(key, sig_alg, base64.b64decode(checkpoint["signature"]), checkpoint_payload(checkpoint))
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return "the signature does not verify"
    return ""


# --- the walk -------------------------------------------------------------------------------


class _Peekable:
    def __init__(self, items: Iterable[dict]):
        self._it: Iterator[dict] = iter(items)
        self._buf: deque[dict] = deque()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self._buf.popleft() if self._buf else next(self._it)

    def peek(self, n: int) -> list[dict]:
        while len(self._buf) < n:
            try:
                self._buf.append(next(self._it))
            except StopIteration:
                break
        return list(self._buf)[:n]


class Problem(Exception):
    def __init__(self, kind: str, sequence: int, detail: str):
        super().__init__(detail)
        self.kind, self.sequence, self.detail = kind, sequence, detail

    def as_dict(self) -> dict:
        return {"kind": self.kind, "sequence": self.sequence, "detail": self.detail}


class _Walk:
    """State of one pass over records in sequence order (events, `link` stand-ins, checkpoints)."""

    def __init__(self, records: Iterable[dict], public_keys: dict, hash_alg: str):
        self.records = _Peekable(records)
        self.keys, self.hash_alg = public_keys, hash_alg
        self.head = self.prev_head = None
        self.expected: int | None = None
        self.first = self.last = None
        self.events = self.links = self.checkpoints = 0
        self.last_checkpoint: dict | None = None

    def run(self) -> None:
        for record in self.records:
            kind = record.get("type", "event")
            if kind == "checkpoint":
                self.checkpoint(record)
            elif kind in ("event", "link"):
                self.event(record, full=kind == "event")

    def start(self, record: dict) -> None:
        seq = record["sequence"]
        anchor = self.last_checkpoint
        if anchor is not None and anchor["sequence"] == seq - 1:
            self.head, self.expected = anchor["head"], seq
        elif seq == 1 and anchor is None:
            self.head, self.expected = GENESIS, 1
        else:
            first_missing = anchor["sequence"] + 1 if anchor is not None and anchor["sequence"] < seq else 1
            raise Problem(DELETED, first_missing, f"the log starts at sequence {seq}: events before it are missing")
        self.first = seq

    def event(self, record: dict, full: bool) -> None:
        if self.expected is None:
            self.start(record)
        seq = record["sequence"]
        if seq > self.expected:
            raise Problem(DELETED, self.expected, f"events {self.expected}..{seq - 1} are missing")
        if seq < self.expected:
            raise Problem(INSERTED, seq, f"a second event claims sequence {seq}")
        if record["prev_hash"] != self.head:
            self.broken_link(record)
        if full and self.hash_of(record) != record["hash"]:
            raise Problem(MODIFIED, seq, f"event {seq} does not match its hash: its content was changed")
        self.prev_head, self.head = self.head, record["hash"]
        self.last, self.expected = seq, seq + 1
        self.events += full
        self.links += not full

    def hash_of(self, record: dict) -> str:
        seq = record["sequence"]
        try:
            return event_hash(record, self.hash_alg)
        except UnknownEncoding as exc:
            raise Problem(
                UNKNOWN_ENCODING,
                seq,
                f"event {seq}: {exc}; verify it with the offline_verify.py of the portal that wrote it, or a newer one",
            ) from exc
        except KeyError as exc:
            raise Problem(MODIFIED, seq, f"event {seq} lacks the hashed field {exc.args[0]!r}") from exc

    def broken_link(self, record: dict) -> None:
        seq, prev = record["sequence"], record["prev_hash"]
        ahead = [r for r in self.records.peek(LOOKAHEAD) if r.get("type", "event") != "checkpoint"]
        if any(r.get("hash") == prev for r in ahead):
            raise Problem(REORDERED, seq, f"event {seq} follows an event that appears later in the log")
        if self.prev_head is not None and prev == self.prev_head:
            raise Problem(INSERTED, seq - 1, f"event {seq - 1} is not part of the chain: it was inserted")
        if ahead and ahead[0]["prev_hash"] == self.head:
            raise Problem(INSERTED, seq, f"event {seq} is not part of the chain: it was inserted")
        raise Problem(DELETED, seq, f"the event before sequence {seq} is missing or was rewritten")

    def checkpoint(self, cp: dict) -> None:
        seq = cp["sequence"]
        why = signature_valid(cp, self.keys)
        if why:
            raise Problem(FORGED, seq, f"checkpoint at sequence {seq}: {why}")
        if cp["hash_alg"] != self.hash_alg:
            raise Problem(FORGED, seq, f"checkpoint at sequence {seq} uses {cp['hash_alg']}, the log {self.hash_alg}")
        if self.last_checkpoint is not None and cp["prev"] != checkpoint_digest(self.last_checkpoint):
            raise Problem(FORGED, seq, f"checkpoint at sequence {seq} does not reference the checkpoint before it")
        if self.expected is not None:
            if seq != self.last:
                raise Problem(DELETED, self.expected, f"checkpoint {seq} covers events the log does not have")
            if cp["head"] != self.head:
                since = self.last_checkpoint["sequence"] + 1 if self.last_checkpoint else self.first
                raise Problem(MODIFIED, since, f"events after {since - 1} were rewritten: head differs from checkpoint")
        self.last_checkpoint = cp
        self.checkpoints += 1

    def finish(self) -> None:
        cp = self.last_checkpoint
        if cp is not None and self.expected is None:
            # Checkpoints but no event at all. A purge always leaves its own `audit.purge` event after
            # the anchor, so this is a deletion: from the start if no checkpoint came before this one.
            missing = 1 if cp["prev"] == "" else cp["sequence"] + 1
            raise Problem(DELETED, missing, f"no event is left although a checkpoint covers sequence {cp['sequence']}")


def verify_records(records: Iterable[dict], public_keys: dict, hash_alg: str) -> dict:
    """Walk records in sequence order (an anchor checkpoint may come first; a checkpoint follows
    the event of its sequence) and report the first problem, if any."""
    walk = _Walk(records, public_keys, hash_alg)
    problem = None
    try:
        walk.run()
        walk.finish()
    except Problem as exc:
        problem = exc
    covered = walk.last_checkpoint["sequence"] if walk.last_checkpoint else 0
    empty = problem is None and walk.events + walk.links == 0 and walk.checkpoints == 0
    return {
        "ok": problem is None,
        "status": _status(problem, empty),
        "detail": _summary(problem, empty, walk),
        "hash_alg": hash_alg,
        "events_checked": walk.events,
        "links_checked": walk.links,
        "checkpoints_checked": walk.checkpoints,
        "first_sequence": walk.first,
        "last_sequence": walk.last,
        "last_checkpoint_sequence": covered or None,
        "unsigned_tail": max(0, (walk.last or 0) - covered) if problem is None else None,
        "problem": problem.as_dict() if problem else None,
    }


def _status(problem: Problem | None, empty: bool) -> str:
    """ok, empty, tampered, or unsupported (an event of an encoding version this verifier does not know:
    not proof of tampering, but nothing after it can be vouched for)."""
    if problem is None:
        return "empty" if empty else "ok"
    return "unsupported" if problem.kind == UNKNOWN_ENCODING else "tampered"


def _summary(problem: Problem | None, empty: bool, walk: _Walk) -> str:
    if problem is not None:
        return f"{problem.kind} at sequence {problem.sequence}: {problem.detail}"
    if empty:
        return "the audit log is empty: there is nothing to verify yet"
    return f"sequences {walk.first}..{walk.last} verify; {walk.checkpoints} checkpoint signature(s) verify"


# --- export files ---------------------------------------------------------------------------


def read_export(lines: Iterable[str]) -> tuple[dict, Iterator[dict]]:
    """Split an export into its header and an iterator over its records (footer checked at the end)."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, json.JSONDecodeError) as exc:
        raise ValueError("not an audit export: the first line is not a JSON header") from exc
    if header.get("type") != "header" or header.get("format") != FORMAT:
        raise ValueError(f"not an audit export: the header's format is not {FORMAT!r}")
    if header.get("version") not in FORMAT_VERSIONS:
        readable = ", ".join(str(v) for v in FORMAT_VERSIONS)
        raise ValueError(f"unsupported export version {header.get('version')!r} (this verifier reads {readable})")
    if header.get("hash_alg") not in HASH_ALGS:
        raise ValueError(f"unknown hash algorithm {header.get('hash_alg')!r}")
    return header, _records(it)


def _records(lines: Iterator[str]) -> Iterator[dict]:
    counts = {"event": 0, "link": 0, "checkpoint": 0, "pending": 0}
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        record = json.loads(line)
        kind = record.get("type")
        if kind == "footer":
            expected = {k: record.get(name) for k, name in FOOTER_COUNTS.items()}
            if expected != counts:
                raise Problem(DELETED, 0, f"the file's footer counts {expected}, the file holds {counts}")
            return
        if kind not in counts:
            raise ValueError(f"line {number}: unknown record type {kind!r}")
        counts[kind] += 1
        if kind != "pending":
            yield record
    raise Problem(DELETED, 0, "the file has no footer: it was truncated")


def verify_export(lines: Iterable[str], public_keys: dict) -> dict:
    header, records = read_export(lines)
    try:
        report = verify_records(records, public_keys, header["hash_alg"])
    except Problem as exc:  # raised by the footer check, after the walk
        return {"ok": False, "status": "tampered", "detail": exc.detail, "problem": exc.as_dict()}
    report["selection"] = header.get("selection", {})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Sovereign audit export offline.")
    parser.add_argument("export", help="the .jsonl export file")
    parser.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="trusted checkpoint key file (P-256 PEM, or SM2 hex point); repeatable",
    )
    parser.add_argument(
        "--trust-embedded-keys", action="store_true", help="trust the keys in the file's header (not recommended)"
    )
    args = parser.parse_args(argv)
    try:
        pems = [open(path, "rb").read() for path in args.public_key]  # noqa: SIM115 - tiny files
        with open(args.export, encoding="utf-8") as fh:
            if args.trust_embedded_keys:
                header = json.loads(fh.readline())
                pems += [pem.encode() for pem in header.get("public_keys", {}).values()]
                fh.seek(0)
            if not pems:
                parser.error("give the checkpoint public key with --public-key (from `manage.py audit_public_key`)")
            report = verify_export(fh, load_public_keys(pems))
    except (OSError, ValueError, VerifierUnavailable) as exc:
        print(json.dumps({"ok": False, "status": "error", "detail": str(exc)}), file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
