"""GPU-host Triton layouts (vLLM, TensorRT-LLM inflight_batcher_llm) rendered from an llm registry entry."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inference_backend.llm_configs import LLMConfigError, render_backend_layout, validate_layout

SIGNATURE = {
    "kind": "llm",
    "architecture": "llama",
    "context_length": 8192,
    "quantization": "int4",
    "chat_template": "{% for message in messages %}…{% endfor %}",
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "generation_defaults": {"temperature": 0.7, "top_p": 0.9},
    "files": [{"name": "model.onnx", "sha256": "0" * 64, "size": 1}],
}
VLLM_OPTIONS = {"model_path": "/srv/models/smollm2-135m-instruct"}
TRT_OPTIONS = {"engine_dir": "/srv/engines/smollm2", "tokenizer_dir": "/srv/models/smollm2-135m-instruct"}

CONTRACT_INPUTS = {
    "text_input": ("TYPE_STRING", False),
    "stream": ("TYPE_BOOL", True),
    "sampling_parameters": ("TYPE_STRING", True),
    "exclude_input_in_output": ("TYPE_BOOL", True),
    "return_finish_reason": ("TYPE_BOOL", True),
    "return_num_input_tokens": ("TYPE_BOOL", True),
    "return_num_output_tokens": ("TYPE_BOOL", True),
}
CONTRACT_OUTPUTS = {
    "text_output": "TYPE_STRING",
    "finish_reason": "TYPE_STRING",
    "num_input_tokens": "TYPE_UINT32",
    "num_output_tokens": "TYPE_UINT32",
}


def parse(content: bytes) -> model_config_pb2.ModelConfig:
    return text_format.Parse(content.decode(), model_config_pb2.ModelConfig())


def dtype(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def parameters(config) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def test_vllm_layout_renders_and_parses():
    files = render_backend_layout("vllm", "smollm2-chat", SIGNATURE, VLLM_OPTIONS)
    assert set(files) == {"smollm2-chat/config.pbtxt", "smollm2-chat/1/model.json"}
    config = parse(files["smollm2-chat/config.pbtxt"])
    assert (config.name, config.backend, config.max_batch_size) == ("smollm2-chat", "vllm", 0)
    assert config.model_transaction_policy.decoupled
    inputs = {i.name: (dtype(i.data_type), i.optional) for i in config.input}
    assert inputs == CONTRACT_INPUTS
    assert all(list(i.dims) == [1] for i in config.input)
    assert {o.name: dtype(o.data_type) for o in config.output} == CONTRACT_OUTPUTS
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_MODEL

    engine = json.loads(files["smollm2-chat/1/model.json"])
    assert engine["model"] == "/srv/models/smollm2-135m-instruct"
    assert engine["max_model_len"] == 8192  # the registry's context length
    assert engine["tensor_parallel_size"] == 1 and engine["gpu_memory_utilization"] == 0.9
    assert engine["trust_remote_code"] is False
    assert engine["served_model_name"] == "smollm2-chat"
    assert "quantization" not in engine  # vLLM detects it from the checkpoint unless told


def test_vllm_options_reach_the_engine_and_parameters():
    options = {
        **VLLM_OPTIONS,
        "tokenizer_path": "/srv/models/tok",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.55,
        "quantization": "awq",
        "dtype": "float16",
        "max_model_len": 4096,
        "max_num_seqs": 16,
        "enforce_eager": True,
        "gpu_device_ids": "0,1",
        "report_metrics": True,
    }
    files = render_backend_layout("vllm", "chat", SIGNATURE, options)
    engine = json.loads(files["chat/1/model.json"])
    assert engine["tensor_parallel_size"] == 2 and engine["gpu_memory_utilization"] == 0.55
    assert (engine["quantization"], engine["dtype"], engine["max_model_len"]) == ("awq", "float16", 4096)
    assert (engine["tokenizer"], engine["max_num_seqs"], engine["enforce_eager"]) == ("/srv/models/tok", 16, True)
    config = parse(files["chat/config.pbtxt"])
    assert parameters(config) == {"GPU_DEVICE_IDS": "0,1", "REPORT_CUSTOM_METRICS": "true"}


def test_tensorrtllm_layout_renders_and_parses():
    options = {**TRT_OPTIONS, "triton_max_batch_size": 16, "max_tokens_in_paged_kv_cache": 65536}
    files = render_backend_layout("tensorrtllm", "smollm2", SIGNATURE, options)
    configs = validate_layout(files)
    names = {path.split("/")[0] for path in configs}
    assert names == {"smollm2", "smollm2_preprocessing", "smollm2_tensorrt_llm", "smollm2_postprocessing"}
    assert "smollm2/1/.keep" in files and "smollm2_tensorrt_llm/1/.keep" in files

    ensemble = parse(files["smollm2/config.pbtxt"])
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 16
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "smollm2_preprocessing",
        "smollm2_tensorrt_llm",
        "smollm2_postprocessing",
    ]
    assert [o.name for o in ensemble.output] == ["text_output"]

    llm = parse(files["smollm2_tensorrt_llm/config.pbtxt"])
    assert llm.backend == "tensorrtllm" and llm.model_transaction_policy.decoupled
    assert list(llm.dynamic_batching.preferred_batch_size) == [16]
    params = parameters(llm)
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == "/srv/engines/smollm2"
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.9"
    assert params["max_tokens_in_paged_kv_cache"] == "65536"
    assert params["batch_scheduler_policy"] == "guaranteed_no_evict"
    assert "max_attention_window_size" not in params  # unset options are left out, not "${…}"
    pre = parse(files["smollm2_preprocessing/config.pbtxt"])
    post = parse(files["smollm2_postprocessing/config.pbtxt"])
    assert parameters(pre) == {"tokenizer_dir": TRT_OPTIONS["tokenizer_dir"], "add_special_tokens": "false"}
    assert parameters(post)["tokenizer_dir"] == TRT_OPTIONS["tokenizer_dir"]
    assert pre.backend == post.backend == "python"


def test_tensorrtllm_ensemble_dataflow_is_consistent():
    """Every tensor a step reads exists (ensemble input or an earlier step's output) with the same type."""
    files = render_backend_layout("tensorrtllm", "m", SIGNATURE, TRT_OPTIONS)
    models = {path.split("/")[0]: parse(c) for path, c in files.items() if path.endswith("config.pbtxt")}
    ensemble = models["m"]
    available = {i.name: i.data_type for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        model_inputs = {i.name: i for i in model.input}
        for key, value in step.input_map.items():
            assert key in model_inputs, f"{step.model_name} has no input {key}"
            assert value in available, f"{step.model_name}.{key} reads unknown tensor {value}"
            assert available[value] == model_inputs[key].data_type, f"{step.model_name}.{key} type"
        required = {i.name for i in model.input if not i.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required - set(step.input_map)}"
        model_outputs = {o.name: o.data_type for o in model.output}
        for key, value in step.output_map.items():
            available[value] = model_outputs[key]
    assert available["text_output"] == model_config_pb2.TYPE_STRING


def test_tensorrtllm_non_streaming_and_v1_batching():
    options = {**TRT_OPTIONS, "decoupled_mode": False, "batching_strategy": "V1", "enable_kv_cache_reuse": True}
    files = render_backend_layout("tensorrtllm", "m", SIGNATURE, options)
    llm = parse(files["m_tensorrt_llm/config.pbtxt"])
    assert not llm.model_transaction_policy.decoupled
    assert parameters(llm)["gpt_model_type"] == "V1"
    assert parameters(llm)["enable_kv_cache_reuse"] == "true"


@pytest.mark.parametrize(
    ("backend", "name", "signature", "options", "code"),
    [
        ("onnxruntime", "m", SIGNATURE, VLLM_OPTIONS, "llm_config_unknown_backend"),
        ("vllm", "bad/name", SIGNATURE, VLLM_OPTIONS, "llm_config_invalid_name"),
        ("vllm", "", SIGNATURE, VLLM_OPTIONS, "llm_config_invalid_name"),
        ("vllm", "m", {"inputs": [], "outputs": []}, VLLM_OPTIONS, "llm_config_invalid_signature"),
        ("vllm", "m", {**SIGNATURE, "context_length": 0}, VLLM_OPTIONS, "llm_config_invalid_signature"),
        ("vllm", "m", SIGNATURE, {}, "llm_config_missing_option"),
        ("vllm", "m", SIGNATURE, {"model_path": "models/relative"}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {"model_path": '/srv/x"\nbackend: "python'}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {"model_path": "/srv/../etc"}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "max_model_len": 8193}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "gpu_memory_utilization": 1.5}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "gpu_memory_utilization": "0.5"}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "tensor_parallel_size": 0}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "tensor_parallel_size": True}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "quantization": "int4"}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "gpu_device_ids": "0;reboot"}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, {**VLLM_OPTIONS, "trust_remote_code": True}, "llm_config_invalid_option"),
        ("vllm", "m", SIGNATURE, ["model_path"], "llm_config_invalid_option"),
        ("tensorrtllm", "m", SIGNATURE, {"engine_dir": "/srv/e"}, "llm_config_missing_option"),
        ("tensorrtllm", "m", SIGNATURE, {**TRT_OPTIONS, "batching_strategy": "static"}, "llm_config_invalid_option"),
        ("tensorrtllm", "m", SIGNATURE, {**TRT_OPTIONS, "triton_max_batch_size": 0}, "llm_config_invalid_option"),
        ("tensorrtllm", "m", SIGNATURE, {**TRT_OPTIONS, "decoupled_mode": "yes"}, "llm_config_invalid_option"),
        (
            "tensorrtllm",
            "m",
            SIGNATURE,
            {**TRT_OPTIONS, "max_attention_window_size": 9000},
            "llm_config_invalid_option",
        ),
    ],
)
def test_bad_input_is_refused_with_a_code(backend, name, signature, options, code):
    with pytest.raises(LLMConfigError) as info:
        render_backend_layout(backend, name, signature, options)
    assert info.value.code == code
    assert str(info.value).startswith(f"[{code}] ")


