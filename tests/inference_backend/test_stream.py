"""Streaming segmented AEAD format (issue 4): round trips, tamper matrix, KATs, memory."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from inference_backend import stream
from inference_backend.stream import (
    SUITES,
    StreamError,
    decrypt_file,
    decrypt_stream,
    decrypt_to_bytes,
    encrypt_stream,
    read_header,
    sm3_hex,
)

SEG = 64
TAG = 16
DEK = bytes(range(32))
AAD = b"artifact-42:v3"
BOTH = pytest.mark.parametrize("suite", sorted(SUITES))


def _enc(pt: bytes, suite: str, *, dek: bytes = DEK, aad: bytes = AAD, seg: int = SEG, **kw) -> bytes:
    out = io.BytesIO()
    n = encrypt_stream(io.BytesIO(pt), out, dek, aad, suite=suite, kek_id="kek-α", segment_size=seg, **kw)
    assert n == len(out.getvalue())
    return out.getvalue()


class RecordingSink(io.RawIOBase):
    """A destination that remembers everything written to it."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.data += bytes(b)
        return len(b)


def _dec_partial(blob: bytes, *, dek: bytes = DEK, aad: bytes = AAD) -> tuple[StreamError, bytes]:
    sink = RecordingSink()
    with pytest.raises(StreamError) as ei:
        decrypt_stream(io.BytesIO(blob), sink, dek, aad)
    return ei.value, bytes(sink.data)


# --------------------------------------------------------------------------- round trips


