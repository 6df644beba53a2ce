"""Unit tests of the python-backend model with a stand-in for triton_python_backend_utils.

They cover decryption on load and the cross-request batching of execute();
test_triton_integration.py runs the same file inside a real tritonserver.
"""

import base64
import json
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from inference_backend import triton_model
from inference_backend.config import BatchingSettings, render_config
from inference_backend.demo_model import build_test_onnx
from inference_backend.envelope import encrypt_artifact, generate_dek, sha256_hex
from inference_backend.kek import LocalKeystoreProvider
from inference_backend.signature import read_onnx_signature


class FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, np.asarray(array)

    def as_numpy(self):
        return self.array


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


class FakeModelException(Exception):
    pass


class FakeTritonError:
    INTERNAL, INVALID_ARG = "INTERNAL", "INVALID_ARG"

    def __init__(self, message, code=INTERNAL):
        self.message, self.code = message, code


FAKE_PB_UTILS = SimpleNamespace(
    Tensor=FakeTensor,
    InferenceResponse=FakeResponse,
    TritonError=FakeTritonError,
    TritonModelException=FakeModelException,
    get_input_tensor_by_name=lambda request, name: request.get(name),
)


class CountingSession:
    def __init__(self, session):
        self.session, self.runs = session, []

    def run(self, output_names, feeds):
        self.runs.append({k: v.shape for k, v in feeds.items()})
        return self.session.run(output_names, feeds)


@pytest.fixture
def plaintext():
    return build_test_onnx(6, 3, seed=11)


@pytest.fixture
def host(tmp_path, monkeypatch, plaintext):
    """A model version directory with the encrypted artifact and this host's KEK in the environment."""
    monkeypatch.setattr(triton_model, "pb_utils", FAKE_PB_UTILS)
    monkeypatch.chdir(tmp_path)  # initialize() moves the process to an empty directory: undone after the test
    kek_file = tmp_path / "keystore" / "kek.bin"
    monkeypatch.setenv("SOVEREIGN_KEK_PROVIDER", "local")
    monkeypatch.setenv("SOVEREIGN_LOCAL_KEK_FILE", str(kek_file))
    provider = LocalKeystoreProvider(kek_file)
    dek, aad = generate_dek(), "sovereign:model:7:v1"
    (tmp_path / "repo" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "1" / "model.onnx.enc").write_bytes(encrypt_artifact(plaintext, dek, aad.encode()))
    params = {
        "artifact_file": "model.onnx.enc",
        "wrapped_dek": base64.b64encode(provider.wrap(dek)).decode(),
        "kek_id": provider.kek_id,
        "artifact_aad": aad,
        "artifact_sha256": sha256_hex(plaintext),
    }
    return SimpleNamespace(repo=tmp_path / "repo", params=params, provider=provider)


def _args(host, params=None, batching=None):
    sig = read_onnx_signature(build_test_onnx(6, 3, seed=11))
    config = render_config("m", sig, batching or BatchingSettings(), params or host.params)
    return {"model_config": json.dumps(config), "model_repository": str(host.repo), "model_version": "1"}


def _loaded(host, **kwargs):
    model = triton_model.TritonPythonModel()
    model.initialize(_args(host, **kwargs))
    return model


def test_execute_batches_requests_into_one_run(host, plaintext):
    model = _loaded(host)
    model.session = counting = CountingSession(model.session)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(n, 6)).astype(np.float32) for n in (1, 3, 2)]
    responses = model.execute([{"INPUT": FakeTensor("INPUT", x)} for x in inputs])
    assert counting.runs == [{"INPUT": (6, 6)}]
    reference = ort.InferenceSession(plaintext, providers=["CPUExecutionProvider"])
    for x, response in zip(inputs, responses, strict=True):
        assert response.error is None
        expected = reference.run(None, {"INPUT": x})[0]
        assert response.outputs["OUTPUT"].shape == (len(x), 3)
        assert np.allclose(response.outputs["OUTPUT"], expected, atol=1e-6)


