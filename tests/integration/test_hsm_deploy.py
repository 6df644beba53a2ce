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
from apps.registry.services import register_model_version
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from tests.integration.conftest import KEY_LABEL

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _deploy(name: str, plaintext: bytes, server_url: str, server_name: str) -> Deployment:
    admin = get_user_model().objects.create_superuser(f"root-{server_name}", "r@example.org", "x" * 16)
    mv = register_model_version(model_name=name, data=plaintext, actor=admin)
    # The configured label's family; a later version if a rotation test retired v1 meanwhile.
    assert mv.artifact.kek_id.startswith(f"pkcs11:sovereign-test:{KEY_LABEL.removesuffix('1')}")
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
        "hsm-model--v1", [{"name": "INPUT", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]
    )
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(got, ort.InferenceSession(plaintext).run(None, {"INPUT": x})[0], rtol=1e-5, atol=1e-6)


def test_host_without_hsm_access_refuses_to_load(portal_uses_hsm, triton):
    dep = _deploy("hsm-only-model", build_test_onnx(4, 3, seed=32), triton.http_url, "triton-without-hsm")

    assert dep.observed_state == Observed.FAILED
    assert "cannot unwrap data key on this Triton host" in dep.last_error
    assert dep.model_version.artifact.kek_id in dep.last_error
