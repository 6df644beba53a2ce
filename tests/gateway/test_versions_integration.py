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
        for v in MODELS:
            client.unload_model(f"{NAME}--v{v}")


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
    """The catalogue still routes version 1 to a Triton that no longer has it (here: unloaded
    behind the portal's back; in general any routing data that lags behind Triton) while version 2
    runs beside it. The versioned call reaches Triton as a versioned call of version 1's own name, so
    Triton refuses it: never version 2's answer to a call for version 1."""
    server = InferenceServerFactory(http_url=triton.http_url)
    _serve(versions[1], server, staff_user)
    _serve(versions[2], server, staff_user)
    with TritonClient(triton.http_url) as client:
        client.unload_model(f"{NAME}--v1")

    resp = _infer(caller, 1)
    assert resp.status_code == 404, resp.content
    assert resp.json()["code"] == "model_version_not_deployed"
    assert _infer(caller, 2).json()["model_version"] == "2"


def test_two_versions_run_side_by_side_on_one_server(caller, versions, triton, staff_user):
    """v2 deployed beside a live v1 on the same Triton: both load (as "versioned--v1" and
    "versioned--v2"), each versioned call is answered by its own weights, and every answer — JSON,
    binary tensors, metadata, errors — names the public model, never the Triton name."""
    server = InferenceServerFactory(http_url=triton.http_url)
    deps = {v: _serve(versions[v], server, staff_user) for v in (1, 2)}
    assert {d.triton_name for d in deps.values()} == {f"{NAME}--v1", f"{NAME}--v2"}
    with TritonClient(triton.http_url) as client:
        assert client.model_ready(f"{NAME}--v1") and client.model_ready(f"{NAME}--v2")

    for v in (1, 2):
        body = _infer(caller, v).json()
        assert (body["model_name"], body["model_version"]) == (NAME, str(v))
        np.testing.assert_allclose(body["outputs"][0]["data"], _reference(MODELS[v]), rtol=1e-5)
        meta = caller.get(f"/v2/models/{NAME}/versions/{v}").json()
        assert (meta["name"], meta["versions"]) == (NAME, [str(v)])

    def unversioned(calls: int) -> set[str]:
        seen = set()
        for _ in range(calls):  # under the public name, whichever version answers
            resp = caller.post(f"/v2/models/{NAME}/infer", data=BODY, content_type="application/json")
            assert resp.status_code == 200, resp.content
            body = resp.json()
            assert body["model_name"] == NAME
            seen.add(body["model_version"])
            np.testing.assert_allclose(
                body["outputs"][0]["data"], _reference(MODELS[int(body["model_version"])]), rtol=1e-5
            )
        return seen

    # v2 was deployed beside v1 by hand: its set takes no traffic until weights move (docs/fleet.md)
    assert unversioned(10) == {"1"}
    # weights moved by hand reach the data plane (this client builds its pipeline per call: the
    # heavier version takes each call; the split itself: tests/gateway/dataplane/test_balancer.py)
    deployments.set_traffic(model_id=versions[1].model_id, weights={1: 10, 2: 90}, actor=staff_user)
    assert unversioned(4) == {"2"}

    # Binary tensors: the JSON head is rewritten and its Inference-Header-Content-Length adjusted.
    binary = json.dumps(
        {"inputs": json.loads(BODY)["inputs"], "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}]}
    )
    resp = caller.post(f"/v2/models/{NAME}/versions/2/infer", data=binary, content_type="application/json")
    assert resp.status_code == 200, resp.content
    length = int(resp["Inference-Header-Content-Length"])
    head = json.loads(resp.content[:length])
    assert (head["model_name"], head["model_version"]) == (NAME, "2")
    tensor = np.frombuffer(resp.content[length:], dtype=np.float32)
    np.testing.assert_allclose(tensor, _reference(MODELS[2]), rtol=1e-5)

    # Triton's own error text names its internal name; the caller reads the model's.
    wrong = json.dumps({"inputs": [{"name": "NOPE", "datatype": "FP32", "shape": [1, 4], "data": INPUT}]})
    resp = caller.post(f"/v2/models/{NAME}/versions/1/infer", data=wrong, content_type="application/json")
    assert resp.status_code == 400
    assert f"{NAME}--v" not in resp.content.decode()


def test_undeploying_v1_leaves_v2_serving(caller, versions, triton, staff_user):
    """Undeploy v1 while v2 runs beside it on the same server: only "versioned--v1" is unloaded,
    v2 keeps answering, and unversioned calls routed to v1 by a policy read before the undeploy go
    to v2 instead of failing."""
    server = InferenceServerFactory(http_url=triton.http_url)
    v1 = _serve(versions[1], server, staff_user)
    _serve(versions[2], server, staff_user)

    deployments.request_undeploy(deployment_id=v1.pk, actor=staff_user)
    deployments.reconcile_deployment(v1.pk)

    v1.refresh_from_db()
    assert v1.observed_state == Observed.INACTIVE
    with TritonClient(triton.http_url) as client:
        assert not client.model_ready(f"{NAME}--v1")
        assert client.model_ready(f"{NAME}--v2")
    for _ in range(5):
        body = caller.post(f"/v2/models/{NAME}/infer", data=BODY, content_type="application/json").json()
        assert (body["model_name"], body["model_version"]) == (NAME, "2")
    assert _infer(caller, 1).json()["code"] == "model_version_not_deployed"
