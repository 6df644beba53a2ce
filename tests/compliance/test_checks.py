"""Live checks flip with the system they inspect: turning a setting off fails the matching
control with evidence and a remedy; turning it back on passes it again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import ADMIN, AUDITOR, SECURITY_OFFICER
from apps.compliance.checks import REGISTRY, combine
from apps.compliance.models import Attestation
from apps.deployments.models import InferenceServer
from inference_backend.pkcs11_kek import create_kek
from tests.compliance.conftest import check_of, evaluate
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

KEY_LABEL = "sovereign-kek-v1"


def test_idle_timeout_off_fails_and_back_on_passes(settings):
    settings.SESSION_IDLE_TIMEOUT = timedelta(minutes=15)
    status, evidence, remedy = evaluate("hipaa", "164.312(a)(2)(iii)")
    assert status == "pass" and remedy == ""

    settings.SESSION_IDLE_TIMEOUT = timedelta(hours=8)  # effectively off
    status, evidence, remedy = evaluate("hipaa", "164.312(a)(2)(iii)")
    assert status == "fail"
    assert check_of(evidence, "settings.idle_timeout")["SESSION_IDLE_TIMEOUT_minutes"] == 480
    assert "SOVEREIGN_SESSION_IDLE_MINUTES" in remedy

    settings.SESSION_IDLE_TIMEOUT = timedelta(minutes=10)
    assert evaluate("hipaa", "164.312(a)(2)(iii)")[0] == "pass"


def test_middleware_removed_fails(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("SessionLifetimeMiddleware")]
    status, evidence, _ = evaluate("dengbao-l3", "8.1.4.1 b")
    assert status == "fail"
    assert check_of(evidence, "settings.idle_timeout")["SessionLifetimeMiddleware"] is False


def test_privileged_user_without_2fa_fails_then_passes_after_enrolment():
    officer = make_user("sofia", SECURITY_OFFICER)
    status, evidence, remedy = evaluate("hipaa", "164.312(d)")
    assert status == "fail"
    assert check_of(evidence, "access.privileged_2fa")["without_confirmed_totp"] == ["sofia"]
    assert "TOTP" in remedy

    device = TOTPDevice.objects.create(user=officer, name="phone", confirmed=False)
    assert evaluate("hipaa", "164.312(d)")[0] == "fail"  # an unconfirmed device does not count
    device.confirmed = True
    device.save()
    status, evidence, _ = evaluate("hipaa", "164.312(d)")
    assert status == "pass", evidence


@pytest.fixture
def hsm_settings(settings, softhsm_token):
    create_kek(softhsm_token.module, softhsm_token.token_label, softhsm_token.pin, KEY_LABEL)
    settings.PKCS11 = {
        "MODULE": softhsm_token.module,
        "TOKEN": softhsm_token.token_label,
        "PIN_FILE": str(softhsm_token.pin_file),
        "KEY_LABEL": KEY_LABEL,
    }
    return settings


def test_kek_in_hsm_fails_on_softhsm_and_with_a_local_file(hsm_settings, softhsm_token):
    """The real SoftHSM2 token: non-extractable KEK, but a software token — the check reads the
    token's CK_TOKEN_INFO and refuses to call it an HSM."""
    hsm_settings.KEK_PROVIDER = "pkcs11"
    status, evidence, remedy = evaluate("hipaa", "164.312(a)(2)(iv)")
    ev = check_of(evidence, "keys.kek_in_hsm")
    assert status == "fail", evidence
    assert "software token — development only" in ev["summary"]
    assert ev["keys"][KEY_LABEL] == {"present": True, "extractable": False, "sensitive": True, "token_object": True}
    info = ev["token_info"]
    assert info["manufacturer"] == "SoftHSM project" and info["model"] == "SoftHSM v2"
    assert info["serial"] and info["library"] == softhsm_token.module and info["hardware_slot"] is False
    assert "SoftHSM2 is for development" in remedy

    hsm_settings.KEK_PROVIDER = "local"
    status, evidence, remedy = evaluate("hipaa", "164.312(a)(2)(iv)")
    ev = check_of(evidence, "keys.kek_in_hsm")
    assert status == "fail" and "(a local file)" in ev["summary"]
    assert ev["KEK_PROVIDER"] == "local" and ev["local_kek_file"] == hsm_settings.LOCAL_KEK_FILE
    assert "SOVEREIGN_KEK_PROVIDER=pkcs11" in remedy


