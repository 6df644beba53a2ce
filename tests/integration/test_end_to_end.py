"""One real path through every layer: upload → encrypt → deploy by a Celery worker onto a real
Triton → infer through the gateway with the official tritonclient → audit."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient
from tritonclient.utils import InferenceServerException

from apps.accounts.roles import ADMIN, ANALYST
from apps.accounts.services import issue_token
from apps.audit.models import AuditEvent
from apps.deployments.models import Deployment, Observed
from apps.deployments.tasks import reconcile_deployment_task
from apps.keys.models import DataKey
from apps.registry.models import Artifact, Model
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from tests.conftest import grant, make_user
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def operator():
    """An admin (role) with a token of every scope. Invoking still needs a per-model grant."""
    user = make_user("operator", ADMIN)
    # as if the operator had just passed the second factor, which a privileged person needs to issue
    _, token = issue_token(
        user=user, name="it", scopes=["invoke", "read", "manage"], actor=user, otp_verified_at=timezone.now()
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return user, token, api


def _upload(api, name: str, data: bytes) -> dict:
    resp = api.post(
        f"/api/v1/registry/models/{name}/versions/", {"file": SimpleUploadedFile("m.onnx", data)}, format="multipart"
    )
    assert resp.status_code == 201, resp.json()
    return resp.json()


def _server(api, url: str, name: str = "triton-it") -> int:
    resp = api.post("/api/v1/deployments/servers/", {"name": name, "http_url": url}, format="json")
    assert resp.status_code == 201, resp.json()
    return resp.json()["id"]


def _deploy(api, version_id: int, server_id: int, **batching) -> int:
    resp = api.post(
        "/api/v1/deployments/deployments/",
        {"model_version": version_id, "server": server_id, **batching},
        format="json",
    )
    assert resp.status_code == 202, resp.json()
    return resp.json()["id"]


def _settled(pk: int, states=(Observed.ACTIVE, Observed.FAILED, Observed.INACTIVE)) -> Deployment:
    return wait_for(
        lambda: (d := Deployment.objects.get(pk=pk)).observed_state in states and not d.claimed_until and d,
        180,
        what=f"deployment {pk} to reach one of {states}",
    )


def _transitions(pk: int) -> list[str]:
    return list(Deployment.objects.get(pk=pk).transitions.values_list("to_state", flat=True))


def _bearer(user) -> dict:
    return {"Authorization": f"Bearer {issue_token(user=user, name='it', actor=user)[1]}"}


def _gateway(dataplane) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=dataplane.url.removeprefix("http://"))


def test_upload_deploy_infer_audit(triton, celery_worker, live_server, dataplane, operator):
    user, token, api = operator
    plaintext = build_test_onnx(4, 3, seed=11)
    version = _upload(api, "sepsis-risk", plaintext)
    assert version["signature"]["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]}]
    dep_id = _deploy(api, version["id"], _server(api, triton.http_url), max_batch_size=8, max_queue_delay_us=500)

    dep = _settled(dep_id)
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    assert _transitions(dep_id) == ["pending", "loading", "active"]
    assert dep.server.state == "up" and dep.server.last_seen_at is not None

    gw = _gateway(dataplane)
    auth = {"Authorization": f"Bearer {token}"}
    grant(user, Model.objects.get(name="sepsis-risk"))
    dataplane.sync_policy()  # the grant reaches the data plane within ms of its commit
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    expected = ort.InferenceSession(plaintext).run(None, {"INPUT": x})[0]
    for binary in (True, False):
        inp = httpclient.InferInput("INPUT", [5, 4], "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("OUTPUT", binary_data=binary)
        # tritonclient adds its binary header to the dict it is given: pass a fresh one each call
        result = gw.infer("sepsis-risk", [inp], outputs=[out], headers=dict(auth))
        np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-5, atol=1e-6)
        # Triton serves it as "sepsis-risk--v1"; the caller sees the model's name (binary header too)
        assert (result.get_response()["model_name"], result.get_response()["model_version"]) == ("sepsis-risk", "1")
    assert gw.is_model_ready("sepsis-risk", headers=auth)
    metadata = gw.get_model_metadata("sepsis-risk", headers=auth)
    assert (metadata["name"], metadata["versions"], metadata["inputs"][0]["name"]) == ("sepsis-risk", ["1"], "INPUT")

    with pytest.raises(InferenceServerException) as no_token:
        gw.infer("sepsis-risk", [inp])
    assert no_token.value.status() == "401"
    with pytest.raises(InferenceServerException) as unknown:
        gw.infer("no-such-model", [inp], headers=auth)
    assert unknown.value.status() == "404"

    # An analyst infers on the model granted to them; another, without a grant, is told it does not exist.
    alice, bob = make_user("alice", ANALYST), make_user("bob", ANALYST)
    grant(alice, Model.objects.get(name="sepsis-risk"))
    dataplane.sync_policy()  # the grant reaches the data plane within ms of its commit
    alice_auth, bob_auth = _bearer(alice), _bearer(bob)
    result = gw.infer("sepsis-risk", [inp], outputs=[out], headers=dict(alice_auth))
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(InferenceServerException) as hidden:
        gw.infer("sepsis-risk", [inp], headers=dict(bob_auth))
    assert hidden.value.status() == "404"
    assert "unknown model 'sepsis-risk'" in str(hidden.value)

    events = AuditEvent.objects.all()
    assert events.filter(event_type="registry.version.create", actor=user).count() == 1
    assert events.filter(event_type="deployment.request", actor=user, target_id=str(dep_id)).count() == 1
    moves = [
        e.details["after"]["observed_state"]
        for e in events.filter(event_type="deployment.transition", target_id=str(dep_id)).order_by("id")
    ]
    assert moves == ["loading", "active"]
    infers = events.filter(event_type="inference.infer", actor=user, outcome="success")
    assert infers.count() == 2
    assert all(e.details["status"] == 200 and e.details["latency_ms"] > 0 and e.details["version"] == 1 for e in infers)
    assert events.filter(event_type="inference.infer", outcome="denied", error_code="missing_token").count() == 1
    assert events.filter(event_type="inference.infer", actor=alice, outcome="success").count() == 1
    assert events.filter(event_type="inference.infer", error_code="model_not_found").count() == 2
    assert events.get(event_type="inference.infer", actor=bob).error_code == "model_not_found"


def test_reconcile_is_idempotent_and_recovers_from_a_crash(triton, celery_worker, operator):
    _, _, api = operator
    version = _upload(api, "idem", build_test_onnx(4, 2, seed=5))
    dep_id = _deploy(api, version["id"], _server(api, triton.http_url, "triton-idem"))
    assert _settled(dep_id).observed_state == Observed.ACTIVE

    reconcile_deployment_task.apply(args=[dep_id])
    reconcile_deployment_task.apply(args=[dep_id])
    assert _transitions(dep_id) == ["pending", "loading", "active"]  # converged: nothing to do

    # A worker died after recording LOADING and Triton lost the model (e.g. it restarted).
    TritonClient(triton.http_url).unload_model("idem--v1")  # version 1's Triton name
    wait_for(lambda: not TritonClient(triton.http_url).model_ready("idem--v1"), 30, what="unload")
    Deployment.objects.filter(pk=dep_id).update(observed_state=Observed.LOADING)
    assert reconcile_deployment_task.apply(args=[dep_id]).get() == Observed.ACTIVE
    assert TritonClient(triton.http_url).model_ready("idem--v1")


def test_load_failure_ends_failed_with_tritons_error(triton, celery_worker, operator):
    _, _, api = operator
    version = _upload(api, "badkey", build_test_onnx(4, 2, seed=6))
    DataKey.objects.filter(pk=Artifact.objects.get(version_id=version["id"]).data_key_id).update(wrapped=b"\x00" * 40)
    dep_id = _deploy(api, version["id"], _server(api, triton.http_url, "triton-bad"))
    dep = _settled(dep_id)
    assert dep.observed_state == Observed.FAILED
    assert "unwrap" in dep.last_error.lower()
    assert _transitions(dep_id) == ["pending", "loading", "failed"]
    assert not TritonClient(triton.http_url).model_ready("badkey--v1")


def test_unreachable_triton_fails_after_retries(celery_worker, operator):
    _, _, api = operator
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    version = _upload(api, "nowhere", build_test_onnx(4, 2, seed=8))
    dep_id = _deploy(api, version["id"], _server(api, f"http://127.0.0.1:{port}", "triton-down"))
    dep = _settled(dep_id)
    assert dep.observed_state == Observed.FAILED
    assert "unreachable" in dep.last_error.lower()
    assert _transitions(dep_id) == ["pending", "loading", "failed"]  # never left in a transitional state
    assert dep.server.state == "down"


def test_undeploy_unloads_and_gateway_refuses(triton, celery_worker, live_server, dataplane, operator):
    _, token, api = operator
    version = _upload(api, "shortlived", build_test_onnx(4, 2, seed=9))
    dep_id = _deploy(api, version["id"], _server(api, triton.http_url, "triton-undeploy"))
    assert _settled(dep_id).observed_state == Observed.ACTIVE
    assert api.post(f"/api/v1/deployments/deployments/{dep_id}/undeploy/").status_code == 202
    assert _settled(dep_id, (Observed.INACTIVE, Observed.FAILED)).observed_state == Observed.INACTIVE
    assert not TritonClient(triton.http_url).model_ready("shortlived--v1")
    dataplane.sync_policy()  # the worker's commit reaches the data plane within ms anyway
    gw, auth = _gateway(dataplane), {"Authorization": f"Bearer {token}"}
    assert not gw.is_model_ready("shortlived", headers=auth)
    with pytest.raises(InferenceServerException) as err:
        gw.get_model_metadata("shortlived", headers=auth)
    assert err.value.status() == "409"
    assert "no active deployment" in str(err.value)


def _files_under(*roots: Path):
    for root in roots:
        for path in root.rglob("*") if root.exists() else ():
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_size < 256 * 1024 * 1024:
                    yield path
            except OSError:
                continue


def test_no_plaintext_model_on_disk_after_deploy(triton, celery_worker, operator, data_dir):
    _, _, api = operator
    plaintext = build_test_onnx(64, 32, seed=12)  # 8 KiB of distinctive weights
    version = _upload(api, "secret-weights", plaintext)
    dep_id = _deploy(api, version["id"], _server(api, triton.http_url, "triton-secret"))
    assert _settled(dep_id).observed_state == Observed.ACTIVE
    window = plaintext[len(plaintext) // 2 : len(plaintext) // 2 + 64]
    roots = [Path(triton.workdir), data_dir, Path(tempfile.gettempdir()), Path("/dev/shm"), Path("/var/tmp")]
    scanned = 0
    for path in _files_under(*roots):
        scanned += 1
        try:
            assert window not in path.read_bytes(), f"plaintext model bytes found in {path}"
        except (PermissionError, FileNotFoundError):
            continue
    assert scanned > 0
    assert any(p.suffix == ".enc" for p in _files_under(data_dir / "artifacts"))


def test_sm4_gcm_artifact_deploys_and_infers(triton, celery_worker, live_server, dataplane, operator, settings):
    """国密 suite: the artifact is SM4-GCM in the segmented format; Triton decrypts it in memory."""
    user, token, api = operator
    settings.ARTIFACT_SUITE = "SM4-GCM"
    plaintext = build_test_onnx(4, 3, seed=21)
    version = _upload(api, "sm4-model", plaintext)
    assert version["artifact"]["suite"] == "SM4-GCM"
    assert Artifact.objects.get(version_id=version["id"]).path.read_bytes()[:6] == b"SVRN\x02\x02"  # v2, suite 2
    dep_id = _deploy(api, version["id"], _server(api, triton.http_url, "triton-sm4"))
    assert _settled(dep_id).observed_state == Observed.ACTIVE, Deployment.objects.get(pk=dep_id).last_error

    grant(user, Model.objects.get(name="sm4-model"))

    dataplane.sync_policy()  # the grant reaches the data plane within ms of its commit
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    inp = httpclient.InferInput("INPUT", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = _gateway(dataplane).infer("sm4-model", [inp], headers={"Authorization": f"Bearer {token}"})
    expected = ort.InferenceSession(plaintext).run(None, {"INPUT": x})[0]
    np.testing.assert_allclose(result.as_numpy("OUTPUT"), expected, rtol=1e-5, atol=1e-6)
