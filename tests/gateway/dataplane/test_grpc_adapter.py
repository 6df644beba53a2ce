"""The KServe v2 gRPC adapter, driven by the real tritonclient.grpc against a grpc.aio server in a
thread of its own, with a recording stand-in for the pipeline's `handle`.

What the pipeline sees must be exactly what tritonclient.http would have sent for the same call
(so the one pipeline checks, de-identifies and forwards both alike), and what the client decodes
must be what the scripted Outbound said.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
import time
import uuid

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from apps.core.errors import ServiceError
from apps.gateway.dataplane.grpc_adapter import ERROR_CODE_KEY, build_grpc_server, peer_address
from apps.gateway.dataplane.types import INFER, METADATA, READY, Inbound, Outbound
from inference_backend.server import free_port

TOKEN = "Bearer sv_test_token"
AUTH = {"authorization": TOKEN}
LIMIT = 64 * 1024


def triton_answer(outputs: list[tuple[str, str, list[int], bytes]], version: str = "2") -> Outbound:
    """Triton's HTTP answer with binary outputs: JSON header + tensors, its length in a header."""
    header = {
        "model_name": "clf",
        "model_version": version,
        "outputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}} for n, d, s, b in outputs
        ],
    }
    head = json.dumps(header).encode()
    return Outbound(
        200,
        head + b"".join(b for *_, b in outputs),
        [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(len(head)))],
    )


def refusal(code: str, detail: str, status: int, retry_after: str | None = None) -> Outbound:
    err = ServiceError(code, detail, status)
    body = json.dumps(err.as_dict()).encode()
    return Outbound(status, body, [("Content-Type", "application/json")], err, retry_after)


class FakePipeline:
    """Records every Inbound; answers with `answer` (an Outbound or a function of the Inbound).
    With `gate` set, each call waits for it, so tests can hold a call in flight."""

    def __init__(self):
        self.seen: list[Inbound] = []
        self.refused: list[tuple[Inbound, ServiceError]] = []
        self.finished: list[str] = []
        self.client_request_ids: list[str] = []
        self.answer = Outbound(200, b"{}", [])
        self.gate: asyncio.Event | None = None

    async def handle(self, inbound: Inbound) -> Outbound:
        self.seen.append(inbound)
        self.client_request_ids.append(inbound.request_id)
        inbound.request_id = inbound.request_id or uuid.uuid4().hex  # as the pipeline names a call
        try:
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.finished.append("cancelled")
            raise
        self.finished.append("done")
        return self.answer(inbound) if callable(self.answer) else self.answer

    async def refuse(self, inbound: Inbound, err: ServiceError) -> Outbound:
        self.refused.append((inbound, err))
        inbound.request_id = inbound.request_id or uuid.uuid4().hex
        return refusal(err.code, err.detail, err.status_code)


class ServerThread:
    """A grpc.aio server on its own event loop in a background thread."""

    def __init__(self, pipeline: FakePipeline, *, with_refuse: bool = True, message_timeout: float = 30.0):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()

        async def start():
            self.server = build_grpc_server(
                pipeline.handle,
                bind=f"127.0.0.1:{self.port}",
                max_message_bytes=LIMIT,
                refuse=pipeline.refuse if with_refuse else None,
                message_timeout=message_timeout,
            )
            await self.server.start()

        self.run(start())

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self):
        self.run(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def pipeline():
    return FakePipeline()


@pytest.fixture
def server(pipeline):
    srv = ServerThread(pipeline)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


@pytest.fixture
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def http_body(inputs, outputs=None, **kwargs) -> tuple[bytes, int | None]:
    return httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)


