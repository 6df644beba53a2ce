"""Artifacts whose data key lives in keys.DataKey load on a real Triton in both file formats: a
version 1 (one-shot envelope) artifact stored the way migration registry 0005 leaves an old row,
and a version 2 (segmented stream) upload; both again after a KEK rotation re-wrapped their keys
(the ciphertext untouched)."""

from __future__ import annotations

import uuid

import numpy as np
import onnxruntime as ort
import pytest
from django.conf import settings

from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Observed
from apps.keys import services as keys
from apps.keys.models import DataKey
from apps.keys.providers import get_kek_provider
from apps.registry.models import Artifact, Model, ModelVersion
from apps.registry.services import register_model_version
from inference_backend import envelope
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from inference_backend.signature import read_onnx_signature

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _v1_artifact(name: str, plaintext: bytes) -> ModelVersion:
    """A format-1 file and its key as an old upload left them, after the data key migration."""
    kek = keys.active_kek()
    storage_name = f"{uuid.uuid4().hex}.enc"
    aad = f"sovereign:artifact:{storage_name}:{name}:1"
    dek = envelope.generate_dek()
    ciphertext = envelope.encrypt_artifact(plaintext, dek, aad.encode())
    assert ciphertext[:5] == b"SVRN\x01"
    settings.ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    (settings.ARTIFACT_DIR / storage_name).write_bytes(ciphertext)
    key = DataKey.objects.create(
        purpose="artifact", suite="AES-256-GCM", kek_id=kek.kek_id, wrapped=get_kek_provider().wrap(dek, kek.kek_id)
    )
    mv = ModelVersion.objects.create(
        model=Model.objects.create(name=name),
        version=1,
        sha256=envelope.sha256_hex(plaintext),
        size_bytes=len(plaintext),
        signature=read_onnx_signature(plaintext),
    )
    Artifact.objects.create(
        version=mv,
        data_key=key,
        storage_name=storage_name,
        aad=aad,
        ciphertext_sha256=envelope.sha256_hex(ciphertext),
        ciphertext_bytes=len(ciphertext),
    )
    return mv


def _serve(mv: ModelVersion, server) -> Deployment:
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=None)
    deployments.reconcile_deployment(dep.pk)  # synchronously: no worker needed
    return Deployment.objects.get(pk=dep.pk)


def _answers_like_onnxruntime(url: str, name: str, plaintext: bytes) -> None:
    x = np.random.default_rng(7).normal(size=(2, 4)).astype(np.float32)
    answer = TritonClient(url).infer_json(
        name, [{"name": "INPUT", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]
    )
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    expected = ort.InferenceSession(plaintext).run(None, {"INPUT": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_v1_and_v2_artifacts_load_before_and_after_a_rotation(triton):
    v1_plain, v2_plain = build_test_onnx(4, 3, seed=61), build_test_onnx(4, 3, seed=62)
    v1 = _v1_artifact("dk-format-1", v1_plain)
    v2 = register_model_version(model_name="dk-format-2", data=v2_plain, actor=None)
    assert v2.artifact.path.read_bytes()[:5] == b"SVRN\x02"
    files = {mv.pk: mv.artifact.path.read_bytes() for mv in (v1, v2)}
    server = deployments.register_server(name="triton-dk", http_url=triton.http_url, actor=None)

    for mv, plain in ((v1, v1_plain), (v2, v2_plain)):
        dep = _serve(mv, server)
        assert dep.observed_state == Observed.ACTIVE, dep.last_error
        _answers_like_onnxruntime(triton.http_url, f"{mv.model.name}--v{mv.version}", plain)

    old = keys.active_kek()
    rotation = keys.start_rotation(actor=None, reason="data key formats")
    assert keys.run_rotation(rotation.pk).state == "done"
    assert set(DataKey.objects.live().values_list("kek_id", flat=True)) == {rotation.to_kek.kek_id} != {old.kek_id}

    # Loaded again (as a second server entry for the same Triton) with the re-wrapped keys.
    again = deployments.register_server(name="triton-dk-again", http_url=triton.http_url, actor=None)
    for mv, plain in ((v1, v1_plain), (v2, v2_plain)):
        mv.refresh_from_db()
        assert mv.artifact.path.read_bytes() == files[mv.pk]  # the ciphertext was not rewritten
        dep = _serve(mv, again)
        assert dep.observed_state == Observed.ACTIVE, dep.last_error
        _answers_like_onnxruntime(triton.http_url, f"{mv.model.name}--v{mv.version}", plain)