def test_validate_layout_names_the_broken_file():
    files = render_backend_layout("tensorrtllm", "m", SIGNATURE, TRT_OPTIONS)
    broken = {**files, "m_postprocessing/config.pbtxt": b'name: "m_postprocessing"\nbackend: python\n'}
    with pytest.raises(LLMConfigError) as info:
        validate_layout(broken)
    assert info.value.code == "llm_config_invalid_layout"
    assert "m_postprocessing/config.pbtxt" in info.value.message

    renamed = {
        **files,
        "m_postprocessing/config.pbtxt": files["m_postprocessing/config.pbtxt"].replace(b'"m_post', b'"x_post'),
    }
    with pytest.raises(LLMConfigError, match="is not its directory"):
        validate_layout(renamed)

    orphan = {k: v for k, v in files.items() if not k.startswith("m_preprocessing/")}
    with pytest.raises(LLMConfigError, match="ensemble step 'm_preprocessing'"):
        validate_layout(orphan)


def test_validate_layout_checks_model_json_and_vllm_policy():
    files = render_backend_layout("vllm", "m", SIGNATURE, VLLM_OPTIONS)
    with pytest.raises(LLMConfigError, match=r"m/1/model.json: not JSON"):
        validate_layout({**files, "m/1/model.json": b"{model:"})
    without = json.loads(files["m/1/model.json"])
    del without["max_model_len"]
    with pytest.raises(LLMConfigError, match="missing engine arguments: max_model_len"):
        validate_layout({**files, "m/1/model.json": json.dumps(without).encode()})
    batched = files["m/config.pbtxt"].replace(b"max_batch_size: 0", b"max_batch_size: 8")
    with pytest.raises(LLMConfigError, match="max_batch_size 0"):
        validate_layout({**files, "m/config.pbtxt": batched})
    with pytest.raises(LLMConfigError, match="not a relative path"):
        validate_layout({"../m/config.pbtxt": files["m/config.pbtxt"]})
