"""Unit tests of inference_backend.config (Triton model config rendering)."""

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from inference_backend.config import BatchingSettings, render_config, to_pbtxt
from inference_backend.demo_model import build_demo_onnx
from inference_backend.signature import read_onnx_signature

DEMO_SIG = read_onnx_signature(build_demo_onnx())
FIXED_SIG = {
    "inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": [1, 28, 28]}],
    "outputs": [{"name": "LABEL", "datatype": "BYTES", "shape": [1]}],
    "batch_dynamic": False,
}
PARAMS = {
    "artifact_file": "model.onnx.enc",
    "wrapped_dek": "q83vEjRWeJA=",
    "artifact_aad": 'sovereign:modèle "x"\\n\n\t',
}


def test_render_batched_config():
    settings = BatchingSettings(
        max_batch_size=16, preferred_batch_sizes=(4, 8), max_queue_delay_us=500, instance_count=2
    )
    assert render_config("demo", DEMO_SIG, settings, {"a": "b"}) == {
        "name": "demo",
        "backend": "python",
        "max_batch_size": 16,
        "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "PROBABILITIES", "data_type": "TYPE_FP32", "dims": [3]}],
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
        "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 500},
        "parameters": {"a": {"string_value": "b"}},
    }


def test_dynamic_batching_disabled_keeps_batch_dim_out_of_dims():
    config = render_config("demo", DEMO_SIG, BatchingSettings(dynamic_batching=False), backend="onnxruntime")
    assert config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [4]
    assert "dynamic_batching" not in config and "parameters" not in config


def test_not_batch_dynamic_forces_full_dims_and_no_batching():
    config = render_config("mnist", FIXED_SIG, BatchingSettings(max_batch_size=32, preferred_batch_sizes=(8,)))
    assert config["max_batch_size"] == 0
    assert "dynamic_batching" not in config
    assert config["input"] == [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": [1, 28, 28]}]
    assert config["output"] == [{"name": "LABEL", "data_type": "TYPE_STRING", "dims": [1]}]


def test_per_item_scalar_is_reshaped():
    sig = {
        "inputs": [{"name": "X", "datatype": "INT64", "shape": [-1]}],
        "outputs": [{"name": "Y", "datatype": "BOOL", "shape": [-1, 2]}],
        "batch_dynamic": True,
    }
    config = render_config("scalar", sig, BatchingSettings())
    assert config["input"] == [{"name": "X", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}]
    assert config["output"] == [{"name": "Y", "data_type": "TYPE_BOOL", "dims": [2]}]


@pytest.mark.parametrize(
    ("name", "sig", "batching", "params"),
    [
        ("demo", DEMO_SIG, BatchingSettings(preferred_batch_sizes=(2, 4), kind="KIND_GPU"), PARAMS),
        ("mnist", FIXED_SIG, BatchingSettings(), None),
        ("nobatch", DEMO_SIG, BatchingSettings(max_batch_size=0, dynamic_batching=False), {"k": ""}),
        (
            "scalar",
            {
                "inputs": [{"name": "X", "datatype": "FP64", "shape": [-1]}],
                "outputs": [{"name": "Y", "datatype": "INT8", "shape": [-1, 3, -1]}],
                "batch_dynamic": True,
            },
            BatchingSettings(),
            None,
        ),
    ],
)
def test_pbtxt_parses_to_the_same_model_config(name, sig, batching, params):
    config = render_config(name, sig, batching, params)
    text = to_pbtxt(config)
    from_text = text_format.Parse(text, model_config_pb2.ModelConfig())
    from_json = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    assert from_text == from_json
    assert from_text.name == name
    if params:
        assert dict(from_text.parameters.items()).keys() == params.keys()
        for key, value in params.items():
            assert from_text.parameters[key].string_value == value


def test_invalid_model_name():
    for bad in ("", "../x", "a b", "a/b"):
        with pytest.raises(ValueError, match="invalid Triton model name"):
            render_config(bad, DEMO_SIG, BatchingSettings())


def test_unsupported_datatype():
    sig = {"inputs": [{"name": "X", "datatype": "COMPLEX", "shape": [-1]}], "outputs": [], "batch_dynamic": True}
    with pytest.raises(ValueError, match="COMPLEX"):
        render_config("x", sig, BatchingSettings())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "KIND_TPU"}, "kind must be one of KIND_CPU, KIND_GPU"),
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"max_batch_size": 0}, "dynamic_batching needs max_batch_size >= 1"),
        ({"instance_count": 0}, "instance_count"),
        ({"max_queue_delay_us": -5}, "max_queue_delay_us"),
        ({"preferred_batch_sizes": (0,)}, "positive"),
        ({"preferred_batch_sizes": (4, 16)}, "preferred batch size 16 is larger than max_batch_size 8"),
        ({"max_batch_size": True}, "max_batch_size"),
    ],
)
def test_batching_settings_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchingSettings(**kwargs)


def test_batching_settings_are_hashable_values():
    a = BatchingSettings(preferred_batch_sizes=[2, 4])
    assert a.preferred_batch_sizes == (2, 4)
    assert hash(a) == hash(BatchingSettings(preferred_batch_sizes=(2, 4)))
    assert BatchingSettings(max_batch_size=0, dynamic_batching=False).max_batch_size == 0