def test_kek_in_hsm_passes_only_for_a_hardware_token(hsm_settings, monkeypatch):
    """The pass branch. No hardware HSM exists on this machine, so the token-info read (and only
    it) is patched: the real SoftHSM2 token's info with its description replaced by a hardware
    token's and CKF_HW_SLOT set. The KEK attributes are still read from the real token. The fail
    branch above uses the real SoftHSM2 unpatched."""
    from apps.compliance.checks import keystore

    real = keystore.read_token_info

    def hardware(**changes):
        def read():
            return {**real(), **changes}

        return read

    hsm_settings.KEK_PROVIDER = "pkcs11"
    monkeypatch.setattr(
        keystore,
        "read_token_info",
        hardware(
            manufacturer="Example HSM Co.",
            model="EX-9000",
            slot_description="EX-9000 PCIe",
            slot_manufacturer="Example HSM Co.",
            hardware_slot=True,
        ),
    )
    status, evidence, _ = evaluate("hipaa", "164.312(a)(2)(iv)")
    assert status == "pass", evidence
    assert "EX-9000" in check_of(evidence, "keys.kek_in_hsm")["summary"]

    # a hardware-looking name on a slot without CKF_HW_SLOT is not enough
    monkeypatch.setattr(
        keystore,
        "read_token_info",
        hardware(manufacturer="Example HSM Co.", model="EX-9000", slot_description="EX", slot_manufacturer="Example"),
    )
    status, evidence, _ = evaluate("hipaa", "164.312(a)(2)(iv)")
    assert status == "fail" and "CKF_HW_SLOT" in check_of(evidence, "keys.kek_in_hsm")["summary"]

    # a hardware slot flag does not redeem a known software token (openCryptoki's swtok)
    monkeypatch.setattr(
        keystore,
        "read_token_info",
        hardware(manufacturer="IBM", model="Soft Token", slot_manufacturer="IBM", hardware_slot=True),
    )
    status, evidence, _ = evaluate("hipaa", "164.312(a)(2)(iv)")
    assert status == "fail" and "software token — development only" in check_of(evidence, "keys.kek_in_hsm")["summary"]


def test_extractable_kek_on_the_hsm_fails(hsm_settings, softhsm_token):
    import pkcs11

    label = "extractable-kek-v1"
    token = pkcs11.lib(softhsm_token.module).get_token(token_label=softhsm_token.token_label)
    try:
        session = token.open(rw=True, user_pin=softhsm_token.pin)
    except pkcs11.UserAlreadyLoggedIn:  # another test of this process holds the token's login
        session = token.open(rw=True)
    key = session.generate_key(
        pkcs11.KeyType.AES,
        256,
        label=label,
        store=True,
        template={pkcs11.Attribute.EXTRACTABLE: True, pkcs11.Attribute.SENSITIVE: False},
    )
    try:
        hsm_settings.KEK_PROVIDER = "pkcs11"
        hsm_settings.PKCS11 = {**hsm_settings.PKCS11, "KEY_LABEL": label}
        status, evidence, _ = evaluate("hipaa", "164.312(a)(2)(iv)")
        assert status == "fail"
        assert check_of(evidence, "keys.kek_in_hsm")["keys"][label]["extractable"] is True
    finally:
        key.destroy()
        session.close()


