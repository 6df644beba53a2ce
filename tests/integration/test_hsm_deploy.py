"""Issue 4 path on real components: the portal wraps data keys with a KEK inside SoftHSM2; a
Triton host configured with the same HSM unwraps them there and serves the model; a Triton host
without HSM access refuses to load it, saying why."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from django.contrib.auth import get_user_model

from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Observed
from apps.keys.providers import get_kek_provider
from apps.registry.services import register_model_version
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from inference_backend.pkcs11_kek import create_kek
from inference_backend.server import LocalTritonServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
KEY_LABEL = "sovereign-kek-v1"


@pytest.fixture(scope="module")
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
def portal_uses_hsm(settings, softhsm_token):
    settings.KEK_PROVIDER = "pkcs11"
    settings.PKCS11 = {
        "MODULE": softhsm_token.module,
        "TOKEN": softhsm_token.token_label,
        "PIN_FILE": str(softhsm_token.pin_file),
        "KEY_LABEL": KEY_LABEL,
    }
    get_kek_provider.cache_clear()
    yield
    get_kek_provider.cache_clear()


def _deploy(name: str, plaintext: bytes, server_url: str, server_name: str) -> Deployment:
    admin = get_user_model().objects.create_superuser(f"root-{server_name}", "r@example.org", "x" * 16)
    mv = register_model_version(model_name=name, data=plaintext, actor=admin)
    assert mv.artifact.kek_id == f"pkcs11:sovereign-test:{KEY_LABEL}"
    server = deployments.register_server(name=server_name, http_url=server_url, actor=admin)
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=admin)
    deployments.reconcile_deployment(dep.pk)  # synchronously: the worker is not needed here
    return Deployment.objects.get(pk=dep.pk)


def test_hsm_wrapped_model_serves_on_a_host_with_the_hsm(portal_uses_hsm, hsm_triton):
    plaintext = build_test_onnx(4, 3, seed=31)
    dep = _deploy("hsm-model", plaintext, hsm_triton.http_url, "triton-with-hsm")
    assert dep.observed_state == Observed.ACTIVE, dep.last_error

    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    answer = TritonClient(hsm_triton.http_url).infer_json(
        "hsm-model", [{"name": "INPUT", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]
    )
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, ort.InferenceSession(plaintext).run(None, {"INPUT": x})[0], rtol=1e-5, atol=1e-6)


def test_host_without_hsm_access_refuses_to_load(portal_uses_hsm, triton):
    dep = _deploy("hsm-only-model", build_test_onnx(4, 3, seed=32), triton.http_url, "triton-without-hsm")

    assert dep.observed_state == Observed.FAILED
    assert "cannot unwrap data key on this Triton host" in dep.last_error
    assert f"pkcs11:sovereign-test:{KEY_LABEL}" in dep.last_error
