"""Checkpoints signed by a P-256 key pair held in the HSM (SoftHSM2 through PKCS#11)."""

from __future__ import annotations

import pkcs11
import pytest

from apps.audit.models import AuditCheckpoint
from apps.audit.offline_verify import key_id_of
from apps.audit.signing import Pkcs11Signer, get_signer
from apps.audit.verify import verify_chain
from tests.audit.chain_helpers import fill

pytestmark = pytest.mark.django_db


@pytest.fixture
def hsm_settings(settings, softhsm_token):
    settings.KEK_PROVIDER = "pkcs11"
    settings.PKCS11 = {
        "MODULE": softhsm_token.module,
        "TOKEN": softhsm_token.token_label,
        "PIN_FILE": str(softhsm_token.pin_file),
        "KEY_LABEL": "",
    }
    settings.AUDIT_SIGNING_KEY_LABEL = "sovereign-audit-signing-test"
    get_signer.cache_clear()
    yield softhsm_token
    get_signer.cache_clear()


def test_checkpoints_are_signed_in_the_hsm(hsm_settings):
    signer = get_signer()
    assert isinstance(signer, Pkcs11Signer)

    fill(3)

    cp = AuditCheckpoint.objects.get()
    assert cp.key_id == signer.key_id == key_id_of(signer.public_key())
    report = verify_chain()
    assert report["ok"] and report["checkpoints_checked"] == 1


def test_the_private_key_never_leaves_the_hsm(hsm_settings):
    signer = get_signer()
    private = signer._private

    assert private[pkcs11.Attribute.SENSITIVE] and not private[pkcs11.Attribute.EXTRACTABLE]
    # A second signer (another process, a restart) finds the same key pair instead of a new one.
    again = Pkcs11Signer(
        hsm_settings.module, hsm_settings.token_label, hsm_settings.pin, "sovereign-audit-signing-test"
    )
    assert again.key_id == signer.key_id
