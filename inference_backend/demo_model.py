"""Small deterministic ONNX models built in code (no downloads), for demos and tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9  # accepted by onnxruntime >= 1.15


def _linear_softmax(weights: np.ndarray, bias: np.ndarray, input_name: str, output_name: str, graph_name: str) -> bytes:
    in_features, out_features = weights.shape
    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", [input_name, "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [output_name], axis=-1),
        ],
        name=graph_name,
        inputs=[helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", in_features])],
        outputs=[helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", out_features])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sovereign")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_demo_onnx() -> bytes:
    """Return the demo classifier: ``INPUT`` FP32 [batch, 4] -> ``PROBABILITIES`` FP32 [batch, 3].

    ``PROBABILITIES = Softmax(INPUT @ W + b)`` with fixed weights; the bytes are identical on every call.
    """
    weights = np.array(
        [
            [0.5, -0.25, 0.125],
            [-1.0, 0.75, 0.25],
            [0.25, 0.5, -0.75],
            [1.5, -0.5, -1.0],
        ],
        dtype=np.float32,
    )
    bias = np.array([0.1, -0.2, 0.05], dtype=np.float32)
    return _linear_softmax(weights, bias, "INPUT", "PROBABILITIES", "sovereign_demo")


def build_demo_v2_onnx() -> bytes:
    """Return v2 of the demo classifier: the same signature as `build_demo_onnx` (``INPUT`` FP32 [batch, 4] ->
    ``PROBABILITIES`` FP32 [batch, 3]) with other weights, so upgrading to it is not a breaking change (the
    upgrade of the demo model, docs/rollouts.md). Deterministic."""
    rng = np.random.default_rng(2)
    return _linear_softmax(rng.normal(size=(4, 3)), rng.normal(size=3), "INPUT", "PROBABILITIES", "sovereign_demo")


def build_test_onnx(in_features: int, out_features: int, seed: int) -> bytes:
    """Return a seeded random model: ``INPUT`` FP32 [batch, in_features] -> ``OUTPUT`` FP32 [batch, out_features].

    ``OUTPUT = Softmax(INPUT @ W + b)``; the same arguments always give the same bytes,
    different seeds give different weights.
    """
    if in_features < 1 or out_features < 1:
        raise ValueError("in_features and out_features must be >= 1")
    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, 1.0, size=(in_features, out_features))
    bias = rng.normal(0.0, 0.1, size=(out_features,))
    return _linear_softmax(weights, bias, "INPUT", "OUTPUT", f"sovereign_test_{seed}")
