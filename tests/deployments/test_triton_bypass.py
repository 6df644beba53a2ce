"""Closing the bypass (issue 15): a Triton started with its restricted-API options refuses every call
without its per-server credential; the portal keeps that credential sealed and sends it on every
call it makes (deployments, probes, the gateway's data plane); `triton.bypass_refused` probes each
server without it. Against real tritonservers from the nvidia-pytriton wheel: the session's open
one (`triton`, started without restriction) and a restricted one started here."""

from __future__ import annotations

import json

import pytest
import urllib3

from apps.audit.models import AuditEvent
from apps.compliance.checks import FAIL, NA, PASS, REGISTRY, Context, load_all
from apps.core.errors import ServiceError
from apps.deployments import services as deployments
from apps.deployments.credentials import generate_credential
from apps.deployments.models import InferenceServer, Observed
from apps.keys.models import DataKey
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from inference_backend.server import (
    CREDENTIAL_HEADER,
    GRPC_CREDENTIAL_METADATA,
    free_port,
    restriction_flags,
)
from tests.conftest import grant, start_local_triton
from tests.factories import InferenceServerFactory, ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient

NAME = "bypass-demo"
BODY = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 1.0, -0.5, 2.0]}]})


def _check():
    load_all()
    return REGISTRY["triton.bypass_refused"](Context(profile="hipaa"))


@pytest.fixture(scope="module")
def restricted(data_dir, tmp_path_factory):
    """A real tritonserver started with --http-restricted-api / --grpc-restricted-protocol."""
    credential = generate_credential()
    server = start_local_triton(data_dir, tmp_path_factory.mktemp("triton-restricted"), credential=credential)
    yield server
    server.stop()


# --- without a server -------------------------------------------------------------------------


def test_restriction_flags_refuse_a_credential_triton_would_misparse():
    flags = restriction_flags("a" * 43)
    assert flags[0].startswith("--http-restricted-api=inference,metadata,model-repository,")
    assert flags[0].endswith(f":{CREDENTIAL_HEADER}={'a' * 43}") and "health" not in flags[0]
    assert flags[1].startswith("--grpc-restricted-protocol=inference,")
    for bad in ("", "a:b", "a=b", "a,b", "a b"):
        with pytest.raises(ValueError):
            restriction_flags(bad)


@pytest.mark.django_db
def test_credential_is_sealed_never_shown_and_a_bad_one_saves_nothing(staff_user):
    credential = generate_credential()
    server = deployments.register_server(
        name="sealed", http_url="http://127.0.0.1:9", credential=credential, actor=staff_user
    )
    server.refresh_from_db()
    assert server.has_credential
    assert credential.encode() not in bytes(server.credential_ciphertext)
    assert DataKey.objects.get(pk=server.credential_key_id).purpose == "triton_credential"
    events = AuditEvent.objects.filter(target_id=str(server.pk), target_type="deployments.inferenceserver")
    assert events.filter(event_type="deployment.server.credential").get().details["change"] == "set"
    assert all(credential not in json.dumps(e.details) for e in AuditEvent.objects.all())

    replaced = generate_credential()
    deployments.set_server_credential(server_id=server.pk, credential=replaced, actor=staff_user)
    old_key = DataKey.objects.get(pk=server.credential_key_id)
    assert old_key.is_destroyed  # the previous credential's key is crypto-shredded
    server.refresh_from_db()
    assert deployments.credential_for(server) == replaced

    with pytest.raises(ServiceError) as err:
        deployments.set_server_credential(server_id=server.pk, credential="short:bad", actor=staff_user)
    assert err.value.code == "invalid_credential" and "short" not in err.value.detail
    server.refresh_from_db()
    assert deployments.credential_for(server) == replaced
    with pytest.raises(ServiceError):
        deployments.register_server(name="bad", http_url="http://127.0.0.1:9", credential="x", actor=staff_user)
    assert not InferenceServer.objects.filter(name="bad").exists()


