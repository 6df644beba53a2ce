"""A tiny language-model file set that follows the decoder contract (COMMON §1) for registry
tests that need no real weights (the real SmolLM2 set comes from tests/llm/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def tiny_decoder(n_layers: int = 2, *, external: dict | None = None, extra_input: bool = False) -> bytes:
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 8])]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_f", "axis"], ["ids3"]),
        helper.make_node("Mul", ["ids3", "w"], ["logits"]),
    ]
    weight = numpy_helper.from_array(np.arange(8, dtype=np.float32), "w")
    if external is not None:
        weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[8])
        weight.data_location = TensorProto.EXTERNAL
        for key, value in external.items():
            entry = weight.external_data.add()
            entry.key, entry.value = key, str(value)
    initializers = [weight, numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis")]
    for i in range(n_layers):
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, ["b", 1, "p", 4])
            )
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, ["b", 1, "t", 4]))
            nodes.append(helper.make_node("Identity", [f"past_key_values.{i}.{kind}"], [f"present.{i}.{kind}"]))
    if extra_input:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]))
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def tiny_set(n_layers: int = 2, **overrides) -> dict[str, bytes]:
    config = {
        "architecture": "llama",
        "n_layers": n_layers,
        "hidden_size": 4,
        "n_heads": 1,
        "n_kv_heads": 1,
        "head_dim": 4,
        "vocab_size": 8,
        "context_length": 64,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "quantization": "fp32",
        "source": {"format": "gguf", "sha256": "0" * 64, "file_type": 0},
        "converter_version": "test",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "special_tokens": ["<s>", "</s>"],
    }
    files = {
        "model.onnx": tiny_decoder(n_layers),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}).encode(),
        "chat_template.jinja": (
            b"{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        ),
        "generation_config.json": json.dumps(
            {
                "bos_token_id": 1,
                "eos_token_id": [2],
                "pad_token_id": 2,
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 50,
                "max_new_tokens": 256,
            }
        ).encode(),
        "config.json": json.dumps(config).encode(),
    }
    files.update(overrides)
    return files
