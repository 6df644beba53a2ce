"""Versioned KServe URLs through the gateway on a real tritonserver: the version asked for is the
version that answers, or the call is refused; never another version's answer."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from apps.audit.models import AuditEvent
from apps.deployments import services as deployments
from apps.deployments.models import Observed
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from tests.conftest import grant
from tests.factories import InferenceServerFactory, ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

NAME = "versioned"
INPUT = [0.5, 1.0, -0.5, 2.0]
BODY = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": INPUT}]})
MODELS = {1: build_test_onnx(4, 3, seed=101), 2: build_test_onnx(4, 3, seed=202)}  # different weights


def _reference(onnx: bytes) -> np.ndarray:
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return session.run(None, {"INPUT": np.array([INPUT], dtype=np.float32)})[0].ravel()


@pytest.fixture
def versions(staff_user, plain_user, triton):
    """Versions 1 and 2 of one model (their outputs differ), the caller granted `invoke_model`;
    the model is unloaded from Triton afterwards."""
    mvs = {v: ModelVersionFactory(model_name=NAME, data=data, actor=staff_user) for v, data in MODELS.items()}
    assert [mv.version for mv in mvs.values()] == [1, 2]
    assert not np.allclose(_reference(MODELS[1]), _reference(MODELS[2]))
    grant(plain_user, mvs[1].model)
    yield mvs
    with TritonClient(triton.http_url) as client:
        client.unload_model(NAME)


@pytest.fixture
def caller(plain_user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")


def _serve(mv, server, staff_user):
    """Deploy `mv` on `server` and reconcile it here, synchronously, onto the real Triton."""
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=staff_user)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    return dep


def _infer(caller: Client, version: int):
    return caller.post(f"/v2/models/{NAME}/versions/{version}/infer", data=BODY, content_type="application/json")


def test_version_url_is_answered_by_the_version_asked_for(caller, versions, triton, staff_user):
    _serve(versions[2], InferenceServerFactory(http_url=triton.http_url), staff_user)

    resp = _infer(caller, 2)

    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["model_version"] == "2"  # Triton's own word for the version that ran
    np.testing.assert_allclose(body["outputs"][0]["data"], _reference(MODELS[2]), rtol=1e-5)
    assert AuditEvent.objects.filter(event_type="inference.infer").latest("sequence").details["version"] == 2
    ready = caller.get(f"/v2/models/{NAME}/versions/2/ready")
    metadata = caller.get(f"/v2/models/{NAME}/versions/2")
    assert ready.status_code == 200
    assert metadata.status_code == 200 and metadata.json()["versions"] == ["2"]


def test_a_version_that_is_not_deployed_is_refused_with_404(caller, versions, triton, staff_user):
    _serve(versions[2], InferenceServerFactory(http_url=triton.http_url), staff_user)

    resp = _infer(caller, 1)

    assert resp.status_code == 404
    assert resp.json()["code"] == "model_version_not_deployed"


def test_a_stale_route_is_refused_by_triton_not_answered_by_another_version(caller, versions, triton, staff_user):
    """The catalogue still routes version 1 to a server whose Triton has since loaded version 2
    (here: a second server entry for the same Triton; in general any routing data that lags behind
    Triton). The versioned call reaches Triton as a versioned call, so Triton refuses it; before,
    it went to the unversioned path and version 2 answered a call for version 1."""
    _serve(versions[1], InferenceServerFactory(http_url=triton.http_url), staff_user)
    _serve(versions[2], InferenceServerFactory(http_url=triton.http_url), staff_user)  # replaces 1 on Triton

    resp = _infer(caller, 1)
    assert resp.status_code == 404, resp.content
    assert resp.json()["code"] == "model_version_not_deployed"
    assert _infer(caller, 2).json()["model_version"] == "2"
