"""Streaming, segmented AEAD for model artifacts of any size (format version 2).

A single GCM tag over a multi-GB file is unsafe for streaming (plaintext is released
before the tag is checked) and one-shot ``AESGCM`` refuses inputs of 2 GiB or more. This
module seals the artifact in fixed-size segments, each with its own tag, in the manner of
Tink's AES-GCM-HKDF streaming AEAD and age's STREAM construction. The byte layout is
specified in ``docs/encryption-format.md``; in short::

    header   = "SVRN" | version=2 | suite | u16 len | kek_id | u16 len | kek_version
               | salt(32) | nonce_prefix(7) | segment_size (u32 BE)
    key      = HKDF-SHA256(ikm=dek, salt=salt, info=header, L=32 (AES) or 16 (SM4))
    nonce_i  = nonce_prefix(7) | i (u32 BE) | last (1 byte: 1 for the final segment, else 0)
    aad_i    = header | caller's aad (artifact id and version)
    segment  = GCM(key, nonce_i, aad_i, plaintext_i) = ciphertext_i | tag_i(16)

Each segment is authenticated before any of its plaintext is written. Truncation,
reordering, dropping or duplicating segments, a flipped bit, a wrong key, wrong aad or a
header taken from another file all fail with :class:`StreamError`.

Memory: encryption and decryption hold one input and one output segment buffer (plus the
header), independent of the artifact size.

This module must not import Django.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "SUITES",
    "Header",
    "StreamError",
    "Suite",
    "StreamEncryptor",
    "authenticate_first_segment",
    "decrypt_file",
    "decrypt_stream",
    "decrypt_to_bytes",
    "encrypt_stream",
    "read_header",
    "sm3_hex",
]

MAGIC = b"SVRN"
FORMAT_VERSION = 2
DEK_LEN = 32
SALT_LEN = 32
NONCE_PREFIX_LEN = 7
TAG_LEN = 16
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 16
MAX_SEGMENT_SIZE = 64 << 20
MAX_ID_LEN = 1024
MAX_SEGMENTS = 1 << 32


@dataclass(frozen=True)
class Suite:
    name: str
    id: int
    key_len: int


SUITES: dict[str, Suite] = {
    "AES-256-GCM": Suite("AES-256-GCM", 1, 32),
    "SM4-GCM": Suite("SM4-GCM", 2, 16),
}
_SUITES_BY_ID = {s.id: s for s in SUITES.values()}


class StreamError(Exception):
    """The artifact is malformed, cannot be authenticated, or cannot be read/written.

    When raised by :func:`decrypt_stream`, the segments written before the failure were
    authentic but the artifact as a whole is not: the caller must discard the output.
    """


@dataclass(frozen=True)
class Header:
    version: int
    suite: str
    kek_id: str
    kek_version: str
    salt: bytes
    nonce_prefix: bytes
    segment_size: int
    raw: bytes  # the exact header bytes (bound into the KDF and every segment's AAD)

    @property
    def length(self) -> int:
        return len(self.raw)


# --------------------------------------------------------------------------- helpers


def sm3_hex(data: bytes) -> str:
    """SM3 digest (GB/T 32905) of ``data`` as lowercase hex."""
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize().hex()


def _encode_str(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str")
    raw = value.encode("utf-8")
    if len(raw) > MAX_ID_LEN:
        raise ValueError(f"{what} is longer than {MAX_ID_LEN} bytes")
    return struct.pack(">H", len(raw)) + raw


def _build_header(suite: Suite, kek_id: str, kek_version: str, salt: bytes, prefix: bytes, segment_size: int) -> bytes:
    return b"".join(
        (
            MAGIC,
            bytes((FORMAT_VERSION, suite.id)),
            _encode_str(kek_id, "kek_id"),
            _encode_str(kek_version, "kek_version"),
            salt,
            prefix,
            struct.pack(">I", segment_size),
        )
    )


def _read_full(src: BinaryIO, mv: memoryview) -> int:
    """Fill ``mv`` from ``src``; return the byte count (short only at end of stream)."""
    total = 0
    n = len(mv)
    readinto = getattr(src, "readinto", None)
    while total < n:
        if readinto is not None:
            got = readinto(mv[total:])
        else:
            chunk = src.read(n - total)
            got = len(chunk) if chunk else 0
            if got:
                mv[total : total + got] = chunk
        if not got:
            break
        total += got
    return total


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    buf = bytearray(n)
    got = _read_full(src, memoryview(buf))
    if got != n:
        raise StreamError(f"truncated header: missing {what}")
    return bytes(buf)


def read_header(src: BinaryIO | bytes | bytearray | memoryview) -> Header:
    """Parse and validate the header; a stream is left positioned at the first segment.

    Use it to learn the KEK id/version (to unwrap the data key) before decrypting.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
    fixed = _read_exact(src, 6, "magic/version/suite")
    if fixed[:4] != MAGIC:
        raise StreamError("not a Sovereign artifact (bad magic)")
    version, suite_id = fixed[4], fixed[5]
    if version != FORMAT_VERSION:
        if version > FORMAT_VERSION:
            raise StreamError(
                f"artifact format version {version} is newer than this software supports "
                f"({FORMAT_VERSION}); upgrade to read it"
            )
        raise StreamError(f"artifact format version {version} is not a streaming artifact (expected {FORMAT_VERSION})")
    suite = _SUITES_BY_ID.get(suite_id)
    if suite is None:
        raise StreamError(f"unknown cipher suite id {suite_id}")
    parts = [fixed]
    strings = []
    for what in ("kek_id", "kek_version"):
        ln = _read_exact(src, 2, f"{what} length")
        (n,) = struct.unpack(">H", ln)
        if n > MAX_ID_LEN:
            raise StreamError(f"{what} length {n} exceeds {MAX_ID_LEN} bytes")
        raw = _read_exact(src, n, what)
        try:
            strings.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise StreamError(f"{what} is not valid UTF-8") from None
        parts += [ln, raw]
    tail = _read_exact(src, SALT_LEN + NONCE_PREFIX_LEN + 4, "salt/nonce prefix/segment size")
    (segment_size,) = struct.unpack(">I", tail[-4:])
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise StreamError(f"segment size {segment_size} outside [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
    parts.append(tail)
    return Header(
        version=version,
        suite=suite.name,
        kek_id=strings[0],
        kek_version=strings[1],
        salt=tail[:SALT_LEN],
        nonce_prefix=tail[SALT_LEN : SALT_LEN + NONCE_PREFIX_LEN],
        segment_size=segment_size,
        raw=b"".join(parts),
    )


def _derive_key(dek: bytes, header: bytes, salt: bytes, key_len: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=key_len, salt=salt, info=header).derive(dek)


class _Sealer:
    """Seal/open one segment into a caller-provided buffer, reusing cipher state."""

    def __init__(self, suite: Suite, key: bytes, prefix: bytes, aad: bytes) -> None:
        self.suite = suite
        self.prefix = prefix
        self.aad = aad
        self.key = key
        self.aes = AESGCM(key) if suite.name == "AES-256-GCM" else None
        self.sm4 = algorithms.SM4(key) if suite.name == "SM4-GCM" else None

    def nonce(self, counter: int, last: bool) -> bytes:
        return self.prefix + struct.pack(">IB", counter, 1 if last else 0)

    def seal(self, counter: int, last: bool, pt: memoryview, out: memoryview) -> int:
        """Write ciphertext || tag into ``out``; return its length."""
        nonce = self.nonce(counter, last)
        n = len(pt)
        if self.aes is not None:
            self.aes.encrypt_into(nonce, pt, self.aad, out[: n + TAG_LEN])
            return n + TAG_LEN
        enc = Cipher(self.sm4, modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(self.aad)
        # update_into needs len(data) + 15 bytes of room; out has n + 16.
        written = enc.update_into(pt, out) if n else 0
        written += len(tail := enc.finalize())
        if tail:
            out[written - len(tail) : written] = tail
        out[written : written + TAG_LEN] = enc.tag
        return written + TAG_LEN

    def open(self, counter: int, last: bool, ct: memoryview, out: memoryview) -> int:
        """Verify and decrypt ciphertext || tag into ``out``; return plaintext length.

        Raises InvalidTag; ``out`` may then hold unauthenticated bytes and must not be used.
        """
        nonce = self.nonce(counter, last)
        n = len(ct) - TAG_LEN
        if self.aes is not None:
            self.aes.decrypt_into(nonce, ct, self.aad, out[:n])
            return n
        dec = Cipher(self.sm4, modes.GCM(nonce, bytes(ct[n:]))).decryptor()
        dec.authenticate_additional_data(self.aad)
        written = dec.update_into(ct[:n], out) if n else 0
        tail = dec.finalize()  # raises InvalidTag
        if tail:
            out[written : written + len(tail)] = tail
            written += len(tail)
        return written


def _write(dst: BinaryIO, data) -> None:
    try:
        dst.write(data)
    except OSError as exc:
        raise StreamError(f"cannot write output: {exc}") from exc


# --------------------------------------------------------------------------- public API


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    dek: bytes,
    aad: bytes,
    *,
    suite: str = "AES-256-GCM",
    kek_id: str,
    kek_version: str = "",
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> int:
    """Encrypt everything readable from ``src`` to ``dst``; return the bytes written.

    ``dek`` is the 32-byte data key (wrapped elsewhere by the KEK named ``kek_id`` /
    ``kek_version``, which are recorded in the header in clear). ``aad`` binds the
    ciphertext to its artifact (for example ``b"<artifact id>:<version>"``); the same bytes
    must be supplied to decrypt.
    """
    s = SUITES.get(suite)
    if s is None:
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(SUITES)}")
    if len(dek) != DEK_LEN:
        raise ValueError(f"data key must be {DEK_LEN} bytes, got {len(dek)}")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment_size must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
    salt = os.urandom(SALT_LEN)
    prefix = os.urandom(NONCE_PREFIX_LEN)
    header = _build_header(s, kek_id, kek_version, salt, prefix, segment_size)
    sealer = _Sealer(s, _derive_key(bytes(dek), header, salt, s.key_len), prefix, header + bytes(aad))

    _write(dst, header)
    written = len(header)
    inbuf = bytearray(segment_size)
    outbuf = bytearray(segment_size + TAG_LEN)
    in_mv, out_mv = memoryview(inbuf), memoryview(outbuf)
    counter = 0
    n = _read_full(src, in_mv)
    while True:
        peek = b""
        if n == segment_size:
            peek = src.read(1) or b""
        last = not peek
        if counter >= MAX_SEGMENTS:
            raise StreamError("input too large: more than 2**32 segments")
        m = sealer.seal(counter, last, in_mv[:n], out_mv)
        _write(dst, out_mv[:m])
        written += m
        if last:
            return written
        counter += 1
        in_mv[0:1] = peek
        n = 1 + _read_full(src, in_mv[1:])


class StreamEncryptor:
    """Push-style :func:`encrypt_stream`: ``write()`` plaintext chunks of any size as they arrive
    (an upload handler, a converter's output), ``close()`` seals the final segment. The output is
    byte-for-byte the format :func:`encrypt_stream` writes; memory is one segment plus the chunk
    being written. ``written`` counts ciphertext bytes, ``plaintext_bytes`` the input."""

    def __init__(
        self,
        dst: BinaryIO,
        dek: bytes,
        aad: bytes,
        *,
        suite: str = "AES-256-GCM",
        kek_id: str,
        kek_version: str = "",
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        s = SUITES.get(suite)
        if s is None:
            raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(SUITES)}")
        if len(dek) != DEK_LEN:
            raise ValueError(f"data key must be {DEK_LEN} bytes, got {len(dek)}")
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
        salt = os.urandom(SALT_LEN)
        prefix = os.urandom(NONCE_PREFIX_LEN)
        header = _build_header(s, kek_id, kek_version, salt, prefix, segment_size)
        self._sealer = _Sealer(s, _derive_key(bytes(dek), header, salt, s.key_len), prefix, header + bytes(aad))
        self._dst = dst
        self._size = segment_size
        # A full segment stays pending until more input shows it is not the final one.
        self._pending = bytearray()
        self._out = memoryview(bytearray(segment_size + TAG_LEN))
        self._counter = 0
        self._closed = False
        self.plaintext_bytes = 0
        _write(dst, header)
        self.written = len(header)

    def _seal(self, data: memoryview, last: bool) -> None:
        if self._counter >= MAX_SEGMENTS:
            raise StreamError("input too large: more than 2**32 segments")
        m = self._sealer.seal(self._counter, last, data, self._out)
        _write(self._dst, self._out[:m])
        self.written += m
        self._counter += 1

    def write(self, data) -> int:
        """Encrypt ``data`` (bytes-like); sealed segments go to the destination at once."""
        if self._closed:
            raise ValueError("write to a closed StreamEncryptor")
        view = memoryview(data).cast("B")
        self.plaintext_bytes += len(view)
        pos = 0
        while pos < len(view):
            if len(self._pending) == self._size:
                # more input follows, so the pending full segment is not the final one
                self._seal(memoryview(self._pending), False)
                self._pending.clear()
            take = min(self._size - len(self._pending), len(view) - pos)
            self._pending += view[pos : pos + take]
            pos += take
        return len(view)

    def close(self) -> int:
        """Seal the final segment (empty only when nothing was written); return ``written``."""
        if not self._closed:
            self._closed = True
            self._seal(memoryview(self._pending), True)
            self._pending = bytearray()
        return self.written

    def __enter__(self) -> StreamEncryptor:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.close()


def decrypt_stream(src: BinaryIO, dst: BinaryIO, dek: bytes, aad: bytes) -> int:
    """Decrypt ``src`` to ``dst``, authenticating each segment before writing it.

    Returns the number of plaintext bytes written. On any problem raises
    :class:`StreamError` and writes nothing further; segments already written were
    authentic on their own, but the artifact is incomplete or forged, so **the caller must
    discard everything written to ``dst``** (see :func:`decrypt_file` and
    :func:`decrypt_to_bytes`, which do that).
    """
    header = read_header(src)
    s = SUITES[header.suite]
    if len(dek) != DEK_LEN:
        raise StreamError(f"data key must be {DEK_LEN} bytes, got {len(dek)}")
    sealer = _Sealer(
        s, _derive_key(bytes(dek), header.raw, header.salt, s.key_len), header.nonce_prefix, header.raw + bytes(aad)
    )
    seg = header.segment_size + TAG_LEN
    inbuf = bytearray(seg)
    outbuf = bytearray(seg)
    in_mv, out_mv = memoryview(inbuf), memoryview(outbuf)
    counter = 0
    written = 0
    n = _read_full(src, in_mv)
    if n == 0:
        raise StreamError("truncated artifact: header present but no segments")
    while True:
        peek = b""
        if n == seg:
            peek = src.read(1) or b""
        last = not peek
        if n < TAG_LEN:
            raise StreamError(f"truncated artifact: segment {counter} is shorter than its tag")
        if last and n == TAG_LEN and counter > 0:
            raise StreamError(f"malformed artifact: empty final segment {counter}")
        if counter >= MAX_SEGMENTS:
            raise StreamError("malformed artifact: more than 2**32 segments")
        try:
            m = sealer.open(counter, last, in_mv[:n], out_mv)
        except InvalidTag:
            where = "final segment" if last else "segment"
            raise StreamError(
                f"authentication failed at {where} {counter}: wrong key or aad, or the artifact "
                "was modified, truncated or reordered"
            ) from None
        _write(dst, out_mv[:m])
        written += m
        if last:
            return written
        counter += 1
        in_mv[0:1] = peek
        n = 1 + _read_full(src, in_mv[1:])


def authenticate_first_segment(src: BinaryIO, dek: bytes, aad: bytes, keep: int = 0) -> tuple[int, bytes]:
    """Authenticate only segment 0 of a file (header parsed, per-file key derived, GCM tag of the
    first segment checked with the right "final" flag): cheap proof that a file is this format's
    ciphertext under ``dek`` and ``aad``, without reading gigabytes. Returns the segment's
    plaintext length and its first ``keep`` bytes (authenticated; the rest is wiped). Raises
    :class:`StreamError`."""
    header = read_header(src)
    s = SUITES[header.suite]
    if len(dek) != DEK_LEN:
        raise StreamError(f"data key must be {DEK_LEN} bytes, got {len(dek)}")
    sealer = _Sealer(
        s, _derive_key(bytes(dek), header.raw, header.salt, s.key_len), header.nonce_prefix, header.raw + bytes(aad)
    )
    seg = header.segment_size + TAG_LEN
    inbuf, outbuf = bytearray(seg), bytearray(seg)
    n = _read_full(src, memoryview(inbuf))
    if n < TAG_LEN:
        raise StreamError("truncated artifact: segment 0 is shorter than its tag")
    last = n < seg or not src.read(1)
    try:
        m = sealer.open(0, last, memoryview(inbuf)[:n], memoryview(outbuf))
    except InvalidTag:
        raise StreamError("authentication failed at segment 0: wrong key or aad, or the file was modified") from None
    head = bytes(outbuf[: min(keep, m)])
    outbuf[:] = bytes(len(outbuf))
    return m, head


def decrypt_to_bytes(blob_or_file: bytes | bytearray | memoryview | BinaryIO, dek: bytes, aad: bytes) -> bytes:
    """Decrypt into memory; on failure raise :class:`StreamError` and return nothing."""
    src = io.BytesIO(bytes(blob_or_file)) if isinstance(blob_or_file, (bytes, bytearray, memoryview)) else blob_or_file
    out = io.BytesIO()
    try:
        decrypt_stream(src, out, dek, aad)
    except BaseException:
        out.seek(0)
        out.truncate()
        raise
    return out.getvalue()


def decrypt_file(src_path: str | os.PathLike, dst_path: str | os.PathLike, dek: bytes, aad: bytes) -> int:
    """Decrypt a file to ``dst_path`` atomically: on failure no ``dst_path`` is produced.

    Writes ``dst_path + ".partial"`` and renames it into place only after the final segment
    has authenticated; the partial file is removed on any error.
    """
    dst_path = os.fspath(dst_path)
    tmp = dst_path + ".partial"
    try:
        with open(src_path, "rb") as src, open(tmp, "wb") as dst:
            n = decrypt_stream(src, dst, dek, aad)
        os.replace(tmp, dst_path)
        return n
    except OSError as exc:
        _unlink_quiet(tmp)
        raise StreamError(f"cannot decrypt {os.fspath(src_path)!r}: {exc}") from exc
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def decrypt_artifact_file(src: BinaryIO, dek: bytes, aad: bytes) -> bytes:
    """Decrypt an artifact of either format into memory, by its version byte: 2 (this module's
    segmented stream, what the portal writes) or 1 (the one-shot envelope of the first
    releases, still readable). Raises StreamError or envelope.ArtifactDecryptError."""
    from inference_backend import envelope

    head = src.read(len(MAGIC) + 1)
    src.seek(-len(head), io.SEEK_CUR)
    if len(head) == len(MAGIC) + 1 and head[: len(MAGIC)] == MAGIC and head[-1] == envelope.FORMAT_VERSION:
        return envelope.decrypt_artifact(src.read(), dek, aad)
    return decrypt_to_bytes(src, dek, aad)
