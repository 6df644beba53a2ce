"""KEK rotation on real components (issue 4): a model keeps serving through the gateway while the
KEK is rotated inside SoftHSM2 and every data key re-wrapped; zero requests fail; afterwards every
wrapped key names the new version, the old version is destroyed in the HSM, and a model whose key
was re-wrapped still loads on the Triton host. A second test runs the re-wrap on the real Celery
worker (local keystore)."""

from __future__ import annotations

import threading

import numpy as np
import pkcs11
import pytest
import tritonclient.http as httpclient
from rest_framework.test import APIClient

from apps.accounts.roles import ANALYST, SECURITY_OFFICER
from apps.accounts.services import issue_token
from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Observed
from apps.keys.models import DataKey, KekRotation, KekState, KeyEncryptionKey, RotationState
from apps.registry.models import Model
from apps.registry.services import register_model_version
from inference_backend.demo_model import build_test_onnx
from portal.celery import app as celery_app
from tests.conftest import grant, make_user
from tests.factories import token_for
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _api(user, scopes=("read", "manage")) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, name='it', scopes=list(scopes))}")
    return api


def _deploy_now(mv, server) -> Deployment:
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=None)
    deployments.reconcile_deployment(dep.pk)  # synchronously: this test drives the steps itself
    return Deployment.objects.get(pk=dep.pk)


class Load:
    """Sends inference requests through the gateway, one after another, until stopped."""

    def __init__(self, url: str, model: str, token: str):
        self.client = httpclient.InferenceServerClient(url=url)
        self.model, self.token = model, token
        self.ok, self.failures = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        x = np.ones((1, 4), dtype=np.float32)
        while not self._stop.is_set():
            inp = httpclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            try:
                self.client.infer(self.model, [inp], headers={"Authorization": f"Bearer {self.token}"})
                self.ok += 1
            except Exception as exc:  # every failure counts, whatever its kind
                status = exc.status() if hasattr(exc, "status") else None
                self.failures.append(f"after {self.ok} ok: {type(exc).__name__} {status} {exc}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        self.client.close()


@pytest.fixture
def eager_tasks():
    """Tasks run in this process: the session's worker process is configured for the local keystore."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def test_rotation_under_load_on_softhsm(
    portal_uses_hsm, hsm_triton, live_server, dataplane, softhsm_token, eager_tasks
):
    officer, analyst = make_user("sec-officer", SECURITY_OFFICER), make_user("ana", ANALYST)
    server = deployments.register_server(name="triton-hsm-rot", http_url=hsm_triton.http_url, actor=None)
    serving = register_model_version(model_name="rot-serving", data=build_test_onnx(4, 3, seed=41), actor=officer)
    later = register_model_version(model_name="rot-later", data=build_test_onnx(4, 3, seed=42), actor=officer)
    assert _deploy_now(serving, server).observed_state == Observed.ACTIVE
    grant(analyst, Model.objects.get(name="rot-serving"))
    dataplane.sync_policy()  # the grant reaches the data plane within ms of its commit
    token = issue_token(user=analyst, name="load", actor=analyst)[1]
    old = KeyEncryptionKey.objects.get(state=KekState.ACTIVE)
    old_label = old.hsm_label

    with Load(dataplane.url.removeprefix("http://"), "rot-serving", token) as load:
        wait_for(lambda: load.ok >= 20 or load.failures, 60, what="the load to get going")
        response = _api(officer).post("/api/v1/keys/rotate/", {"reason": "it"}, format="json")
        assert response.status_code == 202, response.json()
        rotation = wait_for(
            lambda: (r := KekRotation.objects.get(pk=response.json()["id"])).state != RotationState.RUNNING and r,
            120,
            what="the rotation to finish",
        )
        served_during = load.ok
        wait_for(lambda: load.ok >= served_during + 20 or load.failures, 60, what="requests after the rotation")

    assert load.failures == [], load.failures[:3]
    assert rotation.state == RotationState.DONE and rotation.rewrapped == rotation.total == 2
    new = rotation.to_kek
    assert new.hsm_label == f"{old_label.rsplit('-v', 1)[0]}-v{old.version + 1}"
    assert set(DataKey.objects.values_list("kek_id", flat=True)) == {new.kek_id}

    retired = _api(officer).post(f"/api/v1/keys/{old.pk}/retire/")
    assert retired.status_code == 200, retired.json()
    session = pkcs11.lib(softhsm_token.module).get_token(token_label=softhsm_token.token_label).open()
    try:
        assert not list(session.get_objects({pkcs11.Attribute.LABEL: old_label}))
        assert len(list(session.get_objects({pkcs11.Attribute.LABEL: new.hsm_label}))) == 1
    finally:
        session.close()

    # A model whose data key was re-wrapped (and never loaded before) loads with the new version.
    dep = _deploy_now(later, server)
    assert dep.observed_state == Observed.ACTIVE, dep.last_error


def test_rotation_runs_on_the_celery_worker(celery_worker, triton, live_server):
    officer = make_user("sec-worker", SECURITY_OFFICER)
    server = deployments.register_server(name="triton-rot-local", http_url=triton.http_url, actor=None)
    mvs = [
        register_model_version(model_name=f"rot-w-{n}", data=build_test_onnx(4, 3, seed=50 + n), actor=officer)
        for n in range(3)
    ]
    old = KeyEncryptionKey.objects.get(state=KekState.ACTIVE)

    response = _api(officer).post("/api/v1/keys/rotate/", {}, format="json")

    assert response.status_code == 202, response.json()
    rotation = wait_for(
        lambda: (r := KekRotation.objects.get(pk=response.json()["id"])).state != RotationState.RUNNING and r,
        120,
        what="the worker to finish the rotation",
    )
    assert (rotation.state, rotation.rewrapped, rotation.total) == (RotationState.DONE, 3, 3), rotation.last_error
    assert set(DataKey.objects.values_list("kek_id", flat=True)) == {rotation.to_kek.kek_id} != {old.kek_id}
    assert _api(officer).post(f"/api/v1/keys/{old.pk}/retire/").status_code == 200
    assert _deploy_now(mvs[0], server).observed_state == Observed.ACTIVE
