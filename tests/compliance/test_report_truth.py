"""Reports say only what is true: the signing key's and the KEK's real provider (a local file, or
the token's model — "software token — development only" for SoftHSM2), a development-mode banner
when the installation is not a production one or runs with insecure overrides, and every
attestation's author and expiry. Read back from the rendered PDF with pdftotext."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.roles import SECURITY_OFFICER
from apps.audit.signing import get_signer
from apps.compliance.models import Attestation
from apps.compliance.reports.data import development_mode
from inference_backend.pkcs11_kek import create_kek
from tests.compliance.test_reports import make_report, path_of, pdftotext
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

OLD_CLAIM = "held in the hardware security module"


def test_report_with_local_keys_names_the_files_and_the_development_mode(
    settings, auditor_user, django_capture_on_commit_callbacks
):
    settings.KEK_PROVIDER = "local"
    officer = make_user("tang", SECURITY_OFFICER)
    expires = timezone.now() + timedelta(days=30)
    Attestation.objects.create(
        profile="hipaa",
        control_id="164.308(a)(7)",
        file_name="drill.pdf",
        storage_name="drill",
        sha256="0" * 64,
        size_bytes=1,
        uploaded_by=officer,
        expires_at=expires,
    )
    report = make_report("hipaa", auditor_user, django_capture_on_commit_callbacks)
    text = pdftotext(path_of(report, "pdf"))

    assert OLD_CLAIM not in text and "held in a hardware cryptographic module." not in text
    assert "not held in a hardware cryptographic module" in text
    assert "local key file" in text and "audit-signing.pem" in text  # the ECDSA key file of the tests
    assert "local provider, key file" in text and "kek.bin" in text  # the local KEK file
    assert "Development mode" in text and "SOVEREIGN_ENV is not production" in text
    assert "tang" in text and expires.date().isoformat() in text  # the attestation's author and expiry

    data = json.loads(path_of(report, "json").read_text())
    assert data["signing"]["in_module"] is False and data["development_mode"]["on"] is True
    assert data["signing"]["kek"].endswith("kek.bin — not in an HSM")
    assert data["signing"]["provider"].endswith("(mode 0600) — not in a cryptographic module")
    assert data["attestations"][0]["author"] == "tang" and data["attestations"][0]["expired"] is False


def test_report_names_softhsm_as_a_software_token(
    settings, softhsm_token, auditor_user, django_capture_on_commit_callbacks
):
    create_kek(softhsm_token.module, softhsm_token.token_label, softhsm_token.pin, "sovereign-kek-v1")
    settings.KEK_PROVIDER = "pkcs11"
    settings.PKCS11 = {
        "MODULE": softhsm_token.module,
        "TOKEN": softhsm_token.token_label,
        "PIN_FILE": str(softhsm_token.pin_file),
        "KEY_LABEL": "sovereign-kek-v1",
    }
    settings.AUDIT_SIGNING_KEY_LABEL = "sovereign-audit-signing-report-test"
    get_signer.cache_clear()
    try:
        report = make_report("hipaa", auditor_user, django_capture_on_commit_callbacks)
    finally:
        get_signer.cache_clear()
    text = pdftotext(path_of(report, "pdf"))
    data = json.loads(path_of(report, "json").read_text())
    assert data["signing"]["signer"] == "Pkcs11Signer" and data["signing"]["in_module"] is False
    assert "SoftHSM v2 (SoftHSM project), software token — development only" in data["signing"]["provider"]
    assert "SoftHSM v2" in data["signing"]["kek"]
    assert "software token — development only" in text and OLD_CLAIM not in text


def test_development_mode_in_production_only_with_overrides(settings):
    settings.SOVEREIGN_ENV = "production"
    settings.DEBUG = False
    settings.KEK_PROVIDER = "local"
    settings.INSECURE_OVERRIDE = []
    assert development_mode() == {"on": False, "reasons": []}

    settings.INSECURE_OVERRIDE = ["local_kek"]
    mode = development_mode()
    assert mode["on"] is True and mode["reasons"][0].startswith("SOVEREIGN_INSECURE_OVERRIDE=local_kek:")

    settings.INSECURE_OVERRIDE = []
    settings.DEBUG = True
    assert development_mode()["reasons"] == ["DEBUG is on"]


def test_chinese_report_gives_the_development_reasons_in_chinese(
    settings, auditor_user, django_capture_on_commit_callbacks
):
    """nu18's first `make run`: the Chinese PDF's development-mode line read "SOVEREIGN_ENV is not production:
    development settings, no production start-up refusals" (the banner above every page said it in Chinese)."""
    settings.KEK_PROVIDER = "local"
    settings.DEBUG = True
    report = make_report("dengbao-l3", auditor_user, django_capture_on_commit_callbacks)
    text = pdftotext(path_of(report, "pdf"))

    assert report.language == "zh-hans"
    cover = text[text.index("开发模式") : text.index("签名")]  # the development-mode paragraph, before the keys
    assert "SOVEREIGN_ENV 不是 production" in cover and "DEBUG 已开启" in cover
    assert "no production start-up refusals" not in text and "DEBUG is on" not in cover
    data = json.loads(path_of(report, "json").read_text())  # the signed JSON keeps the English facts
    assert "DEBUG is on" in data["development_mode"]["reasons"]
