"""SM2 signatures (GB/T 32918, SM3, GM/T 0009 default user id) in 国密 mode: the standard's
known-answer example, OpenSSL interoperability, checkpoints verified in the portal and offline,
forged checkpoints, and a chain that switches from ECDSA to SM2."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from django.core.management import CommandError, call_command

from apps.audit.chain import checkpoint_record, hash_alg
from apps.audit.export import iter_export_jsonl
from apps.audit.models import AuditCheckpoint, AuditEvent
from apps.audit.offline_verify import (
    SM2_CURVE,
    Sm2PublicKey,
    checkpoint_payload,
    key_id_of,
    load_public_keys,
    sm2_engine,
    verify_export,
)
from apps.audit.signing import LocalSigner, SigningError, Sm2Signer, get_signer, public_key_text
from apps.audit.verify import verify_chain
from tests.audit.chain_helpers import fill, sql

VERIFIER = Path(__file__).resolve().parents[2] / "apps" / "audit" / "offline_verify.py"
NO_DJANGO = (
    "import runpy, sys; sys.modules['django'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
NO_DJANGO_NO_GMSSL = NO_DJANGO.replace(
    "sys.modules['django'] = None;", "sys.modules['django'] = None; sys.modules['gmssl'] = None;"
)

# GB/T 32918.2-2016 Annex A (= GM/T 0003.2-2012 A.2): the 256-bit example curve over Fp,
# user id ALICE123@YAHOO.COM, message "message digest".
EXAMPLE_CURVE = {
    "p": "8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3",
    "a": "787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498",
    "b": "63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A",
    "n": "8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7",
    "g": "421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D"
    "0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2",
}
EXAMPLE = {
    "d": 0x128B2FA8BD433C6C068C8D803DFF79792A519A55171B1B650C23661D15897263,
    "xA": 0x0AE4C7798AA0F119471BEE11825BE46202BB79E2A5844495E97C04FF4DF2548A,
    "yA": 0x7C0240F88F1CD4E16352A73C17B7F16F07353E53A176D684A9FE0C6BB798E857,
    "e": "B524F552CD82B8B028476E005C377FB19A87E6FC682D48BB5D42E3D9B9EFFE76",
    "k": "6CB28D99385C175C94F94E934817663FC176D925DD72B727260DBAAE1FB2F96F",
    "r": 0x40F1EC59F793D9F49E09DCEF49130D4194F79FB1EED2CAA55BACDB49C4E755D1,
    "s": 0x6FC6DAC32C5D5CF10C77DFB20F7C2EB667A457872FB09EC56327A67EC7DEEBE7,
}
UID, MESSAGE = b"ALICE123@YAHOO.COM", b"message digest"
SM2_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")


@pytest.fixture
def guomi(settings):
    settings.ARTIFACT_SUITE = "SM4-GCM"
    get_signer.cache_clear()
    yield settings
    get_signer.cache_clear()


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


# --- the primitive ----------------------------------------------------------------------------


class TestPrimitive:
    def test_standard_example_known_answer(self):
        public = Sm2Signer.public_key_of(EXAMPLE["d"], EXAMPLE_CURVE)
        assert (public.x, public.y) == (EXAMPLE["xA"], EXAMPLE["yA"])
        assert public.digest(MESSAGE, UID).hex().upper() == EXAMPLE["e"]

        engine = sm2_engine(EXAMPLE_CURVE, public.xy_hex(), f"{EXAMPLE['d']:064x}")
        raw = engine.sign(bytes.fromhex(EXAMPLE["e"]), EXAMPLE["k"])
        assert (int(raw[:64], 16), int(raw[64:], 16)) == (EXAMPLE["r"], EXAMPLE["s"])

        signature = encode_dss_signature(EXAMPLE["r"], EXAMPLE["s"])
        public.verify(signature, MESSAGE, UID)
        with pytest.raises(InvalidSignature):
            public.verify(signature, flip(MESSAGE, 0), UID)
        with pytest.raises(InvalidSignature):
            public.verify(encode_dss_signature(EXAMPLE["r"], EXAMPLE["s"] ^ 1), MESSAGE, UID)
        with pytest.raises(InvalidSignature):  # the user id is part of what is signed
            public.verify(signature, MESSAGE)

    def test_round_trip_and_flipped_bytes(self, tmp_path):
        signer = Sm2Signer(tmp_path / "sm2.json")
        assert signer.sig_alg == "sm2-sm3" and signer.key_id.startswith("sm2:")
        assert (signer.path.stat().st_mode & 0o777) == 0o600
        payload = b"sovereign-audit-checkpoint/1\n{}"
        signature = signer.sign(payload)
        signer.public_key().verify(signature, payload)
        for at in (0, len(payload) - 1):
            with pytest.raises(InvalidSignature):
                signer.public_key().verify(signature, flip(payload, at))
        with pytest.raises(InvalidSignature):
            signer.public_key().verify(flip(signature, len(signature) - 1), payload)
        with pytest.raises(InvalidSignature):  # out of range: s = n
            signer.public_key().verify(encode_dss_signature(1, int(SM2_CURVE["n"], 16)), payload)
        with pytest.raises(InvalidSignature):
            signer.public_key().verify(b"not der", payload)

        # The same file gives the same key; the public key round-trips through its hex export.
        again = Sm2Signer(tmp_path / "sm2.json")
        assert again.key_id == signer.key_id
        text = public_key_text(signer)
        assert len(text.strip()) == 130 and text.startswith("04")
        assert list(load_public_keys([text.encode()])) == [signer.key_id]
        assert key_id_of(Sm2PublicKey.from_hex(text)) == signer.key_id

    def test_key_file_checks(self, tmp_path):
        path = tmp_path / "sm2.json"
        Sm2Signer(path)
        path.chmod(0o644)
        with pytest.raises(SigningError, match="readable by others"):
            Sm2Signer(path)
        path.chmod(0o600)
        path.write_text('{"format": "something else"}')
        with pytest.raises(SigningError, match="not an SM2 key file"):
            Sm2Signer(path)

    def test_bad_public_keys_are_refused(self):
        with pytest.raises(ValueError, match="130 hex digits"):
            Sm2PublicKey.from_hex("04abcd")
        good = Sm2Signer.public_key_of(2).hex()
        with pytest.raises(ValueError, match="not a point of the curve"):
            Sm2PublicKey.from_hex(good[:-1] + ("0" if good[-1] != "0" else "1"))

    def test_a_key_whose_hex_starts_with_04_works(self):
        # gmssl's CryptSM2 lstrip("04")s its public key; ours is set after construction.
        d = next(d for d in range(2, 5000) if Sm2Signer.public_key_of(d).xy_hex().startswith(("0", "4")))
        public = Sm2Signer.public_key_of(d)
        engine = sm2_engine(SM2_CURVE, public.xy_hex(), f"{d:064x}")
        e = public.digest(b"x")
        raw = engine.sign(e, f"{12345:064x}")
        public.verify(encode_dss_signature(int(raw[:64], 16), int(raw[64:], 16)), b"x")

    def test_interoperates_with_openssl(self, tmp_path):
        openssl = shutil.which("openssl")
        key = tmp_path / "openssl-sm2.pem"
        # Debian's openssl (3.x) has SM2; without it the interoperability claim is untested, so fail.
        assert openssl is not None, "openssl is not installed"
        genpkey = [openssl, "genpkey", "-algorithm", "SM2", "-out", str(key)]
        made = subprocess.run(genpkey, capture_output=True, text=True)
        assert made.returncode == 0, f"this OpenSSL cannot generate SM2 keys: {made.stderr}"
        message = tmp_path / "m"
        message.write_bytes(b"sovereign interop")
        der = subprocess.run([openssl, "pkey", "-in", str(key), "-pubout", "-outform", "DER"], capture_output=True)
        public = Sm2PublicKey.from_hex(der.stdout[-65:].hex())
        sig = tmp_path / "openssl.sig"
        opt = ["-sigopt", "distid:1234567812345678"]
        subprocess.run([openssl, "dgst", "-sm3", "-sign", str(key), *opt, "-out", str(sig), str(message)], check=True)
        public.verify(sig.read_bytes(), message.read_bytes())  # OpenSSL's signature, our verifier

        signer = Sm2Signer(tmp_path / "ours.json")
        ours = tmp_path / "ours.sig"
        ours.write_bytes(signer.sign(message.read_bytes()))
        pub = tmp_path / "ours.der"
        pub.write_bytes(SM2_SPKI_PREFIX + signer.public_key().point_bytes())
        verify = [openssl, "dgst", "-sm3", "-verify", str(pub), "-keyform", "DER", *opt, "-signature", str(ours)]
        proc = subprocess.run([*verify, str(message)], capture_output=True, text=True)
        assert "Verified OK" in proc.stdout, proc.stdout + proc.stderr  # our signature, OpenSSL's verifier


# --- checkpoints in 国密 mode -------------------------------------------------------------------


def export_lines() -> list[str]:
    return list(iter_export_jsonl(AuditEvent.objects.all()))


def offline(tmp_path, lines: list[str], keys: list[str], *, code=NO_DJANGO, extra=()) -> tuple[int, dict, str]:
    export = tmp_path / "export.jsonl"
    export.write_text("".join(lines), encoding="utf-8")
    args = []
    for i, text in enumerate(keys):
        path = tmp_path / f"key{i}.txt"
        path.write_text(text)
        args += ["--public-key", str(path)]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(VERIFIER), str(export), *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    return proc.returncode, json.loads(proc.stdout or proc.stderr), proc.stderr


@pytest.mark.django_db
class TestCheckpoints:
    def test_guomi_checkpoints_are_sm2_and_verify(self, guomi, tmp_path, capsys):
        signer = get_signer()
        assert isinstance(signer, Sm2Signer)
        fill(3)
        fill(2)
        cps = list(AuditCheckpoint.objects.order_by("sequence"))
        assert len(cps) == 2 and {c.sig_alg for c in cps} == {"sm2-sm3"}
        assert {c.key_id for c in cps} == {signer.key_id} and hash_alg() == "sm3"

        report = verify_chain()
        assert report["ok"] and report["checkpoints_checked"] == 2
        call_command("audit_verify")
        assert "2 checkpoint signature(s) verify" in capsys.readouterr().out

        call_command("audit_public_key")
        out = capsys.readouterr()
        assert out.out == public_key_text(signer) and signer.key_id in out.err and "sm2-sm3" in out.err

        lines = export_lines()
        assert verify_export(lines, load_public_keys([out.out.encode()]))["ok"]
        code, report, _ = offline(tmp_path, lines, [out.out])
        assert code == 0 and report["checkpoints_checked"] == 2, report
        code, report, _ = offline(tmp_path, lines, [], extra=["--trust-embedded-keys"])
        assert code == 0, report

        # Without gmssl the verifier stops with a clear error (exit 2), not a false "forged".
        code, report, stderr = offline(tmp_path, lines, [out.out], code=NO_DJANGO_NO_GMSSL)
        assert code == 2 and "gmssl" in report["detail"], stderr

    def test_forged_sm2_checkpoints_are_detected(self, guomi, tmp_path):
        fill(3)
        cp = AuditCheckpoint.objects.get()
        good = cp.signature
        sig = bytearray(base64.b64decode(good))
        sig[-1] ^= 0x01
        sql("UPDATE audit_auditcheckpoint SET signature = %s WHERE id = %s", [base64.b64encode(sig).decode(), cp.pk])
        report = verify_chain()
        assert not report["ok"] and report["problem"]["kind"] == "forged_checkpoint", report
        lines = export_lines()
        code, report, _ = offline(tmp_path, lines, [public_key_text(get_signer())])
        assert code == 1 and report["problem"]["kind"] == "forged_checkpoint"

        # A checkpoint re-signed with another SM2 key under the trusted key id: still forged.
        rogue = Sm2Signer(tmp_path / "rogue.json")
        record = checkpoint_record(cp)
        record["head"] = "f" * 64
        forged = base64.b64encode(rogue.sign(checkpoint_payload(record))).decode()
        sql("UPDATE audit_auditcheckpoint SET head = %s, signature = %s WHERE id = %s", ["f" * 64, forged, cp.pk])
        report = verify_chain()
        assert report["problem"]["kind"] == "forged_checkpoint"
        with pytest.raises(CommandError):
            call_command("audit_verify")

        # An SM2 signature relabelled as ECDSA does not verify with the SM2 key.
        sql(
            "UPDATE audit_auditcheckpoint SET head = %s, signature = %s, sig_alg = %s WHERE id = %s",
            [cp.head, good, "ecdsa-p256-sha256", cp.pk],
        )
        assert verify_chain()["problem"]["kind"] == "forged_checkpoint"

    def test_chain_switching_from_ecdsa_to_sm2_verifies(self, settings, tmp_path):
        ecdsa = get_signer()
        assert isinstance(ecdsa, LocalSigner)
        fill(3)
        retired = tmp_path / "retired-ecdsa.pem"
        retired.write_text(public_key_text(ecdsa))
        settings.AUDIT_TRUSTED_KEYS = [str(retired)]
        settings.ARTIFACT_SUITE = "SM4-GCM"
        get_signer.cache_clear()
        try:
            sm2 = get_signer()
            fill(2)
            fill(1)
            algs = list(AuditCheckpoint.objects.order_by("sequence").values_list("sig_alg", "key_id"))
            assert algs == [
                ("ecdsa-p256-sha256", ecdsa.key_id),
                ("sm2-sm3", sm2.key_id),
                ("sm2-sm3", sm2.key_id),
            ]
            assert hash_alg() == "sha256"  # the chain keeps the hash it was started with
            report = verify_chain()
            assert report["ok"] and report["checkpoints_checked"] == 3, report

            lines = export_lines()
            header = json.loads(lines[0])
            assert set(header["public_keys"]) == {ecdsa.key_id, sm2.key_id}
            code, report, _ = offline(tmp_path, lines, [public_key_text(ecdsa), public_key_text(sm2)])
            assert code == 0 and report["checkpoints_checked"] == 3, report
            code, report, _ = offline(tmp_path, lines, [public_key_text(sm2)])  # the old key not trusted
            assert code == 1 and report["problem"]["kind"] == "forged_checkpoint"

            settings.AUDIT_TRUSTED_KEYS = []  # the retired key forgotten: the ECDSA checkpoint no longer counts
            assert verify_chain()["problem"]["kind"] == "forged_checkpoint"
        finally:
            get_signer.cache_clear()

    def test_pkcs11_provider_in_guomi_mode_signs_with_the_local_sm2_key(self, guomi):
        guomi.KEK_PROVIDER = "pkcs11"  # no HSM is opened: SM2 never goes to the token
        get_signer.cache_clear()
        signer = get_signer()
        assert isinstance(signer, Sm2Signer) and str(signer.path) == guomi.AUDIT_SM2_SIGNING_KEY_FILE
