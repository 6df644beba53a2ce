"""Integration tests on a real tritonserver: encrypted artifacts loaded through the repository API."""

import base64
import os
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inference_backend import triton_model
from inference_backend.client import TritonClient, TritonError
from inference_backend.config import BatchingSettings, render_config
from inference_backend.demo_model import IR_VERSION, OPSET, build_demo_onnx, build_test_onnx
from inference_backend.envelope import encrypt_artifact, generate_dek, sha256_hex
from inference_backend.server import EXIT_TIMEOUT_SECS, PROJECT_ROOT, free_port
from inference_backend.signature import read_onnx_signature
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

MODEL_PY = Path(triton_model.__file__).read_bytes()
SEED = 2718281  # distinctive weights: the plaintext scan below must not meet them by chance


def deploy(host, name, plaintext, *, settings=None, tamper=None):
    """Encrypt ``plaintext`` and load it as ``name``; ``tamper`` may rewrite the config parameters."""
    dek, aad = generate_dek(), f"sovereign:{name}:v1"
    params = {
        "artifact_file": "model.onnx.enc",
        "wrapped_dek": base64.b64encode(host.provider.wrap(dek)).decode(),
        "kek_id": host.provider.kek_id,
        "artifact_aad": aad,
        "artifact_sha256": sha256_hex(plaintext),
    }
    if tamper:
        params = tamper(params)
    config = render_config(name, read_onnx_signature(plaintext), settings or BatchingSettings(), params)
    files = {"1/model.py": MODEL_PY, "1/model.onnx.enc": encrypt_artifact(plaintext, dek, aad.encode())}
    host.client.load_model(name, config, files, timeout=120)


@pytest.fixture(scope="module")
def plaintext():
    return build_test_onnx(16, 8, seed=SEED)


