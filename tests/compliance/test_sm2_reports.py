"""国密 mode: compliance reports are signed with SM2 (statement alg SM2-SM3, SM3 file digest),
`verify_report` verifies them and any changed byte breaks them; GB/T 39786 8.4 h fails with ECDSA,
and with SM2 too while the SM2 key is a local file (not in a cryptographic module)."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from apps.audit.chain import seal_pending
from apps.audit.signing import get_signer
from apps.compliance.reports.signing import sign_bytes, verify_bytes
from tests.audit.chain_helpers import fill
from tests.compliance.conftest import check_of, evaluate
from tests.compliance.test_reports import make_report, path_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def guomi(settings):
    settings.ARTIFACT_SUITE = "SM4-GCM"
    get_signer.cache_clear()
    yield settings
    get_signer.cache_clear()


def test_guomi_report_is_sm2_signed_and_one_byte_breaks_it(
    guomi, auditor_user, django_capture_on_commit_callbacks, tmp_path, capsys
):
    report = make_report("dengbao-l3", auditor_user, django_capture_on_commit_callbacks, guomi=True)
    signer = get_signer()
    assert report.key_id == signer.key_id and report.key_id.startswith("sm2:")
    for fmt in ("pdf", "csv", "json"):
        data, sig = path_of(report, fmt), path_of(report, f"{fmt}.sig")
        statement = json.loads(sig.read_text())["statement"]
        assert statement["alg"] == "SM2-SM3" and "sm3" in statement and "sha256" not in statement
        call_command("verify_report", str(data), str(sig))
        assert f"signed by key {report.key_id}" in capsys.readouterr().out

    pdf, sig = path_of(report, "pdf"), path_of(report, "pdf.sig")
    data = bytearray(pdf.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="SM3 differs.*report altered"):
        call_command("verify_report", str(tampered), str(sig))

    forged = json.loads(sig.read_text())
    forged["statement"]["sm3"] = "0" * 64
    (tmp_path / "forged.sig").write_text(json.dumps(forged))
    with pytest.raises(CommandError, match="signature file altered"):
        call_command("verify_report", str(pdf), str(tmp_path / "forged.sig"))

    relabelled = json.loads(sig.read_text())  # the SM2 signature presented as ECDSA
    relabelled["statement"]["alg"] = "ECDSA-P256-SHA256"
    (tmp_path / "relabelled.sig").write_text(json.dumps(relabelled))
    with pytest.raises(CommandError, match="NOT VERIFIED"):
        call_command("verify_report", str(pdf), str(tmp_path / "relabelled.sig"))

    # The report's 8.4 h row fails: SM2 is in use, but its key is a local file.
    rows = {c["id"]: c for c in json.loads(path_of(report, "json").read_text())["controls"]}
    assert rows["GB/T 39786 8.4 h"]["status"] == "fail", rows["GB/T 39786 8.4 h"]


def test_ecdsa_reports_still_verify_after_the_switch(settings, tmp_path):
    ecdsa_sig = sign_bytes(b"old report", "old.json")
    assert ecdsa_sig["statement"]["alg"] == "ECDSA-P256-SHA256"
    retired = tmp_path / "retired.pem"
    retired.write_text(ecdsa_sig["public_key"])
    settings.AUDIT_TRUSTED_KEYS = [str(retired)]
    settings.ARTIFACT_SUITE = "SM4-GCM"
    get_signer.cache_clear()
    try:
        from apps.audit.signing import trusted_public_keys

        sm2_sig = sign_bytes(b"new report", "new.json")
        trusted = trusted_public_keys()
        assert verify_bytes(b"old report", ecdsa_sig, trusted) == ecdsa_sig["statement"]["key_id"]
        assert verify_bytes(b"new report", sm2_sig, trusted) == sm2_sig["statement"]["key_id"]
    finally:
        get_signer.cache_clear()


def test_8_4_h_fails_with_ecdsa_and_with_a_local_sm2_key(settings):
    fill(2)
    status, evidence, remedy = evaluate("dengbao-l3", "GB/T 39786 8.4 h", guomi=True)
    assert status == "fail" and "SOVEREIGN_ARTIFACT_SUITE=SM4-GCM" in remedy
    assert check_of(evidence, "signing.sm2")["sig_alg"] == "ecdsa-p256-sha256"

    settings.ARTIFACT_SUITE = "SM4-GCM"
    get_signer.cache_clear()
    try:
        fill(1)
        seal_pending(checkpoint=True)
        status, evidence, _ = evaluate("dengbao-l3", "GB/T 39786 8.4 h", guomi=True)
        ev = check_of(evidence, "signing.sm2")
        assert status == "fail", evidence
        assert "signing key in a local file, not in a certified cryptographic module" in ev["summary"]
        assert ev["sig_alg"] == "sm2-sm3" and ev["key_id"] == get_signer().key_id
        assert ev["last_checkpoint"]["sig_alg"] == "sm2-sm3"
        assert ev["checkpoints_by_sig_alg"] == {"ecdsa-p256-sha256": 1, "sm2-sm3": 1}
        assert "SM2" in ev["algorithm"] and "0600" in ev["key_storage"]
    finally:
        get_signer.cache_clear()
