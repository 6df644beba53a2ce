"""Two versions of one model on one Triton server, through every real layer: deploy v2 beside a live
v1 through the API (no 409), a Celery worker loads it as "<model>--v2" next to "<model>--v1", the
data plane answers both under the public name, and undeploying v1 while a caller runs throughout
drops no call."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.roles import ADMIN
from apps.accounts.services import issue_token
from apps.deployments.models import Deployment, Observed
from apps.registry.models import Model
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from tests.conftest import grant, make_user
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

NAME = "side-by-side"


@pytest.fixture
def operator():
    user = make_user("sbs-operator", ADMIN)
    _, token = issue_token(
        user=user, name="it", scopes=["invoke", "read", "manage"], actor=user, otp_verified_at=timezone.now()
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return user, token, api


def _upload(api, seed: int) -> dict:
    data = build_test_onnx(4, 3, seed=seed)
    resp = api.post(
        f"/api/v1/registry/models/{NAME}/versions/", {"file": SimpleUploadedFile("m.onnx", data)}, format="multipart"
    )
    assert resp.status_code == 201, resp.json()
    return resp.json()


def _deploy(api, version_id: int, server_id: int):
    return api.post(
        "/api/v1/deployments/deployments/", {"model_version": version_id, "server": server_id}, format="json"
    )


def _settled(pk: int, states=(Observed.ACTIVE, Observed.FAILED, Observed.INACTIVE)) -> Deployment:
    return wait_for(
        lambda: (d := Deployment.objects.get(pk=pk)).observed_state in states and not d.claimed_until and d,
        180,
        what=f"deployment {pk} to reach one of {states}",
    )


class Caller(threading.Thread):
    """Unversioned calls through the gateway in a loop, as a clinician's application would make them."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.url, self.auth = url, {"Authorization": f"Bearer {token}"}
        self.stop = threading.Event()
        self.answers: list[tuple[str, str]] = []  # (model_name, model_version) of each answer
        self.failures: list[str] = []

    def run(self):
        client = httpclient.InferenceServerClient(url=self.url)
        x = np.ones((1, 4), dtype=np.float32)
        try:
            while not self.stop.is_set():
                inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
                inp.set_data_from_numpy(x)
                try:
                    answer = client.infer(NAME, [inp], headers=dict(self.auth)).get_response()
                    self.answers.append((answer["model_name"], answer["model_version"]))
                except Exception as err:  # noqa: BLE001 - every failure is the finding
                    self.failures.append(str(err))
        finally:
            client.close()


def test_v2_beside_live_v1_then_undeploy_v1_under_load(triton, celery_worker, live_server, dataplane, operator):
    user, token, api = operator
    v1, v2 = _upload(api, 31), _upload(api, 32)
    resp = api.post("/api/v1/deployments/servers/", {"name": "triton-sbs", "http_url": triton.http_url}, format="json")
    assert resp.status_code == 201, resp.json()
    server_id = resp.json()["id"]
    first = _deploy(api, v1["id"], server_id)
    assert first.status_code == 202, first.json()
    dep1 = first.json()["id"]
    assert _settled(dep1).observed_state == Observed.ACTIVE
    grant(user, Model.objects.get(name=NAME))
    dataplane.sync_policy()

    caller = Caller(dataplane.url.removeprefix("http://"), token)
    caller.start()
    try:
        wait_for(lambda: len(caller.answers) >= 10 or caller.failures, 60, what="calls to v1")

        # v2 beside the live v1: accepted, loaded under its own name, v1 untouched
        second = _deploy(api, v2["id"], server_id)
        assert second.status_code == 202, second.json()
        dep2 = second.json()["id"]
        assert _settled(dep2).observed_state == Observed.ACTIVE, Deployment.objects.get(pk=dep2).last_error
        assert Deployment.objects.get(pk=dep1).observed_state == Observed.ACTIVE
        with TritonClient(triton.http_url) as direct:
            assert direct.model_ready(f"{NAME}--v1") and direct.model_ready(f"{NAME}--v2")
        # v2's set takes no unversioned call until traffic moves (docs/fleet.md): v1 keeps answering
        before = len(caller.answers)
        wait_for(lambda: len(caller.answers) >= before + 10 or caller.failures, 60, what="calls beside v2")
        assert {version for _, version in caller.answers[before:]} == {"1"}

        # undeploy v1 while the caller runs: only v1's Triton name goes, its traffic to v2
        assert api.post(f"/api/v1/deployments/deployments/{dep1}/undeploy/").status_code == 202
        assert _settled(dep1, (Observed.INACTIVE, Observed.FAILED)).observed_state == Observed.INACTIVE
        with TritonClient(triton.http_url) as direct:
            assert not direct.model_ready(f"{NAME}--v1")
            assert direct.model_ready(f"{NAME}--v2")
        after = len(caller.answers)
        wait_for(lambda: len(caller.answers) >= after + 20 or caller.failures, 60, what="calls after the undeploy")
    finally:
        caller.stop.set()
        caller.join(30)

    assert caller.failures == []
    assert {name for name, _ in caller.answers} == {NAME}  # never the Triton name
    assert {version for _, version in caller.answers} == {"1", "2"}
    assert {version for _, version in caller.answers[after:]} == {"2"}
    with TritonClient(triton.http_url) as direct:
        direct.unload_model(f"{NAME}--v2")