@BOTH
@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 5 * SEG + 7])
def test_round_trip(suite, size):
    pt = os.urandom(size)
    blob = _enc(pt, suite, kek_version="7")
    nseg = max(1, -(-size // SEG))
    h = read_header(blob)
    assert len(blob) == h.length + size + nseg * TAG
    assert (h.suite, h.kek_id, h.kek_version, h.segment_size, h.version) == (suite, "kek-α", "7", SEG, 2)
    sink = io.BytesIO()
    assert decrypt_stream(io.BytesIO(blob), sink, DEK, AAD) == size
    assert sink.getvalue() == pt
    assert decrypt_to_bytes(blob, DEK, AAD) == pt


def test_default_segment_size_and_fresh_salt():
    pt = os.urandom((1 << 20) + 3)
    a, b = _enc(pt, "AES-256-GCM", seg=1 << 20), _enc(pt, "AES-256-GCM", seg=1 << 20)
    assert read_header(a).segment_size == 1 << 20
    assert a != b and read_header(a).salt != read_header(b).salt
    assert decrypt_to_bytes(a, DEK, AAD) == pt


def test_read_header_leaves_stream_at_first_segment():
    blob = _enc(b"hello", "SM4-GCM")
    f = io.BytesIO(blob)
    h = read_header(f)
    assert f.tell() == h.length == len(blob) - 5 - TAG


def test_short_reads_from_a_pipe_like_source():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.f = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            chunk = self.f.read(min(len(b), 7))
            b[: len(chunk)] = chunk
            return len(chunk)

    pt = os.urandom(5 * SEG + 3)
    out = io.BytesIO()
    encrypt_stream(Trickle(pt), out, DEK, AAD, kek_id="k", segment_size=SEG)
    back = io.BytesIO()
    decrypt_stream(Trickle(out.getvalue()), back, DEK, AAD)
    assert back.getvalue() == pt


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown suite"):
        _enc(b"x", "ROT13")
    with pytest.raises(ValueError, match="32 bytes"):
        _enc(b"x", "AES-256-GCM", dek=b"short")
    with pytest.raises(ValueError, match="segment_size"):
        _enc(b"x", "AES-256-GCM", seg=8)


# --------------------------------------------------------------------------- tamper matrix

PT = bytes(range(256)) * 1 + b"tail-bytes"  # 4 full segments + a 10-byte final one (5 segments)
NSEG = 5


def _split(blob: bytes) -> tuple[bytes, list[bytes]]:
    h = read_header(blob).length
    body = blob[h:]
    segs = [body[i : i + SEG + TAG] for i in range(0, len(body), SEG + TAG)]
    return blob[:h], segs


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1 :]


def _tampered(blob: bytes, other: bytes, case: str) -> tuple[bytes, int]:
    """Return the tampered blob and the number of segments that must decrypt before failing."""
    hdr, segs = _split(blob)
    if case == "header_bit":
        return _flip(hdr, len(hdr) - 20) + b"".join(segs), 0  # inside the salt
    if case == "header_segment_size":
        return _flip(hdr, len(hdr) - 1) + b"".join(segs), 0
    if case == "body_bit":
        segs[2] = _flip(segs[2], 5)
        return hdr + b"".join(segs), 2
    if case == "tag_bit":
        segs[2] = _flip(segs[2], SEG + 3)
        return hdr + b"".join(segs), 2
    if case == "last_body_bit":
        segs[-1] = _flip(segs[-1], 0)
        return hdr + b"".join(segs), NSEG - 1
    if case == "truncated_last":
        return (hdr + b"".join(segs))[:-3], NSEG - 1
    if case == "truncated_inside_tag_only":
        return (hdr + b"".join(segs))[: -len(segs[-1]) + 4], NSEG - 1
    if case == "dropped_last":
        return hdr + b"".join(segs[:-1]), NSEG - 2
    if case == "reordered":
        segs[1], segs[2] = segs[2], segs[1]
        return hdr + b"".join(segs), 1
    if case == "duplicated":
        segs.insert(2, segs[1])
        return hdr + b"".join(segs), 2
    if case == "trailing_garbage":
        return hdr + b"".join(segs) + b"\x00" * 20, NSEG - 1
    if case == "header_from_other_file":
        other_hdr, _ = _split(other)
        return other_hdr + b"".join(segs), 0
    if case == "segment_from_other_file":
        _, other_segs = _split(other)
        segs[3] = other_segs[3]
        return hdr + b"".join(segs), 3
    if case == "header_only":
        return hdr, 0
    raise AssertionError(case)


CASES = [
    "header_bit",
    "header_segment_size",
    "body_bit",
    "tag_bit",
    "last_body_bit",
    "truncated_last",
    "truncated_inside_tag_only",
    "dropped_last",
    "reordered",
    "duplicated",
    "trailing_garbage",
    "header_from_other_file",
    "segment_from_other_file",
    "header_only",
]


@BOTH
@pytest.mark.parametrize("case", CASES)
def test_tamper_detected_and_nothing_past_last_good_segment(suite, case):
    blob = _enc(PT, suite)
    other = _enc(PT, suite)  # same key, same aad, same plaintext: only salt/nonce differ
    assert len(_split(blob)[1]) == NSEG
    bad, good = _tampered(blob, other, case)
    err, written = _dec_partial(bad)
    assert written == PT[: good * SEG], f"{case}: released plaintext past segment {good}"
    assert str(err)
    with pytest.raises(StreamError):
        decrypt_to_bytes(bad, DEK, AAD)


@BOTH
def test_wrong_key_and_wrong_aad(suite):
    blob = _enc(PT, suite)
    err, written = _dec_partial(blob, dek=bytes(32))
    assert written == b"" and "authentication failed at segment 0" in str(err)
    err, written = _dec_partial(blob, aad=b"artifact-42:v4")
    assert written == b"" and "wrong key or aad" in str(err)
    err, _ = _dec_partial(blob, dek=b"x" * 16)
    assert "32 bytes" in str(err)


@BOTH
def test_final_flag_is_what_detects_a_dropped_tail(suite):
    blob = _enc(PT, suite)
    hdr, segs = _split(blob)
    err, written = _dec_partial(hdr + b"".join(segs[:2]))
    assert "final segment 1" in str(err)
    assert written == PT[:SEG]


def test_malformed_headers_have_clear_messages():
    blob = _enc(b"data", "AES-256-GCM")
    cases = {
        b"": "truncated header",
        b"NOPE" + blob[4:]: "bad magic",
        blob[:4] + b"\x03" + blob[5:]: "newer than this software supports",
        blob[:4] + b"\x01" + blob[5:]: "not a streaming artifact",
        blob[:5] + b"\x09" + blob[6:]: "unknown cipher suite id 9",
        blob[:20]: "truncated header",
    }
    for bad, msg in cases.items():
        with pytest.raises(StreamError, match=msg):
            decrypt_to_bytes(bad, DEK, AAD)
    h = read_header(blob)
    huge = h.raw[:-4] + struct.pack(">I", 1 << 30) + blob[h.length :]
    with pytest.raises(StreamError, match="segment size"):
        read_header(huge)


def test_decrypt_file_leaves_no_output_on_failure(tmp_path):
    pt = os.urandom(10 * SEG)
    src, dst = tmp_path / "a.enc", tmp_path / "a.bin"
    src.write_bytes(_enc(pt, "SM4-GCM"))
    assert decrypt_file(src, dst, DEK, AAD) == len(pt) and dst.read_bytes() == pt
    dst.unlink()
    src.write_bytes(src.read_bytes()[:-1])
    with pytest.raises(StreamError):
        decrypt_file(src, dst, DEK, AAD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.enc"]


# --------------------------------------------------------------------------- known answers

RFC8998_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
RFC8998_IV = bytes.fromhex("00001234567800000000ABCD")
RFC8998_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
RFC8998_PT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
RFC8998_CT = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
)
RFC8998_TAG = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")


def test_sm4_gcm_rfc8998_vector():
    enc = Cipher(algorithms.SM4(RFC8998_KEY), modes.GCM(RFC8998_IV)).encryptor()
    enc.authenticate_additional_data(RFC8998_AAD)
    assert enc.update(RFC8998_PT) + enc.finalize() == RFC8998_CT
    assert enc.tag == RFC8998_TAG


def test_sm4_gcm_rfc8998_vector_through_the_segment_sealer():
    sealer = stream._Sealer(SUITES["SM4-GCM"], RFC8998_KEY, b"", RFC8998_AAD)
    sealer.nonce = lambda counter, last: RFC8998_IV
    out = memoryview(bytearray(len(RFC8998_PT) + TAG))
    n = sealer.seal(0, True, memoryview(RFC8998_PT), out)
    assert bytes(out[:n]) == RFC8998_CT + RFC8998_TAG
    back = memoryview(bytearray(len(RFC8998_PT) + TAG))
    m = sealer.open(0, True, out[:n], back)
    assert bytes(back[:m]) == RFC8998_PT


def test_sm3_abc():
    assert sm3_hex(b"abc") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


# The worked example of docs/encryption-format.md, byte for byte.
DOC_SALT = bytes(range(0x20, 0x40))
DOC_PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
DOC_DEK = bytes(range(32))
DOC_AAD = b"model-7:1"
DOC_PT = b"Sovereign stream format, worked example!"  # 40 bytes -> 32 + 8 with segment_size 32
DOC_HEADER = {
    suite: "5356524e02" + sid + "000b6c6f63616c2d6b656b2d310001312021222324252627"
    "28292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fa0a1a2a3a4a5a600000020"
    for suite, sid in (("AES-256-GCM", "01"), ("SM4-GCM", "02"))
}


def _doc_blob(monkeypatch, suite):
    rand = iter([DOC_SALT, DOC_PREFIX])
    monkeypatch.setattr(stream.os, "urandom", lambda n: next(rand))
    out = io.BytesIO()
    encrypt_stream(
        io.BytesIO(DOC_PT), out, DOC_DEK, DOC_AAD, suite=suite, kek_id="local-kek-1", kek_version="1", segment_size=32
    )
    return out.getvalue()


@BOTH
def test_documented_worked_example(monkeypatch, suite):
    blob = _doc_blob(monkeypatch, suite)
    assert blob.hex().startswith(DOC_HEADER[suite])
    doc = (Path(__file__).resolve().parents[2] / "docs" / "encryption-format.md").read_text()
    compact = "".join(doc.split())
    hdr = read_header(blob)
    body = blob[hdr.length :]
    for part in (DOC_HEADER[suite], body[:48].hex(), body[48:].hex()):
        assert part in compact, f"docs/encryption-format.md does not show {part}"
    assert decrypt_to_bytes(blob, DOC_DEK, DOC_AAD) == DOC_PT


# --------------------------------------------------------------------------- memory


def test_constant_memory_64_mib_through_files(tmp_path):
    size = 64 << 20
    plain, enc, dec = tmp_path / "p", tmp_path / "e", tmp_path / "d"
    with open(plain, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        with open(plain, "rb") as fi, open(enc, "wb") as fo:
            encrypt_stream(fi, fo, DEK, AAD, kek_id="k")
        with open(enc, "rb") as fi, open(dec, "wb") as fo:
            assert decrypt_stream(fi, fo, DEK, AAD) == size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert os.path.getsize(dec) == size
    with open(plain, "rb") as a, open(dec, "rb") as b:
        while True:
            x, y = a.read(1 << 22), b.read(1 << 22)
            assert x == y
            if not x:
                break


def test_artifact_files_of_both_formats_decrypt_by_their_version_byte():
    """Artifacts written before the stream format (envelope v1) still load on Triton hosts."""
    from inference_backend import envelope
    from inference_backend.stream import decrypt_artifact_file

    dek, aad, plaintext = os.urandom(32), b"artifact:7:1", os.urandom(3000)
    legacy = envelope.encrypt_artifact(plaintext, dek, aad)
    current = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), current, dek, aad, kek_id="local:test", segment_size=1024)

    assert decrypt_artifact_file(io.BytesIO(legacy), dek, aad) == plaintext
    assert decrypt_artifact_file(io.BytesIO(current.getvalue()), dek, aad) == plaintext
    with pytest.raises(envelope.ArtifactDecryptError):
        decrypt_artifact_file(io.BytesIO(legacy), dek, b"another artifact")
    with pytest.raises(StreamError):
        decrypt_artifact_file(io.BytesIO(current.getvalue()), dek, b"another artifact")


