"""Unit tests of inference_backend.signature."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference_backend.demo_model import build_demo_onnx, build_test_onnx
from inference_backend.signature import TRITON_TO_NUMPY, InvalidModelError, read_onnx_signature


def _model(inputs, outputs, nodes, initializer=(), ir_version=9):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version
    return model.SerializeToString()


def test_demo_model_signature():
    assert read_onnx_signature(build_demo_onnx()) == {
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 3]}],
        "batch_dynamic": True,
    }


def test_demo_and_test_models_are_deterministic():
    assert build_demo_onnx() == build_demo_onnx()
    assert build_test_onnx(6, 2, seed=1) == build_test_onnx(6, 2, seed=1)
    assert build_test_onnx(6, 2, seed=1) != build_test_onnx(6, 2, seed=2)
    assert read_onnx_signature(build_test_onnx(6, 2, seed=1))["outputs"] == [
        {"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 2]}
    ]


def test_initializers_are_not_inputs_and_types_map():
    weight = numpy_helper.from_array(np.ones((3,), dtype=np.int64), "W")
    data = _model(
        inputs=[
            helper.make_tensor_value_info("X", TensorProto.INT64, ["n", 3]),
            helper.make_tensor_value_info("W", TensorProto.INT64, [3]),  # old exporters list initializers
            helper.make_tensor_value_info("S", TensorProto.STRING, ["n"]),
            helper.make_tensor_value_info("F", TensorProto.FLOAT16, ["n", None]),
        ],
        outputs=[
            helper.make_tensor_value_info("Y", TensorProto.INT64, ["n", 3]),
            helper.make_tensor_value_info("S2", TensorProto.STRING, ["n"]),
            helper.make_tensor_value_info("F2", TensorProto.FLOAT16, ["n", None]),
        ],
        nodes=[
            helper.make_node("Add", ["X", "W"], ["Y"]),
            helper.make_node("Identity", ["S"], ["S2"]),
            helper.make_node("Identity", ["F"], ["F2"]),
        ],
        initializer=[weight],
    )
    sig = read_onnx_signature(data)
    assert [(t["name"], t["datatype"], t["shape"]) for t in sig["inputs"]] == [
        ("X", "INT64", [-1, 3]),
        ("S", "BYTES", [-1]),
        ("F", "FP16", [-1, -1]),
    ]
    assert [t["datatype"] for t in sig["outputs"]] == ["INT64", "BYTES", "FP16"]
    assert sig["batch_dynamic"] is True
    assert all(t["datatype"] in TRITON_TO_NUMPY for t in sig["inputs"] + sig["outputs"])
    assert np.dtype(TRITON_TO_NUMPY["FP16"]) == np.float16


def test_fixed_first_dim_is_not_batch_dynamic():
    data = _model(
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])],
        [helper.make_node("Relu", ["X"], ["Y"])],
    )
    sig = read_onnx_signature(data)
    assert sig["inputs"][0]["shape"] == [1, 4]
    assert sig["batch_dynamic"] is False


@pytest.mark.parametrize(
    "data", [b"", b"this is not a model at all \x00\xff\xfe", b"\x08\x07", np.arange(64).tobytes()]
)
def test_garbage_is_not_onnx(data):
    with pytest.raises(InvalidModelError) as err:
        read_onnx_signature(data)
    assert err.value.code == "not_onnx"


def test_checker_failure_is_invalid_onnx():
    data = _model(
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4])],
        [helper.make_node("Relu", ["MISSING"], ["Y"])],  # input that nothing produces
    )
    with pytest.raises(InvalidModelError) as err:
        read_onnx_signature(data)
    assert err.value.code == "invalid_onnx"
    assert "MISSING" in str(err.value)


def test_unsupported_dtype():
    data = _model(
        [helper.make_tensor_value_info("X", TensorProto.COMPLEX64, ["n", 2])],
        [helper.make_tensor_value_info("Y", TensorProto.COMPLEX64, ["n", 2])],
        [helper.make_node("Identity", ["X"], ["Y"])],
    )
    with pytest.raises(InvalidModelError) as err:
        read_onnx_signature(data)
    assert err.value.code == "unsupported_dtype"
    assert "COMPLEX64" in str(err.value)


def test_output_without_shape_is_rejected():
    data = _model(
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [helper.make_node("Relu", ["X"], ["Y"])],
    )
    with pytest.raises(InvalidModelError) as err:
        read_onnx_signature(data)
    assert err.value.code in ("invalid_onnx", "unsupported_shape")


class TestBreakingChanges:
    """inference_backend.signature.breaking_changes: what the registry (at upload) and deployments (at
    rollout) both call a breaking change."""

    OLD = {
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 3]}],
        "batch_dynamic": True,
    }

    def test_same_signature_and_a_relaxed_dimension_are_compatible(self):
        from inference_backend.signature import breaking_changes

        relaxed = {**self.OLD, "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, -1]}]}
        assert breaking_changes(self.OLD, self.OLD) == []
        assert breaking_changes(self.OLD, relaxed) == []

    def test_renamed_output_changed_type_new_input_and_lost_batching_are_breaking(self):
        from inference_backend.signature import breaking_changes

        renamed = {**self.OLD, "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]}]}
        assert breaking_changes(self.OLD, renamed) == ["output 'PROBABILITIES' removed or renamed"]
        retyped = {**self.OLD, "inputs": [{"name": "INPUT", "datatype": "FP64", "shape": [-1, 4]}]}
        assert breaking_changes(self.OLD, retyped) == ["input 'INPUT' datatype FP32 → FP64"]
        extra = {**self.OLD, "inputs": [*self.OLD["inputs"], {"name": "MASK", "datatype": "BOOL", "shape": [-1]}]}
        assert breaking_changes(self.OLD, extra) == ["input 'MASK' added"]
        fixed = {**self.OLD, "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 5]}]}
        assert breaking_changes(self.OLD, fixed) == ["input 'INPUT' shape [-1, 4] → [-1, 5]"]
        unbatched = {**self.OLD, "batch_dynamic": False}
        assert breaking_changes(self.OLD, unbatched) == ["batching: the first dimension is no longer dynamic"]
        assert breaking_changes(self.OLD, {"kind": "llm"}) == ["kind changed: tensor → llm"]