def test_bad_request_fails_alone(host, plaintext):
    model = _loaded(host)
    good = np.ones((2, 6), dtype=np.float32)
    responses = model.execute(
        [
            {"INPUT": FakeTensor("INPUT", good)},
            {"OTHER": FakeTensor("OTHER", good)},  # missing INPUT
            {"INPUT": FakeTensor("INPUT", np.ones((1, 5), dtype=np.float32))},  # wrong feature count
            {"INPUT": FakeTensor("INPUT", good * 2)},
        ]
    )
    assert responses[0].error is None and responses[3].error is None
    assert "missing input 'INPUT'" in responses[1].error.message
    assert "inference failed" in responses[2].error.message
    # what the caller sent is refused as its fault (Triton answers 400), not the server's (500)
    assert responses[1].error.code == responses[2].error.code == "INVALID_ARG"
    expected = ort.InferenceSession(plaintext).run(None, {"INPUT": good * 2})[0]
    assert np.allclose(responses[3].outputs["OUTPUT"], expected, atol=1e-6)


class PoisonSession(CountingSession):
    """Fails any run whose input contains NaN, like a model rejecting one request's values."""

    def run(self, output_names, feeds):
        self.runs.append({k: v.shape for k, v in feeds.items()})
        if any(np.isnan(v).any() for v in feeds.values()):
            raise ValueError("poisoned input")
        return self.session.run(output_names, feeds)


def test_a_request_that_breaks_the_batch_run_fails_alone(host, plaintext):
    model = _loaded(host)
    model.session = poison = PoisonSession(model.session)
    good = np.full((2, 6), 0.5, dtype=np.float32)
    bad = np.full((1, 6), np.nan, dtype=np.float32)
    responses = model.execute([{"INPUT": FakeTensor("INPUT", x)} for x in (good, bad, good * 3)])
    assert poison.runs[0] == {"INPUT": (5, 6)}  # one batched attempt, then one run per request
    assert len(poison.runs) == 4
    assert "inference failed: poisoned input" in responses[1].error.message
    reference = ort.InferenceSession(plaintext)
    for x, response in ((good, responses[0]), (good * 3, responses[2])):
        assert response.error is None
        assert np.allclose(response.outputs["OUTPUT"], reference.run(None, {"INPUT": x})[0], atol=1e-6)


def test_unbatched_config_runs_each_request(host):
    model = _loaded(host, batching=BatchingSettings(max_batch_size=0, dynamic_batching=False))
    assert model.batched is False
    model.session = counting = CountingSession(model.session)
    responses = model.execute([{"INPUT": FakeTensor("INPUT", np.ones((n, 6), np.float32))} for n in (1, 2)])
    assert len(counting.runs) == 2 and all(r.error is None for r in responses)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"wrapped_dek": base64.b64encode(b"\x01" * 40).decode()}, "cannot unwrap data key on this Triton host"),
        ({"wrapped_dek": "%%%"}, "cannot unwrap data key on this Triton host: the wrapped_dek parameter"),
        ({"kek_id": "local:0000000000000000"}, "wrapped with KEK local:0000000000000000, this host has KEK"),
        ({"artifact_aad": "another model"}, "cannot decrypt model artifact model.onnx.enc"),
        ({"artifact_sha256": "0" * 64}, "integrity check failed"),
        ({"artifact_file": "../model.onnx.enc"}, "must be a file name"),
        ({"artifact_file": "missing.enc"}, "cannot read encrypted artifact missing.enc"),
    ],
)
def test_load_failures_are_explained(host, change, message):
    with pytest.raises(FakeModelException, match=message):
        _loaded(host, params={**host.params, **change})


def test_missing_parameters(host):
    params = {k: v for k, v in host.params.items() if k != "kek_id"}
    with pytest.raises(FakeModelException, match="missing: kek_id"):
        _loaded(host, params=params)


def test_host_without_kek_configuration(host, monkeypatch):
    monkeypatch.delenv("SOVEREIGN_LOCAL_KEK_FILE")
    with pytest.raises(
        FakeModelException, match="cannot unwrap data key on this Triton host: SOVEREIGN_LOCAL_KEK_FILE"
    ):
        _loaded(host)


def test_load_writes_nothing(host, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    _loaded(host).finalize()
    assert sorted(p for p in tmp_path.rglob("*")) == before
