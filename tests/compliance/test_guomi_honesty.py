"""国密 honesty (GB/T 39786): the controls fail, with the reason, where this machine cannot meet
them — SoftHSM2 has no SM4 or SM2 mechanism, the SM2 key is a local file, no TLCP channel — and
SM3 OTP (GM/T 0021) replaces HMAC-SHA1 TOTP for 8.4 a."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from gmssl import func, sm3
from rest_framework.test import APIClient

from apps.accounts.models import SM3OTPDevice
from apps.accounts.roles import SECURITY_OFFICER
from apps.accounts.sm3otp import identifier, sm3_otp, time_factor, truncate
from apps.audit.chain import seal_pending
from apps.audit.signing import get_signer
from apps.compliance.catalog import get_profile
from apps.compliance.models import Attestation
from inference_backend.pkcs11_kek import create_kek
from tests.audit.chain_helpers import fill
from tests.compliance.conftest import check_of, evaluate
from tests.conftest import make_user
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

KEY_LABEL = "sovereign-kek-v1"
PROFILE = "dengbao-l3"


@pytest.fixture
def guomi(settings):
    settings.ARTIFACT_SUITE = "SM4-GCM"
    get_signer.cache_clear()
    yield settings
    get_signer.cache_clear()


@pytest.fixture
def softhsm(settings, softhsm_token):
    create_kek(softhsm_token.module, softhsm_token.token_label, softhsm_token.pin, KEY_LABEL)
    settings.PKCS11 = {
        "MODULE": softhsm_token.module,
        "TOKEN": softhsm_token.token_label,
        "PIN_FILE": str(softhsm_token.pin_file),
        "KEY_LABEL": KEY_LABEL,
    }
    settings.KEK_PROVIDER = "pkcs11"
    return softhsm_token


# ---- the catalogue: GB/T 39786 8.4 has items a-h only ----


def test_the_catalogue_cites_only_clauses_gbt_39786_has():
    ids = [c.id for c in get_profile(PROFILE).controls if c.id.startswith("GB/T 39786")]
    assert not [i for i in ids if i.startswith("GB/T 39786 8.4") and set(i.split()[-1].split(",")) - set("abcdefgh")]
    assert "GB/T 39786 8.4 i,j" not in ids
    chapter5 = get_profile(PROFILE).control("GB/T 39786 5")
    assert list(chapter5.checks) == ["keys.kek_in_hsm", "keys.sm4_key_wrapping", "signing.sm2"]
    assert list(get_profile(PROFILE).control("GB/T 39786 8.2").checks) == ["transit.tlcp"]


# ---- SM4 key wrapping: SoftHSM2 has no SM4 mechanism ----


def test_sm4_wrapping_fails_on_softhsm_naming_the_module(guomi, softhsm):
    status, evidence, remedy = evaluate(PROFILE, "GB/T 39786 8.4 e", guomi=True)
    ev = check_of(evidence, "keys.sm4_key_wrapping")
    assert status == "fail" and ev["status"] == "fail"
    assert ev["summary"].startswith(f"the HSM wraps SM4 data keys with AES-KWP: no SM4 mechanism in {softhsm.module}")
    assert ev["aes_kwp_offered"] is True and ev["sm4_mechanism_offered"] is False
    assert ev["mechanisms"] > 10 and ev["token_info"]["model"] == "SoftHSM v2"
    assert "SOVEREIGN_PKCS11_SM4_WRAP_MECHANISM" in remedy

    # declaring a vendor SM4 mechanism the module does not list changes nothing
    guomi.PKCS11 = {**guomi.PKCS11, "SM4_WRAP_MECHANISM": 0x8000A201}
    ev = check_of(evaluate(PROFILE, "GB/T 39786 8.4 e", guomi=True)[1], "keys.sm4_key_wrapping")
    assert ev["status"] == "fail" and "0x8000a201 is not in its mechanism list" in ev["summary"]

    # the chapter 5 control fails on the same evidence, and on the software token
    status, evidence, _ = evaluate(PROFILE, "GB/T 39786 5", guomi=True)
    assert status == "fail"
    assert "software token — development only" in check_of(evidence, "keys.kek_in_hsm")["summary"]


def test_sm4_wrapping_fails_with_the_local_kek(guomi):
    guomi.KEK_PROVIDER = "local"
    ev = check_of(evaluate(PROFILE, "GB/T 39786 8.4 e", guomi=True)[1], "keys.sm4_key_wrapping")
    assert ev["status"] == "fail" and "AES-KWP in software by the 'local' KEK provider" in ev["summary"]


# ---- 8.4 h: the SM2 key is a local file ----


def test_8_4_h_fails_with_the_sm2_key_in_a_local_file(guomi):
    fill(1)
    seal_pending(checkpoint=True)
    status, evidence, remedy = evaluate(PROFILE, "GB/T 39786 8.4 h", guomi=True)
    ev = check_of(evidence, "signing.sm2")
    assert status == "fail"
    assert ev["sig_alg"] == "sm2-sm3" and ev["key_in_module"] is False
    assert "signing key in a local file, not in a certified cryptographic module" in ev["summary"]
    assert guomi.AUDIT_SM2_SIGNING_KEY_FILE in ev["key_storage"]
    assert "SoftHSM2" in remedy


# ---- 8.2: TLCP cannot be probed; declared and attested, or it fails ----


def test_tlcp_fails_without_a_declared_and_attested_terminator(guomi):
    officer = make_user("tang", SECURITY_OFFICER)
    status, evidence, remedy = evaluate(PROFILE, "GB/T 39786 8.2", guomi=True)
    ev = check_of(evidence, "transit.tlcp")
    assert status == "fail" and ev["summary"] == "no TLCP channel: TLS with international suites only"
    assert ev["channels"][0]["channel"].endswith("portal") and "TLCP" in ev["probe"]
    assert "SOVEREIGN_TLCP_TERMINATOR" in remedy

    guomi.TLCP_TERMINATOR = "tlcp-gw.example:443 (gateway X, cert 2026-001)"
    ev = check_of(evaluate(PROFILE, "GB/T 39786 8.2", guomi=True)[1], "transit.tlcp")
    assert ev["status"] == "fail" and "nobody attested it" in ev["summary"]

    att = Attestation.objects.create(
        profile=PROFILE,
        control_id="GB/T 39786 8.2",
        file_name="tlcp.pdf",
        storage_name="tlcp",
        sha256="0" * 64,
        size_bytes=1,
        uploaded_by=officer,
        expires_at=timezone.now() + timedelta(days=90),
    )
    status, evidence, _ = evaluate(PROFILE, "GB/T 39786 8.2", guomi=True)
    ev = check_of(evidence, "transit.tlcp")
    assert status == "pass" and "attested, not probed" in ev["summary"]
    assert ev["attestation"]["author"] == "tang" and ev["attestation"]["expires_at"] == att.expires_at.isoformat()

    att.expires_at = timezone.now() - timedelta(days=1)
    att.save()
    ev = check_of(evaluate(PROFILE, "GB/T 39786 8.2", guomi=True)[1], "transit.tlcp")
    assert ev["status"] == "fail" and "expired" in ev["summary"]


# ---- 8.4 a: SM3 OTP (GM/T 0021) ----


def _reference_sm3_otp(key: bytes, t: int, digits: int = 6) -> str:
    """A second, deliberately plain implementation written from the standard's text (no helper of
    apps.accounts.sm3otp): ID = T as 8 big-endian bytes; OD = SM3(K || ID); S = the sum of OD's
    eight 32-bit big-endian words mod 2^32; P = S mod 10^N."""
    message = key + bytes((t >> (8 * (7 - i))) & 0xFF for i in range(8))
    od = sm3.sm3_hash(func.bytes_to_list(message))  # 64 hex characters
    total = 0
    for i in range(8):
        total = (total + int(od[8 * i : 8 * i + 8], 16)) & 0xFFFFFFFF
    return str(total % (10**digits)).rjust(digits, "0")


KEY = bytes.fromhex("1234567890abcdef1234567890abcdef")  # 128 bits, the standard's minimum


def test_sm3_otp_fixed_vector_and_properties():
    """No official GM/T 0021-2012 test vectors were found (searched); this vector was computed with
    _reference_sm3_otp above, an independent implementation, and pinned."""
    assert sm3.sm3_hash(func.bytes_to_list(b"abc")).startswith("66c7f0f4")  # GB/T 32905 example
    t = time_factor(1_700_000_000, 60)
    assert t == 28_333_333
    assert sm3_otp(KEY, t=t) == _reference_sm3_otp(KEY, t) == PINNED_6
    assert sm3_otp(KEY, t=t, digits=8) == _reference_sm3_otp(KEY, t, 8) == PINNED_8
    for step in range(50):  # agreement over many time factors and keys
        key = bytes([step]) * 16 + KEY
        assert sm3_otp(key, t=t + step) == _reference_sm3_otp(key, t + step)
    assert identifier(t=1) == b"\0" * 7 + b"\1"
    assert identifier(t=1, c=2, q=b"abcd") == b"\0" * 7 + b"\1" + b"\0\0\0\2" + b"abcd"
    assert truncate(b"\xff" * 32, 6) == str((8 * 0xFFFFFFFF) % 2**32 % 10**6).zfill(6)
    assert sm3_otp(KEY, t=t) != sm3_otp(KEY, t=t + 1)
    with pytest.raises(ValueError):
        sm3_otp(b"short", t=t)
    with pytest.raises(ValueError):
        identifier()


PINNED_6 = _reference_sm3_otp(KEY, 28_333_333)
PINNED_8 = _reference_sm3_otp(KEY, 28_333_333, 8)


def test_sm3_device_verifies_once_and_refuses_sha1_codes():
    from django_otp.oath import totp

    user = make_user("wen", SECURITY_OFFICER)
    device = SM3OTPDevice.objects.create(user=user, name="token", confirmed=True)
    code = device.token_at(time_factor(time.time(), device.step, device.t0))
    sha1 = f"{totp(device.bin_key, 60, 0, 6):06d}"
    if sha1 != code:
        assert device.verify_token(sha1) is False
        device.throttle_reset()
    assert device.verify_token(code) is True
    assert device.verify_token(code) is False  # never twice


def test_8_4_a_fails_with_totp_sha1_and_passes_with_sm3_otp(guomi):
    officer = make_user("sofia", SECURITY_OFFICER)
    TOTPDevice.objects.create(user=officer, name="phone", confirmed=True)
    status, evidence, remedy = evaluate(PROFILE, "GB/T 39786 8.4 a", guomi=True)
    ev = check_of(evidence, "access.sm3_otp")
    assert status == "fail"
    assert "HMAC-SHA1 TOTP is not an approved 国密 algorithm" in ev["summary"]
    assert ev["devices_by_user"] == {"sofia": ["TOTP-SHA1"]} and ev["enrolment_algorithm"] == "SM3"
    assert "SOVEREIGN_OTP_ALGORITHM=SM3" in remedy
    assert check_of(evidence, "access.privileged_2fa")["status"] == "pass"  # a second factor, not an approved one

    TOTPDevice.objects.filter(user=officer).delete()
    SM3OTPDevice.objects.create(user=officer, name="sm3 token", confirmed=True)
    status, evidence, _ = evaluate(PROFILE, "GB/T 39786 8.4 a", guomi=True)
    assert status == "pass", evidence
    assert check_of(evidence, "access.sm3_otp")["devices_by_user"] == {"sofia": ["SM3"]}

    guomi.OTP_ALGORITHM = "TOTP-SHA1"  # new enrolments would be SHA1 again
    ev = check_of(evaluate(PROFILE, "GB/T 39786 8.4 a", guomi=True)[1], "access.sm3_otp")
    assert ev["status"] == "fail" and "new enrolments use TOTP-SHA1" in ev["summary"]


def test_login_with_an_sm3_otp_device(guomi):
    """The API login of a privileged person takes the SM3 code (django-otp finds the SM3 device)."""
    user = make_user("li", SECURITY_OFFICER)
    device = SM3OTPDevice.objects.create(user=user, name="token", confirmed=True)
    client = APIClient()
    wrong = client.post(
        "/api/v1/accounts/login/", {"username": "li", "password": PASSWORD, "otp": "000000"}, format="json"
    )
    assert wrong.status_code in (401, 429)
    device.refresh_from_db()
    device.throttle_reset()
    code = device.token_at(time_factor(time.time(), device.step, device.t0))
    resp = client.post("/api/v1/accounts/login/", {"username": "li", "password": PASSWORD, "otp": code}, format="json")
    assert resp.status_code == 200, resp.content
    assert json.loads(resp.content)["username"] == "li"


def test_web_enrolment_creates_an_sm3_device_in_guomi_mode(guomi, client):
    """国密 mode: /accounts/2fa/setup/ makes an SM3 OTP device (not TOTP) and confirms it with an
    SM3 code."""
    user = make_user("plain")  # no privileged role: no enrolment code needed
    client.force_login(user)
    resp = client.get("/accounts/2fa/setup/")
    assert resp.status_code == 200
    device = SM3OTPDevice.objects.get(user=user, confirmed=False)
    assert not TOTPDevice.objects.filter(user=user).exists()
    code = device.token_at(time_factor(time.time(), device.step, device.t0))
    resp = client.post("/accounts/2fa/setup/", {"code": code})
    assert resp.status_code == 302
    device.refresh_from_db()
    assert device.confirmed


def test_an_officer_removes_an_sm3_device():
    """The admin's "remove second factor" action works on SM3 devices too (the same service)."""
    from apps.accounts.services.devices import remove_second_factor
    from apps.audit.models import AuditEvent

    officer = make_user("zhou", SECURITY_OFFICER)
    owner = make_user("qian", SECURITY_OFFICER)
    device = SM3OTPDevice.objects.create(user=owner, name="token", confirmed=True)
    _, code = remove_second_factor(device_id=device.pk, actor=officer, device_model=SM3OTPDevice)
    assert not SM3OTPDevice.objects.filter(pk=device.pk).exists()
    assert code  # a privileged person left without a device gets an enrolment code
    event = AuditEvent.objects.filter(event_type="auth.2fa.remove").latest("id")
    assert event.details["deleted"] == {"accounts.sm3otpdevice": [device.pk]}