@pytest.mark.django_db
def test_api_takes_the_credential_write_only(staff_client):
    credential = generate_credential()
    resp = staff_client.post(
        "/api/v1/deployments/servers/",
        {"name": "api-cred", "http_url": "http://127.0.0.1:9", "credential": credential},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    assert resp.json()["has_credential"] is True and credential not in resp.content.decode()
    server_id = resp.json()["id"]
    listed = staff_client.get(f"/api/v1/deployments/servers/{server_id}/")
    assert "credential" not in listed.json() and credential not in listed.content.decode()
    removed = staff_client.post(
        f"/api/v1/deployments/servers/{server_id}/credential/", {"credential": None}, format="json"
    )
    assert removed.status_code == 200 and removed.json()["has_credential"] is False


@pytest.mark.django_db
def test_check_is_not_applicable_without_servers():
    assert _check().status == NA


@pytest.mark.django_db
def test_check_fails_when_a_server_cannot_be_probed():
    InferenceServerFactory(name="gone")  # a closed port
    result = _check()
    assert result.status == FAIL and "gone" in result.summary and "not verified" in result.summary


# --- against real tritonservers ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db
def test_check_fails_on_a_server_started_without_restriction_and_passes_with_it(triton, restricted):
    # The control off: the session's Triton was started without the restricted-API options.
    InferenceServerFactory(name="open", http_url=triton.http_url, grpc_url=f"127.0.0.1:{triton.grpc_port}")
    result = _check()
    assert result.status == FAIL, result
    assert "open (" in result.summary and "POST /v2/repository/index → HTTP 200" in result.summary
    assert "RepositoryIndex → gRPC OK" in result.summary
    probes = result.evidence["servers"]["open"]["probes"]
    seen = {(p["protocol"], p["api"]): p["status"] for p in probes}
    assert seen[("http", "model-repository")] == 200 and seen[("grpc", "model-repository")] == "OK"
    assert seen[("http", "inference")] in (400, 404) and not any(p["refused"] for p in probes)
    assert all(p["at"] and p["call"] for p in probes)
    assert result.evidence["servers"]["open"]["portal_holds_credential"] is False

    # The control on: only the restricted server is registered (with its credential).
    InferenceServer.objects.filter(name="open").delete()
    deployments.register_server(
        name="closed",
        http_url=restricted.http_url,
        grpc_url=f"127.0.0.1:{restricted.grpc_port}",
        credential=restricted.credential,
        actor=None,
    )
    result = _check()
    assert result.status == PASS, result
    assert "(HTTP and gRPC)" in result.summary
    probes = result.evidence["servers"]["closed"]["probes"]
    assert [p["status"] for p in probes] == [403, 403, "UNAVAILABLE", "UNAVAILABLE"]
    assert all(p["refused"] and "restricted" in p["answer"] for p in probes)
    assert restricted.credential not in json.dumps(result.evidence)

    # Both registered: the open one alone fails the check.
    InferenceServerFactory(name="open-again", http_url=triton.http_url)
    result = _check()
    assert result.status == FAIL and "open-again" in result.summary and "closed" not in result.summary


@pytest.mark.integration
@pytest.mark.django_db
def test_deploy_and_gateway_serve_through_the_restricted_server(restricted, staff_user, plain_user):
    mv = ModelVersionFactory(model_name=NAME, data=build_test_onnx(4, 3, seed=7), actor=staff_user)
    grant(plain_user, mv.model)

    # Without the credential the portal cannot deploy there: Triton refuses the repository call.
    bare = deployments.register_server(name="bare", http_url=restricted.http_url, actor=staff_user)
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=bare.pk, actor=staff_user)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.FAILED and "restricted" in dep.last_error
    assert deployments.probe_server(bare.pk).state == "up"  # health stays open for probes

    # With it, deploy (load through the repository API), probe and serve through the gateway.
    server = deployments.set_server_credential(server_id=bare.pk, credential=restricted.credential, actor=staff_user)
    dep = deployments.request_redeploy(deployment_id=dep.pk, actor=staff_user)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    assert deployments.probe_server(server.pk).state == "up"
    try:
        caller = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
        resp = caller.post(f"/v2/models/{NAME}/infer", data=BODY, content_type="application/json")
        assert resp.status_code == 200, resp.content
        assert len(resp.json()["outputs"][0]["data"]) == 3
        metadata = caller.get(f"/v2/models/{NAME}")
        assert metadata.status_code == 200, metadata.content

        # The same call straight to Triton, without the credential: refused.
        direct = urllib3.request("POST", f"{restricted.http_url}/v2/models/{NAME}--v1/infer", body=BODY)
        assert direct.status == 403 and b"restricted" in direct.data
        with_it = urllib3.request(
            "POST", f"{restricted.http_url}/v2/models/{NAME}--v1/infer", body=BODY,
            headers={CREDENTIAL_HEADER: restricted.credential},
        )  # fmt: skip
        assert with_it.status == 200
    finally:
        with TritonClient(restricted.http_url, credential=restricted.credential) as client:
            client.unload_model(f"{NAME}--v1")


