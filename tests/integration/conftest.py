"""Real components for integration tests: a Triton host on the HSM, sharing this session's data
directory (the dev KEK and the encrypted artifacts). The plain tritonservers (`triton`, `triton_b`)
and the Celery worker (`celery_worker`) are in tests/conftest.py, for the e2e and gateway tests too."""

from __future__ import annotations

import pytest

from apps.keys.providers import get_kek_provider
from inference_backend.pkcs11_kek import create_kek
from inference_backend.server import LocalTritonServer, free_port

KEY_LABEL = "sovereign-kek-v1"


@pytest.fixture(scope="session")
def hsm_triton(softhsm_token, tmp_path_factory):
    """A Triton host whose python backend reaches the HSM (its own settings, PIN from a file)."""
    create_kek(softhsm_token.module, softhsm_token.token_label, softhsm_token.pin, KEY_LABEL)
    server = LocalTritonServer(
        tmp_path_factory.mktemp("triton-hsm"),
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        extra_env={
            "SOFTHSM2_CONF": str(softhsm_token.conf),
            "SOVEREIGN_KEK_PROVIDER": "pkcs11",
            "SOVEREIGN_PKCS11_MODULE": softhsm_token.module,
            "SOVEREIGN_PKCS11_TOKEN": softhsm_token.token_label,
            "SOVEREIGN_PKCS11_PIN_FILE": str(softhsm_token.pin_file),
            "SOVEREIGN_PKCS11_KEY_LABEL": KEY_LABEL,
        },
    )
    server.start(timeout=180)
    yield server
    server.stop()


@pytest.fixture
def portal_uses_hsm(settings, softhsm_token, tmp_path):
    settings.KEK_PROVIDER = "pkcs11"
    # Its own pseudonymisation key: the session's was wrapped by the local keystore's KEK.
    settings.PSEUDONYM_KEY_FILE = str(tmp_path / "pseudonym-key.json")
    settings.PKCS11 = {
        "MODULE": softhsm_token.module,
        "TOKEN": softhsm_token.token_label,
        "PIN_FILE": str(softhsm_token.pin_file),
        "KEY_LABEL": KEY_LABEL,
    }
    get_kek_provider.cache_clear()
    yield
    get_kek_provider.cache_clear()
