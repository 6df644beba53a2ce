"""tritonclient's gRPC client through the real pipeline onto a real tritonserver: the token in the
call metadata, the answer Triton computed, the refusals of the HTTP path as gRPC statuses, and an
audit event for each call marked as gRPC.

The gRPC server and the aio client run on the event loop of `async_to_sync`, so the pipeline's
database work (`sync_to_async(thread_sensitive=True)`) runs on the test's thread, inside its
transaction, as for the HTTP data-plane tests."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc.aio as grpcaio
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from apps.audit.models import AuditEvent
from apps.deployments import services as deployments
from apps.deployments.models import Deployment, Observed
from apps.gateway.dataplane import runtime
from apps.gateway.dataplane.grpc_adapter import build_grpc_server
from apps.gateway.dataplane.snapshot import SnapshotHolder
from inference_backend.client import TritonClient
from inference_backend.demo_model import build_test_onnx
from inference_backend.server import free_port
from tests.conftest import grant
from tests.factories import InferenceServerFactory, ModelVersionFactory, token_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

NAME = "grpc-e2e"
ONNX = build_test_onnx(4, 3, seed=31)


@pytest.fixture
def deployed(staff_user, plain_user, triton):
    mv = ModelVersionFactory(model_name=NAME, data=ONNX, actor=staff_user)
    grant(plain_user, mv.model)
    server = InferenceServerFactory(http_url=triton.http_url)
    dep = deployments.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=staff_user)
    deployments.reconcile_deployment(dep.pk)
    dep.refresh_from_db()
    assert dep.observed_state == Observed.ACTIVE, dep.last_error
    yield mv
    with TritonClient(triton.http_url) as client:
        client.unload_model(f"{NAME}--v1")


async def _refusal(coro) -> tuple[str, str]:
    try:
        await coro
    except InferenceServerException as err:
        return err.status(), err.message()
    raise AssertionError("the call was not refused")


def in_test_transaction():
    """The real pipeline, reading the policy and writing its audit events on the test's thread
    (inside its transaction), as tests/gateway/dataplane_client.py does for HTTP."""
    return runtime.build(policy=SnapshotHolder(refresh="always"), owns_policy=True, audit_writer="django")


def test_tritonclient_grpc_through_the_pipeline(deployed, plain_user, staff_user):
    auth = {"authorization": f"Bearer {token_for(plain_user)}"}
    outsider = {"authorization": f"Bearer {token_for(staff_user)}"}  # no invoke grant on the model
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)

    async def scenario():
        plane = in_test_transaction()
        await plane.start()
        port = free_port()
        server = build_grpc_server(
            plane.pipeline.handle, bind=f"127.0.0.1:{port}", max_message_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        )
        await server.start()
        client = grpcaio.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            inp = InferInput("INPUT", [3, 4], "FP32")
            inp.set_data_from_numpy(x)
            result = await client.infer(NAME, [inp], outputs=[InferRequestedOutput("OUTPUT")], headers=auth)
            return {
                "output": result.as_numpy("OUTPUT"),
                "version": result.get_response().model_version,
                "metadata": await client.get_model_metadata(NAME, headers=auth),
                "ready": await client.is_model_ready(NAME, headers=auth),
                "ready_v9": await _refusal(client.is_model_ready(NAME, "9", headers=auth)),
                "no_token": await _refusal(client.infer(NAME, [inp])),
                "outsider": await _refusal(client.infer(NAME, [inp], headers=outsider)),
                "bad_input": await _refusal(
                    client.infer(NAME, [InferInput("NOPE", [1], "FP32").set_data_from_numpy(x[0, :1])], headers=auth)
                ),
            }
        finally:
            await client.close()
            await server.stop(None)
            await plane.stop()

    got = async_to_sync(scenario)()

    expected = ort.InferenceSession(ONNX, providers=["CPUExecutionProvider"]).run(None, {"INPUT": x})[0]
    np.testing.assert_allclose(got["output"], expected, rtol=1e-5, atol=1e-6)
    assert got["version"] == "1"
    assert [t.name for t in got["metadata"].inputs] == ["INPUT"] and list(got["metadata"].inputs[0].shape) == [-1, 4]
    assert got["ready"] is True
    assert got["ready_v9"][0] == "StatusCode.NOT_FOUND" and got["ready_v9"][1].startswith("model_version_not_deployed")
    assert got["no_token"][0] == "StatusCode.UNAUTHENTICATED" and got["no_token"][1].startswith("missing_token: ")
    assert got["outsider"] == (  # an admin sees the model, but invoking it needs a grant
        "StatusCode.PERMISSION_DENIED",
        f"invoke_not_permitted: you may not invoke {NAME!r}; ask a security officer for a grant",
    )
    assert got["bad_input"] == (
        "StatusCode.INVALID_ARGUMENT",
        "unknown_input: the model has no input named 'NOPE'; its inputs are INPUT",
    )

    events = AuditEvent.objects.filter(event_type__startswith="inference.", details__protocol="grpc")
    ok = events.get(event_type="inference.infer", outcome="success")
    assert ok.actor == plain_user and ok.details["version"] == 1 and ok.source_ip == "127.0.0.1"
    assert ok.user_agent.startswith("grpc-python")
    assert events.filter(event_type="inference.metadata", outcome="success").count() == 1
    assert events.filter(event_type="inference.ready", outcome="success").count() == 1
    assert events.filter(event_type="inference.infer", error_code="missing_token").count() == 1
    assert events.filter(event_type="inference.infer", actor=plain_user, error_code="unknown_input").count() == 1
    assert events.filter(event_type="inference.infer", actor=staff_user, error_code="invoke_not_permitted").count() == 1
    assert events.filter(event_type="inference.ready", error_code="model_version_not_deployed").count() == 1


def test_malformed_and_oversized_messages_are_refused_and_audited_as_the_caller(plain_user):
    auth = (("authorization", f"Bearer {token_for(plain_user)}"),)
    limit = 4096

    async def scenario():
        plane = in_test_transaction()
        await plane.start()
        port = free_port()
        server = build_grpc_server(
            plane.pipeline.handle, bind=f"127.0.0.1:{port}", max_message_bytes=limit, refuse=plane.pipeline.refuse
        )
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        got = {}
        try:
            for name, message in (("malformed", b"\x0a\xff\xff\xff"), ("oversized", b"\x0a\x01m" + b"\x00" * limit)):
                try:
                    await infer(message, metadata=auth)
                except grpc.aio.AioRpcError as err:
                    got[name] = (err.code(), err.details())
            # the oversized call was answered by grpc itself: its audit event follows
            audited = sync_to_async(AuditEvent.objects.filter(error_code="request_too_large").exists)
            deadline = time.monotonic() + 10
            while not await audited() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            await channel.close()
            await server.stop(None)
            await plane.stop()
        return got

    got = async_to_sync(scenario)()

    assert got["malformed"] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request: the request is not a valid inference.ModelInferRequest message",
    )
    assert got["oversized"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    events = AuditEvent.objects.filter(event_type="inference.infer", actor=plain_user, details__protocol="grpc")
    assert events.filter(error_code="invalid_request", outcome="failure").count() == 1
    assert events.filter(error_code="request_too_large", outcome="failure").count() == 1


def test_a_grpc_call_whose_replica_is_down_is_answered_by_the_other(deployed, plain_user, staff_user):
    """Failover is the pipeline's, so gRPC callers get it as HTTP ones do: a second replica on a dead
    server (nothing listens) costs no failed call; the audit event names the replica that answered."""
    from tests.factories import closed_port

    dead = InferenceServerFactory(http_url=f"http://127.0.0.1:{closed_port()}")
    Deployment.objects.create(model=deployed.model, model_version=deployed, server=dead, observed_state=Observed.ACTIVE)
    auth = {"authorization": f"Bearer {token_for(plain_user)}"}
    x = np.random.default_rng(6).normal(size=(1, 4)).astype(np.float32)

    async def scenario():
        plane = in_test_transaction()
        await plane.start()
        port = free_port()
        server = build_grpc_server(
            plane.pipeline.handle, bind=f"127.0.0.1:{port}", max_message_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        )
        await server.start()
        client = grpcaio.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            inp = InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(x)
            outcomes = []
            for _ in range(4):  # whichever replica each call picks first
                result = await client.infer(NAME, [inp], outputs=[InferRequestedOutput("OUTPUT")], headers=auth)
                outcomes.append(result.as_numpy("OUTPUT").shape)
            return outcomes, plane.pipeline.balancer.stats()
        finally:
            await client.close()
            await server.stop(None)
            await plane.stop()

    outcomes, stats = async_to_sync(scenario)()
    assert outcomes == [(1, 3)] * 4
    assert stats[dead.pk]["state"] == "open" and "refused" in stats[dead.pk]["last_error"]
    served = AuditEvent.objects.filter(event_type="inference.infer", details__protocol="grpc", outcome="success")
    assert served.count() == 4 and dead.name not in {e.details["server"] for e in served}