@pytest.fixture(scope="module")
def reference(plaintext):
    return ort.InferenceSession(plaintext, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model(triton_host, plaintext):
    settings = BatchingSettings(max_batch_size=32, preferred_batch_sizes=(16, 32), max_queue_delay_us=20_000)
    deploy(triton_host, "ib_secret", plaintext, settings=settings)
    wait_for(lambda: triton_host.client.model_ready("ib_secret"), what="ib_secret to be ready")
    return "ib_secret"


def _infer(client, name, x):
    item = {"name": "INPUT", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    out = client.infer_json(name, [item])["outputs"][0]
    assert out["name"] == "OUTPUT" and out["datatype"] == "FP32"
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def test_infer_json_matches_onnxruntime(triton_host, model, reference):
    x = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
    got = _infer(triton_host.client, model, x)
    assert got.shape == (5, 8)
    assert np.allclose(got, reference.run(None, {"INPUT": x})[0], atol=1e-5)
    meta = triton_host.client.model_metadata(model)
    assert meta["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 16]}]


def _metric(text, metric, model):
    pattern = rf'^{metric}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\d+)'
    return sum(int(m) for m in re.findall(pattern, text, flags=re.M))


def test_concurrent_requests_are_batched_and_answered_correctly(triton_host, model, reference):
    client, metrics_url = triton_host.client, triton_host.server.metrics_url
    before = client.metrics(metrics_url)
    requests_before = _metric(before, "nv_inference_request_success", model)
    execs_before = _metric(before, "nv_inference_exec_count", model)
    rng = np.random.default_rng(2)
    inputs = [rng.normal(size=(int(rng.integers(1, 4)), 16)).astype(np.float32) for _ in range(96)]
    threads = 16
    barrier = threading.Barrier(threads)

    def worker(offset):
        results = []
        for index in range(offset, len(inputs), threads):
            if index < threads:
                barrier.wait(timeout=30)  # start together so requests meet in Triton's queue
            results.append((index, _infer(client, model, inputs[index])))
        return results

    with ThreadPoolExecutor(threads) as pool:
        answers = dict(item for chunk in pool.map(worker, range(threads)) for item in chunk)
    assert len(answers) == len(inputs)
    for index, x in enumerate(inputs):
        assert answers[index].shape == (len(x), 8)
        assert np.allclose(answers[index], reference.run(None, {"INPUT": x})[0], atol=1e-5), index

    seen = {}

    def counts_reached():
        text = client.metrics(metrics_url)
        seen["requests"] = _metric(text, "nv_inference_request_success", model) - requests_before
        seen["executions"] = _metric(text, "nv_inference_exec_count", model) - execs_before
        return seen["requests"] >= len(inputs)

    wait_for(counts_reached, what=lambda: f"the request metrics to count {len(inputs)} requests (last: {seen})")
    requests, executions = seen["requests"], seen["executions"]
    assert requests == len(inputs), seen
    assert 0 < executions < requests, f"no cross-request batching: {requests} requests in {executions} executions"


def test_load_with_garbled_wrapped_key_fails_with_the_reason(triton_host, model, plaintext):
    def garble(params):
        wrapped = bytearray(base64.b64decode(params["wrapped_dek"]))
        wrapped[5] ^= 0xFF
        return {**params, "wrapped_dek": base64.b64encode(bytes(wrapped)).decode()}

    with pytest.raises(TritonError) as err:
        deploy(triton_host, "ib_garbled", plaintext, tamper=garble)
    assert "cannot unwrap data key on this Triton host" in err.value.message
    assert err.value.status == 400
    assert not triton_host.client.model_ready("ib_garbled")

    with pytest.raises(TritonError, match=r"wrapped with KEK local:00000000deadbeef, this host has KEK local:"):
        deploy(triton_host, "ib_foreign", plaintext, tamper=lambda p: {**p, "kek_id": "local:00000000deadbeef"})
    # The failed loads did not disturb the model that is serving.
    assert triton_host.client.model_ready(model)
    assert _infer(triton_host.client, model, np.zeros((1, 16), np.float32)).shape == (1, 8)


def test_demo_model_load_and_unload(triton_host):
    deploy(triton_host, "ib_demo", build_demo_onnx(), settings=BatchingSettings(dynamic_batching=False))
    client = triton_host.client
    wait_for(lambda: client.model_ready("ib_demo"), what="ib_demo to be ready")
    item = {"name": "INPUT", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 0, 0, 0, 0]}
    probabilities = np.asarray(client.infer_json("ib_demo", [item])["outputs"][0]["data"]).reshape(2, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    client.unload_model("ib_demo")
    wait_for(lambda: not client.model_ready("ib_demo"), what="ib_demo to be unloaded")


def _lookup_onnx() -> bytes:
    """A model whose input is an index into a table of 10 rows: Triton's own checks (type, shape) pass
    for any index, onnxruntime refuses one out of range — a fault of the caller found by the backend."""
    table = onnx.numpy_helper.from_array(np.arange(30, dtype=np.float32).reshape(10, 3), "TABLE")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["TABLE", "INDEX"], ["OUTPUT"], axis=0)],
        "lookup",
        [onnx.helper.make_tensor_value_info("INDEX", onnx.TensorProto.INT64, [None, 1])],
        [onnx.helper.make_tensor_value_info("OUTPUT", onnx.TensorProto.FLOAT, [None, 1, 3])],
        [table],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def test_an_input_the_model_refuses_is_the_callers_fault_not_a_server_error(triton_host):
    """Triton answers 400 (INVALID_ARG), not 500, when onnxruntime refuses what the caller sent: the
    gateway's circuit breaker and a canary's error rate count 5xx as the server's or version's fault."""
    deploy(triton_host, "ib_lookup", _lookup_onnx(), settings=BatchingSettings(dynamic_batching=False))
    client = triton_host.client
    index = {"name": "INDEX", "shape": [1, 1], "datatype": "INT64"}
    answer = client.infer_json("ib_lookup", [{**index, "data": [4]}])
    assert answer["outputs"][0]["data"] == [12.0, 13.0, 14.0]
    with pytest.raises(TritonError) as err:
        client.infer_json("ib_lookup", [{**index, "data": [99]}])
    assert err.value.status == 400, err.value.message
    assert "out of data bounds" in err.value.message
    client.unload_model("ib_lookup")


def test_module_cli_runs_in_the_foreground_until_sigterm(tmp_path):
    ports = [free_port() for _ in range(3)]
    while len(set(ports)) < 3:
        ports = [free_port() for _ in range(3)]
    command = [sys.executable, "-m", "inference_backend.server", "--workdir", str(tmp_path)]
    command += ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = TritonClient(f"http://127.0.0.1:{ports[0]}")
        wait_for(lambda: proc.poll() is not None or client.server_ready(), 120, "the CLI's tritonserver")
        assert proc.poll() is None, proc.stdout.read().decode()
        client.close()
        proc.send_signal(signal.SIGTERM)
        # Well within Triton's exit timeout: no connection (ours or the CLI's readiness probe) lingers.
        assert proc.wait(timeout=EXIT_TIMEOUT_SECS - 3) == 0
        assert not client.server_ready()
        assert b"ready at http://127.0.0.1:" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _files_containing(roots, needle):
    """Paths of regular files under ``roots`` whose bytes contain ``needle`` (read in overlapping chunks)."""
    found, chunk = [], 1 << 20
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                try:
                    if not os.path.isfile(path) or os.path.islink(path):
                        continue
                    with open(path, "rb") as handle:
                        tail = b""
                        while block := handle.read(chunk):
                            if needle in tail + block:
                                found.append(path)
                                break
                            tail = block[-(len(needle) - 1) :]
                except OSError:
                    continue
    return found


def test_plaintext_model_never_reaches_the_disk(triton_host, model, plaintext, tmp_path):
    weights = next(i for i in onnx.load_from_string(plaintext).graph.initializer if i.name == "W").raw_data
    needle = weights[128:192]
    assert len(needle) == 64 and plaintext.count(needle) == 1
    roots = [str(triton_host.workdir), str(tmp_path), "/tmp", "/dev/shm"]
    # Positive control: the scan does find the window when it is on disk.
    control = tmp_path / "control.bin"
    control.write_bytes(b"x" * 1_048_570 + needle)  # straddles the scanner's chunk boundary
    assert _files_containing([str(tmp_path)], needle) == [str(control)]
    control.unlink()
    assert _infer(triton_host.client, model, np.ones((1, 16), np.float32)).shape == (1, 8)  # model loaded, in use
    assert _files_containing(roots, needle) == []