# -- inference ------------------------------------------------------------------------------------
def test_fp32_infer_is_the_http_form_and_the_answer_decodes(pipeline, client):
    x = np.array([[0.5, -1.25, 3.0]], dtype=np.float32)
    y = np.array([[0.1, 0.9]], dtype=np.float32)
    pipeline.answer = triton_answer([("probabilities", "FP32", [1, 2], y.tobytes())])
    g_in = grpcclient.InferInput("features", [1, 3], "FP32").set_data_from_numpy(x)
    result = client.infer(
        "clf",
        [g_in],
        model_version="2",
        outputs=[grpcclient.InferRequestedOutput("probabilities")],
        headers=AUTH,
    )

    inbound = pipeline.seen[-1]
    h_in = httpclient.InferInput("features", [1, 3], "FP32")
    h_in.set_data_from_numpy(x, binary_data=True)
    body, json_size = http_body([h_in], [httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    assert (inbound.kind, inbound.model, inbound.version, inbound.protocol) == (INFER, "clf", "2", "grpc")
    assert inbound.body == body and inbound.header_length == json_size
    assert inbound.authorization == TOKEN
    assert inbound.peer == "127.0.0.1"
    assert inbound.user_agent.startswith("grpc-python")
    assert pipeline.client_request_ids == [""]  # none given: the pipeline names the call
    np.testing.assert_array_equal(result.as_numpy("probabilities"), y)
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("clf", "2")
    assert list(response.outputs[0].shape) == [1, 2]


def test_bytes_tensors_both_ways_with_every_output_asked_for(pipeline, client):
    texts = np.array([[b"Patient John Smith", "née Dupont".encode()]], dtype=np.object_)
    labels = np.array([b"PERSON", b"\xff\x00raw"], dtype=np.object_)
    framed = b"".join(struct.pack("<I", len(v)) + v for v in labels)
    pipeline.answer = triton_answer([("labels", "BYTES", [2], framed)], version="1")
    g_in = grpcclient.InferInput("text", [1, 2], "BYTES").set_data_from_numpy(texts)
    result = client.infer("clf", [g_in], headers=AUTH, request_id="call-7")

    inbound = pipeline.seen[-1]
    h_in = httpclient.InferInput("text", [1, 2], "BYTES")
    h_in.set_data_from_numpy(texts, binary_data=True)
    body, json_size = http_body([h_in], request_id="call-7")  # no outputs named: all, in binary
    assert inbound.version is None
    assert inbound.body == body and inbound.header_length == json_size
    assert json.loads(body[:json_size])["parameters"] == {"binary_data_output": True}
    assert list(result.as_numpy("labels")) == list(labels)


def test_typed_contents_become_json_data_and_what_json_cannot_carry_goes_binary(pipeline, stub):
    request = pb.ModelInferRequest(model_name="clf", id="r1")
    request.inputs.add(name="f", datatype="FP32", shape=[2]).contents.fp32_contents.extend([0.5, 2.0])
    request.inputs.add(name="i", datatype="INT64", shape=[1]).contents.int64_contents.extend([2**40])
    request.inputs.add(name="t", datatype="BYTES", shape=[1]).contents.bytes_contents.extend(["ünï".encode()])
    request.inputs.add(name="b", datatype="BYTES", shape=[1]).contents.bytes_contents.extend([b"\xff\xfe"])
    request.inputs.add(name="n", datatype="FP64", shape=[1]).contents.fp64_contents.extend([float("nan")])
    request.parameters["priority"].uint64_param = 3
    request.parameters["note"].string_param = "x"
    request.outputs.add(name="out").parameters["classification"].int64_param = 2
    pipeline.answer = triton_answer([("out", "BYTES", [1], struct.pack("<I", 5) + b"0.9:1")])
    _, call = stub.ModelInfer.with_call(request, metadata=list(AUTH.items()))

    inbound = pipeline.seen[-1]
    assert dict(call.trailing_metadata())["x-request-id"] == inbound.request_id  # to quote to the operator
    header = json.loads(inbound.body[: inbound.header_length])
    tail = inbound.body[inbound.header_length :]
    assert header["id"] == "r1"
    assert header["inputs"][0] == {"name": "f", "shape": [2], "datatype": "FP32", "data": [0.5, 2.0]}
    assert header["inputs"][1]["data"] == [2**40]
    assert header["inputs"][2]["data"] == ["ünï"]
    assert header["inputs"][3]["parameters"] == {"binary_data_size": 6}
    assert header["inputs"][4]["parameters"] == {"binary_data_size": 8}
    assert tail[:6] == struct.pack("<I", 2) + b"\xff\xfe" and np.isnan(np.frombuffer(tail[6:], np.float64)[0])
    assert header["outputs"] == [{"name": "out", "parameters": {"classification": 2, "binary_data": True}}]
    assert header["parameters"] == {"note": "x", "priority": 3}


def test_a_json_only_answer_becomes_raw_output_contents(pipeline, client):
    pipeline.answer = Outbound(
        200,
        json.dumps(
            {
                "model_name": "clf",
                "model_version": "1",
                "id": "abc",
                "parameters": {"sequence_end": True},
                "outputs": [
                    {"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
                    {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["ok"]},
                ],
            }
        ).encode(),
        [("Content-Type", "application/json")],
    )
    g_in = grpcclient.InferInput("x", [1], "INT32").set_data_from_numpy(np.array([1], dtype=np.int32))
    result = client.infer("clf", [g_in], headers=AUTH)
    np.testing.assert_array_equal(result.as_numpy("p"), np.array([[0.25, 0.75]], dtype=np.float32))
    assert list(result.as_numpy("s")) == [b"ok"]
    assert result.get_response().id == "abc"
    assert result.get_response().parameters["sequence_end"].bool_param is True


def test_an_answer_that_cannot_be_translated_is_internal_not_a_wrong_result(pipeline, client):
    short = triton_answer([("p", "FP32", [1, 2], b"\0" * 8)])
    short.body = short.body[:-4]  # the header promises 8 bytes, 4 came
    pipeline.answer = short
    g_in = grpcclient.InferInput("x", [1], "INT32").set_data_from_numpy(np.array([1], dtype=np.int32))
    with pytest.raises(InferenceServerException) as exc:
        client.infer("clf", [g_in], headers=AUTH)
    assert exc.value.status() == "StatusCode.INTERNAL"
    assert exc.value.message().startswith("upstream_unreadable: ")


# -- metadata and readiness ---------------------------------------------------------------------------
def test_model_metadata(pipeline, client):
    pipeline.answer = Outbound(
        200,
        json.dumps(
            {
                "name": "clf",
                "versions": ["1", "2"],
                "platform": "python",
                "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}],
            }
        ).encode(),
        [("Content-Type", "application/json")],
    )
    meta = client.get_model_metadata("clf", model_version="2", headers=AUTH)
    inbound = pipeline.seen[-1]
    assert (inbound.kind, inbound.model, inbound.version, inbound.body) == (METADATA, "clf", "2", b"")
    assert inbound.authorization == TOKEN
    assert (meta.name, list(meta.versions), meta.platform) == ("clf", ["1", "2"], "python")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("features", "FP32", [-1, 3])]
    assert [t.name for t in meta.outputs] == ["probabilities"]


def test_model_ready_true_false_and_refused(pipeline, client):
    pipeline.answer = Outbound(200, b"", [])
    assert client.is_model_ready("clf", headers=AUTH) is True
    assert pipeline.seen[-1].kind == READY

    pipeline.answer = refusal("triton_rejected", "", 400)  # Triton's "not ready"
    assert client.is_model_ready("clf", "1", headers=AUTH) is False
    assert pipeline.seen[-1].version == "1"

    pipeline.answer = refusal("triton_unavailable", "the inference server is unreachable", 503)
    assert client.is_model_ready("clf", headers=AUTH) is False

    pipeline.answer = refusal("invalid_token", "the token is not valid", 401)
    with pytest.raises(InferenceServerException) as exc:
        client.is_model_ready("clf", headers={"authorization": "Bearer nope"})
    assert exc.value.status() == "StatusCode.UNAUTHENTICATED"
    assert exc.value.message() == "invalid_token: the token is not valid"


def test_server_health_is_public_and_local(pipeline, client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert pipeline.seen == []


# -- refusals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "grpc_code"),
    [
        (400, "unknown_input", grpc.StatusCode.INVALID_ARGUMENT),
        (401, "missing_token", grpc.StatusCode.UNAUTHENTICATED),
        (403, "insufficient_scope", grpc.StatusCode.PERMISSION_DENIED),
        (404, "model_not_found", grpc.StatusCode.NOT_FOUND),
        (409, "model_not_deployed", grpc.StatusCode.FAILED_PRECONDITION),
        (413, "request_too_large", grpc.StatusCode.RESOURCE_EXHAUSTED),
        (429, "rate_limited", grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, "internal_error", grpc.StatusCode.INTERNAL),
        (502, "triton_error", grpc.StatusCode.INTERNAL),
        (503, "audit_unavailable", grpc.StatusCode.UNAVAILABLE),
        (504, "triton_timeout", grpc.StatusCode.DEADLINE_EXCEEDED),
        (408, "request_timeout", grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_refusals_map_to_grpc_status_with_the_stable_code(pipeline, stub, status, code, grpc_code):
    pipeline.answer = refusal(code, f"refused because {code}", status, retry_after="7" if status == 429 else None)
    request = pb.ModelInferRequest(model_name="clf")
    request.inputs.add(name="x", datatype="INT32", shape=[1]).contents.int_contents.append(1)
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(request, metadata=[("authorization", TOKEN), ("x-request-id", "trace-1")])
    err = exc.value
    trailing = dict(err.trailing_metadata())
    assert err.code() == grpc_code
    assert err.details() == f"{code}: refused because {code}"
    assert trailing[ERROR_CODE_KEY] == code
    assert trailing["x-request-id"] == "trace-1" == pipeline.seen[-1].request_id
    assert trailing.get("retry-after") == ("7" if status == 429 else None)


def test_the_token_metadata_passes_through_untouched_and_its_absence_is_none(pipeline, client):
    pipeline.answer = Outbound(200, b"", [])
    client.is_model_ready("clf", headers={"authorization": "Bearer a.b-c_d", "x-request-id": "bad id!"})
    client.is_model_ready("clf")
    with_token, without = pipeline.seen
    assert with_token.authorization == "Bearer a.b-c_d"
    assert pipeline.client_request_ids == ["", ""]  # "bad id!" is not a valid id: the pipeline makes one
    assert without.authorization is None


def test_an_oversized_message_is_refused_by_grpc_and_reported_for_audit(pipeline, client):
    big = np.zeros((1, LIMIT // 4 + 1), dtype=np.float32)
    g_in = grpcclient.InferInput("features", list(big.shape), "FP32").set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as exc:
        client.infer("clf", [g_in], headers=AUTH)
    assert exc.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max" in exc.value.message()
    wait_for(lambda: pipeline.refused)
    inbound, err = pipeline.refused[0]
    assert err.code == "request_too_large" and inbound.authorization == TOKEN and inbound.kind == INFER
    assert pipeline.seen == []  # nothing reached the pipeline's forwarding path


def test_a_malformed_message_is_invalid_argument_and_audited(pipeline, server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as exc:
        call(b"\x0a\xff\xff\xff", metadata=list(AUTH.items()))
    channel.close()
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == "invalid_request: the request is not a valid inference.ModelInferRequest message"
    ((inbound, err),) = pipeline.refused
    assert err.code == "invalid_request" and inbound.authorization == TOKEN
    assert pipeline.seen == []


def test_without_a_refuse_hook_malformed_messages_are_still_refused(pipeline):
    srv = ServerThread(pipeline, with_refuse=False)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
        with pytest.raises(grpc.RpcError) as exc:
            call(b"\x0a\x05ab", metadata=list(AUTH.items()))
        channel.close()
    finally:
        srv.stop()
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pipeline.seen == [] and pipeline.refused == []


def _shared_memory(r):
    r.inputs.add(name="x", datatype="FP32", shape=[1]).parameters["shared_memory_region"].string_param = "r"


def _fp16_in_a_typed_field(r):
    r.inputs.add(name="x", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)


def _int8_out_of_range(r):
    r.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(300)


def _raw_contents_not_one_per_input(r):
    r.inputs.add(name="a", datatype="FP32", shape=[1])
    r.inputs.add(name="b", datatype="FP32", shape=[1])
    r.raw_input_contents.append(b"\0\0\0\0")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_shared_memory, "shared_memory_not_supported: input 'x' names a shared-memory region"),
        (_fp16_in_a_typed_field, "input 'x' is FP16: give its values in raw_input_contents"),
        (_int8_out_of_range, "input 'x' has values out of range for INT8"),
        (_raw_contents_not_one_per_input, "raw_input_contents has 1 entries for 2 inputs"),
    ],
)
def test_requests_that_cannot_be_translated_are_refused_through_the_pipeline(pipeline, stub, build, message):
    request = pb.ModelInferRequest(model_name="clf")
    build(request)
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(request, metadata=list(AUTH.items()))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in exc.value.details()
    ((inbound, _),) = pipeline.refused
    assert inbound.model == "clf" and pipeline.seen == []


def test_calls_the_gateway_does_not_offer_are_unimplemented_with_a_reason(client, stub):
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_config("clf", headers=AUTH)
    assert exc.value.status() == "StatusCode.UNIMPLEMENTED" and "portal" in exc.value.message()
    with pytest.raises(grpc.RpcError) as exc:
        list(stub.ModelStreamInfer(iter([pb.ModelInferRequest(model_name="clf")])))
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED and "ModelInfer" in exc.value.details()


# -- cancellation and deadlines ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_call_given_up_mid_flight_leaves_the_pipeline_to_finish_and_nothing_stuck(
    pipeline, server, stub, how, caplog
):
    caplog.set_level(logging.INFO, logger="apps.gateway.dataplane.grpc_adapter")
    pipeline.gate = server.run(_event())
    pipeline.answer = Outbound(200, b"", [])
    request = pb.ModelReadyRequest(name="clf")
    if how == "deadline":
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelReady(request, timeout=0.3, metadata=list(AUTH.items()))
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        future = stub.ModelReady.future(request, metadata=list(AUTH.items()))
        wait_for(lambda: pipeline.seen)
        future.cancel()
        assert future.cancelled()
    wait_for(lambda: any("ended by the client" in r.getMessage() for r in caplog.records))  # the server saw it
    assert pipeline.finished == []  # the pipeline is still at work: the call's end did not cancel it
    server.loop.call_soon_threadsafe(pipeline.gate.set)
    wait_for(lambda: pipeline.finished == ["done"])  # it finished (and would have audited), not cancelled
    assert stub.ModelReady(request, metadata=list(AUTH.items())).ready is True  # and the server serves on


async def _event() -> asyncio.Event:
    return asyncio.Event()


def test_a_message_that_does_not_arrive_in_time_is_refused(pipeline):
    srv = ServerThread(pipeline, message_timeout=0.3)
    release = threading.Event()

    def never_sends():  # headers go out; the one message never does
        release.wait(10)
        yield from ()

    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        call = channel.stream_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as exc:
            call(never_sends(), metadata=list(AUTH.items()), timeout=10)
        release.set()
        channel.close()
    finally:
        release.set()
        srv.stop()
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert exc.value.details().startswith("request_timeout: the request message did not arrive within 0.3 s")
    ((inbound, err),) = pipeline.refused
    assert err.code == "request_timeout" and inbound.authorization == TOKEN and pipeline.seen == []


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B2001:db8::7%5D:443", "2001:db8::7"),
        ("unix:/run/sovereign.sock", None),
        ("", None),
    ],
)
def test_peer_address(peer, address):
    assert peer_address(peer) == address
