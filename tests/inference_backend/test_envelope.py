"""Unit tests of inference_backend.envelope."""

import pytest

from inference_backend.envelope import (
    HEADER_LEN,
    MAGIC,
    ArtifactDecryptError,
    decrypt_artifact,
    encrypt_artifact,
    generate_dek,
    sha256_hex,
)

PLAINTEXT = b"onnx model bytes " * 100
AAD = b"sovereign:model:42:v3"


@pytest.fixture
def dek():
    return generate_dek()


def test_round_trip_and_layout(dek):
    blob = encrypt_artifact(PLAINTEXT, dek, AAD)
    assert blob[:4] == MAGIC == b"SVRN"
    assert blob[4] == 1 and blob[5] == 1
    assert len(blob) == HEADER_LEN + len(PLAINTEXT) + 16
    assert PLAINTEXT[:32] not in blob
    assert decrypt_artifact(blob, dek, AAD) == PLAINTEXT


def test_empty_plaintext_round_trips(dek):
    assert decrypt_artifact(encrypt_artifact(b"", dek, AAD), dek, AAD) == b""


def test_nonce_and_key_are_fresh(dek):
    assert len(dek) == 32 and generate_dek() != dek
    assert encrypt_artifact(PLAINTEXT, dek, AAD)[6:18] != encrypt_artifact(PLAINTEXT, dek, AAD)[6:18]


def test_wrong_key(dek):
    blob = encrypt_artifact(PLAINTEXT, dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="failed authentication"):
        decrypt_artifact(blob, generate_dek(), AAD)


def test_wrong_aad(dek):
    blob = encrypt_artifact(PLAINTEXT, dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="failed authentication"):
        decrypt_artifact(blob, dek, AAD + b"x")


@pytest.mark.parametrize("position", [HEADER_LEN, HEADER_LEN + 100, -1, 8])
def test_flipped_bit_is_detected(dek, position):
    blob = bytearray(encrypt_artifact(PLAINTEXT, dek, AAD))
    blob[position] ^= 0x01
    with pytest.raises(ArtifactDecryptError, match="failed authentication"):
        decrypt_artifact(bytes(blob), dek, AAD)


def test_swapped_header_is_detected(dek):
    first = encrypt_artifact(PLAINTEXT, dek, AAD)
    second = encrypt_artifact(PLAINTEXT, dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="failed authentication"):
        decrypt_artifact(second[:HEADER_LEN] + first[HEADER_LEN:], dek, AAD)


def test_unknown_version_and_suite(dek):
    blob = bytearray(encrypt_artifact(PLAINTEXT, dek, AAD))
    blob[4] = 2
    with pytest.raises(ArtifactDecryptError, match="format version 2"):
        decrypt_artifact(bytes(blob), dek, AAD)
    blob[4], blob[5] = 1, 7
    with pytest.raises(ArtifactDecryptError, match="cipher suite 7"):
        decrypt_artifact(bytes(blob), dek, AAD)


def test_bad_magic(dek):
    blob = encrypt_artifact(PLAINTEXT, dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="magic"):
        decrypt_artifact(b"XXXX" + blob[4:], dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="magic"):
        decrypt_artifact(PLAINTEXT, dek, AAD)


@pytest.mark.parametrize("length", [0, 2, 6, HEADER_LEN, HEADER_LEN + 15])
def test_truncated_header(dek, length):
    blob = encrypt_artifact(PLAINTEXT, dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="truncated"):
        decrypt_artifact(blob[:length], dek, AAD)


def test_truncated_body(dek):
    blob = encrypt_artifact(PLAINTEXT, dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="failed authentication"):
        decrypt_artifact(blob[:-1], dek, AAD)


def test_key_length_is_checked(dek):
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_artifact(PLAINTEXT, dek[:16], AAD)
    blob = encrypt_artifact(PLAINTEXT, dek, AAD)
    with pytest.raises(ArtifactDecryptError, match="32 bytes"):
        decrypt_artifact(blob, dek[:16], AAD)


def test_sha256_hex():
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