@pytest.mark.integration
@pytest.mark.django_db
def test_grpc_through_the_gateway_reaches_the_restricted_server_and_direct_grpc_is_refused(
    restricted, staff_user, plain_user
):
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio
    from asgiref.sync import async_to_sync
    from django.conf import settings
    from tritonclient.utils import InferenceServerException

    from apps.gateway.dataplane import runtime
    from apps.gateway.dataplane.grpc_adapter import build_grpc_server
    from apps.gateway.dataplane.snapshot import SnapshotHolder

    name = "bypass-grpc"
    mv = ModelVersionFactory(model_name=name, data=build_test_onnx(4, 3, seed=9), actor=staff_user)
    grant(plain_user, mv.model)
    server = deployments.register_server(
        name="closed-grpc", http_url=restricted.http_url, credential=restricted.credential, actor=staff_user
    )
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=staff_user)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    x = np.ones((1, 4), dtype=np.float32)
    auth = {"authorization": f"Bearer {token_for(plain_user)}"}

    async def through_gateway():
        plane = runtime.build(policy=SnapshotHolder(refresh="always"), owns_policy=True, audit_writer="django")
        await plane.start()
        port = free_port()
        grpc_server = build_grpc_server(
            plane.pipeline.handle, bind=f"127.0.0.1:{port}", max_message_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        )
        await grpc_server.start()
        client = grpcaio.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            inp = grpcclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            result = await client.infer(name, [inp], headers=auth)
            return result.as_numpy("OUTPUT")
        finally:
            await client.close()
            await grpc_server.stop(None)
            await plane.stop()

    try:
        assert async_to_sync(through_gateway)().shape == (1, 3)
        # Straight to Triton's own gRPC port without the credential: refused by --grpc-restricted-protocol.
        direct = grpcclient.InferenceServerClient(f"127.0.0.1:{restricted.grpc_port}")
        inp = grpcclient.InferInput("INPUT", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException, match="restricted"):
            direct.infer(f"{name}--v1", [inp])
        with pytest.raises(InferenceServerException, match="restricted"):
            direct.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="restricted"):  # the HTTP header name is not enough
            direct.infer(f"{name}--v1", [inp], headers={CREDENTIAL_HEADER: restricted.credential})
        answer = direct.infer(f"{name}--v1", [inp], headers={GRPC_CREDENTIAL_METADATA: restricted.credential})
        assert answer.as_numpy("OUTPUT").shape == (1, 3)
        direct.close()
    finally:
        with TritonClient(restricted.http_url, credential=restricted.credential) as client:
            client.unload_model(f"{name}--v1")