def test_tls_settings_and_remote_triton(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    InferenceServer.objects.create(name="local", http_url="http://127.0.0.1:8000")
    assert evaluate("hipaa", "164.312(e)(1),(e)(2)(i),(ii)")[0] == "pass"

    remote = InferenceServer.objects.create(name="gpu-1", http_url="http://triton-1:8000")
    status, evidence, remedy = evaluate("hipaa", "164.312(e)(1),(e)(2)(i),(ii)")
    assert status == "fail"
    assert check_of(evidence, "deployments.remote_tls")["remote_without_tls"] == ["gpu-1 (http://triton-1:8000)"]
    remote.http_url = "https://triton-1:8443"
    remote.save()
    assert evaluate("hipaa", "164.312(e)(1),(e)(2)(i),(ii)")[0] == "pass"

    settings.SESSION_COOKIE_SECURE = False
    status, evidence, _ = evaluate("hipaa", "164.312(e)(1),(e)(2)(i),(ii)")
    assert status == "fail" and "SESSION_COOKIE_SECURE" in check_of(evidence, "settings.tls")["summary"]


def test_role_conflict_default_password_and_dormant_account(settings):
    assert evaluate("dengbao-l3", "8.1.5.1-3")[0] in ("pass", "fail")
    both = make_user("mallory", ADMIN)
    from django.contrib.auth.models import Group

    both.groups.add(Group.objects.get(name=AUDITOR))
    status, evidence, _ = evaluate("dengbao-l3", "8.1.5.1-3")
    assert status == "fail"
    assert check_of(evidence, "accounts.role_separation")["users_holding_two"] == ["mallory"]

    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("admin", "a@example.org", "admin")
    status, evidence, _ = evaluate("dengbao-l3", "8.1.4.2 a-f")
    assert status == "fail"
    assert check_of(evidence, "accounts.no_default_credentials")["default_credentials"] == ["admin"]
    admin.set_password("a-long-unguessable-passphrase-42")
    admin.save()
    _, evidence, _ = evaluate("dengbao-l3", "8.1.4.2 a-f")
    assert check_of(evidence, "accounts.no_default_credentials")["status"] == "pass"

    old = make_user("sleepy")
    old.date_joined = old.date_joined - timedelta(days=400)
    old.save()
    _, evidence, _ = evaluate("dengbao-l3", "8.1.4.2 a-f")
    assert "sleepy" in check_of(evidence, "accounts.dormant")["dormant_active_accounts"]


def test_manual_control_needs_an_unexpired_attestation():
    from django.utils import timezone

    # 8.1.4.9 also has automated backup checks (tests/compliance/test_backup.py): this test reads
    # the attestation's own result.
    def attestation():
        status, evidence, remedy = evaluate("dengbao-l3", "8.1.4.9")
        return check_of(evidence, "manual.attestation"), remedy

    check, _ = attestation()
    assert check["status"] == "manual" and "attestation" in check["summary"]
    att = Attestation.objects.create(
        profile="dengbao-l3",
        control_id="8.1.4.9",
        file_name="drill.pdf",
        storage_name="x",
        sha256="0" * 64,
        size_bytes=1,
        expires_at=timezone.now() + timedelta(days=30),
    )
    assert attestation()[0]["status"] == "pass"
    att.expires_at = timezone.now() - timedelta(days=1)
    att.save()
    check, remedy = attestation()
    assert check["status"] == "fail" and "new attestation" in remedy


def test_a_check_that_crashes_is_a_failure_not_a_pass(monkeypatch):
    from apps.compliance.checks import Context, run_check

    def crashes(ctx):
        raise ConnectionError("HSM unreachable")

    monkeypatch.setitem(REGISTRY, "test.crashes", crashes)
    result = run_check("test.crashes", Context(profile="hipaa"))
    assert result.status == "fail"
    assert result.evidence == {"error": "HSM unreachable"}
    assert "could not run: ConnectionError" in result.summary


def test_combine_and_registry():
    assert combine(["pass", "fail", "manual"]) == "fail"
    assert combine(["pass", "manual"]) == "manual"
    assert combine(["not_applicable", "pass"]) == "pass"
    assert combine(["not_applicable"]) == "not_applicable"
    assert "keys.kek_in_hsm" in REGISTRY and "manual.attestation" in REGISTRY
