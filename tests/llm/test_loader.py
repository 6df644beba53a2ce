"""The LLM loader: file sets decrypted in memory with names, digests and keys checked; external
data only from the set's own ``model.onnx.data``, resolved in memory; the Triton config renders
and parses with Triton's own protobuf."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2

from inference_backend.envelope import generate_dek, sha256_hex
from inference_backend.kek import LocalKeystoreProvider
from inference_backend.llm.loader import (
    LoadError,
    decrypt_file_set,
    render_llm_python_config,
    render_llm_python_pbtxt,
    session_from_files,
)
from inference_backend.stream import encrypt_stream


def external_model(location: str = "model.onnx.data", *, offset: int = 0, length: int | None = None):
    """Y = X @ W with W (4x3) kept as external data; returns (model bytes, data bytes, W)."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    tensor = numpy_helper.from_array(w, "W")
    data = b"\0" * offset + tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset), "length": str(length if length is not None else 48)}
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])],
        initializer=[tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), data, w


def test_external_data_resolved_in_memory_from_an_empty_directory(tmp_path, monkeypatch):
    model, data, w = external_model(offset=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    session = session_from_files({"model.onnx": model, "model.onnx.data": data}, intra_op_threads=1)
    x = np.ones((1, 4), dtype=np.float32)
    assert np.allclose(session.run(None, {"X": x})[0], x @ w)
    assert os.listdir(empty) == []


def test_external_data_on_disk_is_never_read(tmp_path, monkeypatch):
    model, data, _ = external_model()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx.data").write_bytes(data)  # a file onnxruntime would happily read
    with pytest.raises(LoadError, match="only model.onnx.data of the same encrypted file set"):
        session_from_files({"model.onnx": model})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"location": "/etc/passwd"}, "keeps its data in '/etc/passwd'"),
        ({"location": "../model.onnx.data"}, "only 'model.onnx.data'"),
        ({"offset": 40}, "points outside model.onnx.data"),
        ({"length": 4096}, "points outside model.onnx.data"),
    ],
)
def test_external_references_outside_the_set_are_refused(kwargs, message):
    offset = kwargs.pop("offset", 0)
    model, data, _ = external_model(offset=0, **kwargs)
    if offset:
        model_proto = onnx.load_from_string(model)
        for entry in model_proto.graph.initializer[0].external_data:
            if entry.key == "offset":
                entry.value = str(offset)
        model = model_proto.SerializeToString()
    with pytest.raises(LoadError, match=message):
        session_from_files({"model.onnx": model, "model.onnx.data": data})


@pytest.fixture
def provider(tmp_path):
    return LocalKeystoreProvider(tmp_path / "keystore" / "kek.bin")


def seal(directory, provider, files: dict[str, bytes], *, tamper=None):
    dek = generate_dek()
    entries = []
    for index, (name, data) in enumerate(files.items()):
        aad = f"test:{name}"
        out = io.BytesIO()
        encrypt_stream(io.BytesIO(data), out, dek, aad.encode(), kek_id=provider.kek_id)
        (directory / f"f{index}.enc").write_bytes(out.getvalue())
        entries.append({"name": name, "file": f"f{index}.enc", "aad": aad, "sha256": sha256_hex(data)})
    if tamper:
        tamper(entries)
    return {
        "wrapped_dek": base64.b64encode(provider.wrap(dek)).decode(),
        "kek_id": provider.kek_id,
        "artifact_files": json.dumps(entries),
    }


FILES = {"model.onnx": b"graph", "tokenizer.json": b"{}", "config.json": b'{"n_layers": 1}'}


def test_decrypt_file_set_round_trip(tmp_path, provider):
    params = seal(tmp_path, provider, FILES)
    assert decrypt_file_set(str(tmp_path), params, provider=provider) == FILES


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda e: e[0].update(name="../model.onnx"), "without path separators"),
        (lambda e: e[0].update(name="model.py"), "not part of the LLM file set"),
        (lambda e: e[0].update(file="sub/f0.enc"), "without path separators"),
        (lambda e: e[0].update(file=".."), "without path separators"),
        (lambda e: e.append(dict(e[0])), "twice"),
        (lambda e: e.pop(), "lacks config.json"),
        (lambda e: e[1].update(sha256="0" * 64), "integrity check failed"),
        (lambda e: e[2].update(aad="test:other"), "cannot decrypt config.json"),
        (lambda e: e[0].update(extra="x"), "entry must be"),
    ],
)
def test_decrypt_file_set_refusals(tmp_path, provider, tamper, message):
    params = seal(tmp_path, provider, FILES, tamper=tamper)
    with pytest.raises(LoadError, match=message):
        decrypt_file_set(str(tmp_path), params, provider=provider)


def test_decrypt_file_set_wrong_key_and_missing_parameters(tmp_path, provider):
    params = seal(tmp_path, provider, FILES)
    other = LocalKeystoreProvider(tmp_path / "other" / "kek.bin")
    with pytest.raises(LoadError, match="cannot unwrap data key"):
        decrypt_file_set(str(tmp_path), params, provider=other)
    with pytest.raises(LoadError, match="missing: wrapped_dek"):
        decrypt_file_set(str(tmp_path), {**params, "wrapped_dek": ""}, provider=provider)
    with pytest.raises(LoadError, match="not valid base64"):
        decrypt_file_set(str(tmp_path), {**params, "wrapped_dek": "!!"}, provider=provider)


def test_rendered_config_parses_with_tritons_protobuf():
    entries = [
        {"name": n, "file": f"{i}.enc", "aad": f"a:{n}", "sha256": "ab" * 32}
        for i, n in enumerate(["model.onnx", "tokenizer.json", "config.json"])
    ]
    params = {"wrapped_dek": "d2Vr", "kek_id": "kek-1", "artifact_files": entries, "prefill_chunk": 32}
    config = render_llm_python_config("chat_smollm2", params, instance_count=2)
    parsed = text_format.Parse(
        render_llm_python_pbtxt("chat_smollm2", params, instance_count=2), model_config_pb2.ModelConfig()
    )
    assert parsed.backend == "python" and parsed.max_batch_size == 0
    assert parsed.model_transaction_policy.decoupled is True
    assert [i.name for i in parsed.input][:3] == ["text_input", "stream", "sampling_parameters"]
    assert parsed.input[1].optional and not parsed.input[0].optional
    assert {o.name: o.data_type for o in parsed.output}["num_output_tokens"] == model_config_pb2.TYPE_UINT32
    assert parsed.instance_group[0].count == 2
    assert json.loads(parsed.parameters["artifact_files"].string_value) == entries
    assert parsed.parameters["prefill_chunk"].string_value == "32"
    assert parsed.parameters["max_active_sequences"].string_value == "8"
    assert config["parameters"]["intra_op_threads"] == {"string_value": "2"}
    with pytest.raises(ValueError, match="unknown llm model parameters"):
        render_llm_python_config("m", {**params, "artifact_file": "x"})
    with pytest.raises(LoadError, match="not part of the LLM file set"):
        render_llm_python_config("m", {**params, "artifact_files": [{**entries[0], "name": "x.py"}]})