@pytest.mark.parametrize("suite", ["AES-256-GCM", "SM4-GCM"])
@pytest.mark.parametrize("size", [0, 10, 64, 200])
def test_authenticate_first_segment_checks_segment_0_with_its_final_flag(suite, size):
    """The disposal and encryption checks' cheap probe: segment 0 only, the right "final" flag
    whether the file has one segment or several; a wrong key, aad or a flipped byte is refused."""
    dek, aad = os.urandom(32), b"probe"
    plaintext = os.urandom(size)
    out = io.BytesIO()
    stream.encrypt_stream(io.BytesIO(plaintext), out, dek, aad, suite=suite, kek_id="k", segment_size=64)
    blob = out.getvalue()
    n, head = stream.authenticate_first_segment(io.BytesIO(blob), dek, aad, keep=16)
    assert n == min(size, 64) and head == plaintext[:16]
    with pytest.raises(StreamError, match="segment 0"):
        stream.authenticate_first_segment(io.BytesIO(blob), os.urandom(32), aad)
    with pytest.raises(StreamError, match="segment 0"):
        stream.authenticate_first_segment(io.BytesIO(blob), dek, b"other")
    damaged = bytearray(blob)
    damaged[stream.read_header(blob).length] ^= 1
    with pytest.raises(StreamError, match="segment 0"):
        stream.authenticate_first_segment(io.BytesIO(bytes(damaged)), dek, aad)
