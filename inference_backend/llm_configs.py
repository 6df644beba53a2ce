"""Triton configurations for GPU hosts, rendered from one registry entry of a language model.

``render_backend_layout(backend, triton_name, signature, options)`` returns the files of a Triton
model repository (relative path → bytes) for

- ``"vllm"``: Triton's vLLM backend — ``<name>/config.pbtxt`` (``backend: "vllm"``, max_batch_size 0,
  decoupled, the tensor contract of docs/llm.md) and ``<name>/1/model.json`` (vLLM engine arguments:
  ``model`` is a local path on the GPU host, ``max_model_len`` the registry's context length …);
- ``"tensorrtllm"``: TensorRT-LLM's ``inflight_batcher_llm`` layout — an ensemble named
  ``<name>`` chaining ``<name>_preprocessing`` (tokenizer, python) → ``<name>_tensorrt_llm``
  (backend ``tensorrtllm``, in-flight batching) → ``<name>_postprocessing`` (detokenizer, python).
  Our own templates, written from the backend's documented parameters; the two python models'
  ``model.py`` come from the tensorrtllm_backend release installed on the host
  (``all_models/inflight_batcher_llm/{preprocessing,postprocessing}/1/model.py``).

Templates use ``${placeholder}`` like the backend's ``fill_template.py``; every value is validated
(numbers in range, paths absolute and free of quotes/control characters, names Triton-safe), and
:func:`validate_layout` parses every ``config.pbtxt`` with Triton's own ``ModelConfig`` protobuf
before a layout is returned. Refusals raise :class:`LLMConfigError` with a stable ``code``.

No Django here: this module ships with ``inference_backend``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from string import Template
from typing import Any

BACKENDS = ("vllm", "tensorrtllm")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PATH = re.compile(r"^/[^\x00-\x1f\x7f\"'\\]*$")
_DEVICE_IDS = re.compile(r"^\d{1,3}(,\d{1,3}){0,63}$")
#: vLLM ``--quantization`` methods an operator may name (vLLM's documented choices).
VLLM_QUANTIZATIONS = (
    "awq",
    "awq_marlin",
    "gptq",
    "gptq_marlin",
    "fp8",
    "bitsandbytes",
    "gguf",
    "compressed-tensors",
    "experts_int8",
)
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
VLLM_KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
TRT_BATCHING_STRATEGIES = ("inflight_fused_batching", "V1")
TRT_SCHEDULER_POLICIES = ("guaranteed_no_evict", "max_utilization")


class LLMConfigError(ValueError):
    """A configuration this module refuses to render; ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- option checks


class _Options:
    """Reads options once each, validating them; unknown keys are refused at the end."""

    def __init__(self, options: Mapping[str, Any] | None):
        if options is not None and not isinstance(options, Mapping):
            raise LLMConfigError("llm_config_invalid_option", "options must be a mapping")
        self.values = dict(options or {})
        self.read: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self.read.add(key)
        return self.values.get(key, default)

    def _bad(self, key: str, expected: str, value: Any) -> LLMConfigError:
        return LLMConfigError("llm_config_invalid_option", f"option {key!r} must be {expected}, got {value!r}")

    def integer(self, key: str, default: int | None, low: int, high: int) -> int | None:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._bad(key, f"an integer in [{low}, {high}]", value)
        return value

    def fraction(self, key: str, default: float | None) -> float | None:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise self._bad(key, "a number in (0, 1]", value)
        return float(value)

    def boolean(self, key: str, default: bool | None) -> bool | None:
        value = self._get(key, default)
        if value is not None and not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def choice(self, key: str, default: str | None, choices: tuple[str, ...]) -> str | None:
        value = self._get(key, default)
        if value is not None and value not in choices:
            raise self._bad(key, "one of " + ", ".join(choices), value)
        return value

    def path(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self._get(key, default)
        if value is None:
            if required:
                raise LLMConfigError(
                    "llm_config_missing_option", f"option {key!r} (a local path on the host) is required"
                )
            return None
        if not isinstance(value, str) or not _PATH.match(value) or "/../" in value + "/" or len(value) > 4096:
            raise self._bad(key, "an absolute path without quotes, backslashes, control characters or '..'", value)
        return value

    def device_ids(self, key: str) -> str | None:
        value = self._get(key, None)
        if value is not None and (not isinstance(value, str) or not _DEVICE_IDS.match(value)):
            raise self._bad(key, "comma-separated GPU ids such as '0,1'", value)
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.values) - self.read)
        if unknown:
            raise LLMConfigError("llm_config_invalid_option", f"unknown option(s): {', '.join(unknown)}")


def _check_signature(signature: Mapping[str, Any]) -> dict:
    if not isinstance(signature, Mapping) or signature.get("kind") != "llm":
        raise LLMConfigError("llm_config_invalid_signature", "the registry entry is not a language model (kind 'llm')")
    context = signature.get("context_length")
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise LLMConfigError("llm_config_invalid_signature", f"context_length must be a positive integer: {context!r}")
    return dict(signature)


def _check_name(triton_name: str) -> None:
    if not isinstance(triton_name, str) or not _NAME.match(triton_name):
        raise LLMConfigError(
            "llm_config_invalid_name",
            f"Triton model name {triton_name!r}: letters, digits, '_', '.', '-' (at most 64, not leading)",
        )


def _q(value: str) -> str:
    """A protobuf text-format string literal (values were validated: no control characters)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fill(template: str, **values: Any) -> bytes:
    return Template(template).substitute(**values).encode()


def _parameters(params: Mapping[str, Any]) -> str:
    out = []
    for key, value in params.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append(f"parameters: {{\n  key: {_q(key)}\n  value: {{ string_value: {_q(text)} }}\n}}")
    return "\n".join(out)


# --------------------------------------------------------------------------- vLLM

_VLLM_CONFIG = """\
# Sovereign: Triton vLLM backend for ${name} (rendered by inference_backend/llm_configs.py)
name: ${name_q}
backend: "vllm"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "text_input", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "stream", data_type: TYPE_BOOL, dims: [ 1 ], optional: true },
  { name: "sampling_parameters", data_type: TYPE_STRING, dims: [ 1 ], optional: true },
  { name: "exclude_input_in_output", data_type: TYPE_BOOL, dims: [ 1 ], optional: true },
  { name: "return_finish_reason", data_type: TYPE_BOOL, dims: [ 1 ], optional: true },
  { name: "return_num_input_tokens", data_type: TYPE_BOOL, dims: [ 1 ], optional: true },
  { name: "return_num_output_tokens", data_type: TYPE_BOOL, dims: [ 1 ], optional: true }
]
output [
  { name: "text_output", data_type: TYPE_STRING, dims: [ -1 ] },
  { name: "finish_reason", data_type: TYPE_STRING, dims: [ -1 ] },
  { name: "num_input_tokens", data_type: TYPE_UINT32, dims: [ 1 ] },
  { name: "num_output_tokens", data_type: TYPE_UINT32, dims: [ -1 ] }
]
instance_group [ { count: ${instances}, kind: KIND_MODEL } ]
${parameters}
"""


def _render_vllm(name: str, signature: dict, opts: _Options) -> dict[str, bytes]:
    context = signature["context_length"]
    engine: dict[str, Any] = {
        "model": opts.path("model_path", required=True),
        "tokenizer": opts.path("tokenizer_path"),
        "served_model_name": name,
        "dtype": opts.choice("dtype", "auto", VLLM_DTYPES),
        "quantization": opts.choice("quantization", None, VLLM_QUANTIZATIONS),
        "max_model_len": opts.integer("max_model_len", context, 1, context),
        "tensor_parallel_size": opts.integer("tensor_parallel_size", 1, 1, 64),
        "pipeline_parallel_size": opts.integer("pipeline_parallel_size", 1, 1, 64),
        "gpu_memory_utilization": opts.fraction("gpu_memory_utilization", 0.9),
        "max_num_seqs": opts.integer("max_num_seqs", None, 1, 4096),
        "kv_cache_dtype": opts.choice("kv_cache_dtype", None, VLLM_KV_CACHE_DTYPES),
        "enable_prefix_caching": opts.boolean("enable_prefix_caching", None),
        "enforce_eager": opts.boolean("enforce_eager", None),
        "seed": opts.integer("seed", None, 0, 2**31 - 1),
        # Never run code shipped with weights.
        "trust_remote_code": False,
    }
    engine = {k: v for k, v in engine.items() if v is not None}
    instances = opts.integer("instance_count", 1, 1, 16)
    params = {
        "GPU_DEVICE_IDS": opts.device_ids("gpu_device_ids"),
        "REPORT_CUSTOM_METRICS": opts.boolean("report_metrics", None),
    }
    opts.finish()
    return {
        f"{name}/config.pbtxt": _fill(
            _VLLM_CONFIG, name=name, name_q=_q(name), instances=instances, parameters=_parameters(params)
        ),
        f"{name}/1/model.json": (json.dumps(engine, indent=2) + "\n").encode(),
    }


# --------------------------------------------------------------------------- TensorRT-LLM

_TRT_ENSEMBLE = """\
# Sovereign: TensorRT-LLM inflight_batcher_llm ensemble for ${name}
name: ${name_q}
platform: "ensemble"
max_batch_size: ${max_batch_size}
input [
  { name: "text_input", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "max_tokens", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "bad_words", data_type: TYPE_STRING, dims: [ -1 ], optional: true },
  { name: "stop_words", data_type: TYPE_STRING, dims: [ -1 ], optional: true },
  { name: "end_id", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "pad_id", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "top_k", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "top_p", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "temperature", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "length_penalty", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "repetition_penalty", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "min_length", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "presence_penalty", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "frequency_penalty", data_type: TYPE_FP32, dims: [ 1 ], optional: true },
  { name: "random_seed", data_type: TYPE_UINT64, dims: [ 1 ], optional: true },
  { name: "beam_width", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "stream", data_type: TYPE_BOOL, dims: [ 1 ], optional: true }
]
output [
  { name: "text_output", data_type: TYPE_STRING, dims: [ -1 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: ${pre_q}
      model_version: -1
      input_map { key: "QUERY", value: "text_input" }
      input_map { key: "REQUEST_OUTPUT_LEN", value: "max_tokens" }
      input_map { key: "BAD_WORDS_DICT", value: "bad_words" }
      input_map { key: "STOP_WORDS_DICT", value: "stop_words" }
      input_map { key: "END_ID", value: "end_id" }
      input_map { key: "PAD_ID", value: "pad_id" }
      output_map { key: "INPUT_ID", value: "_INPUT_ID" }
      output_map { key: "REQUEST_INPUT_LEN", value: "_REQUEST_INPUT_LEN" }
      output_map { key: "REQUEST_OUTPUT_LEN", value: "_REQUEST_OUTPUT_LEN" }
      output_map { key: "STOP_WORDS_IDS", value: "_STOP_WORDS_IDS" }
      output_map { key: "BAD_WORDS_IDS", value: "_BAD_WORDS_IDS" }
      output_map { key: "OUT_END_ID", value: "_PREPROCESSOR_END_ID" }
      output_map { key: "OUT_PAD_ID", value: "_PREPROCESSOR_PAD_ID" }
    },
    {
      model_name: ${llm_q}
      model_version: -1
      input_map { key: "input_ids", value: "_INPUT_ID" }
      input_map { key: "input_lengths", value: "_REQUEST_INPUT_LEN" }
      input_map { key: "request_output_len", value: "_REQUEST_OUTPUT_LEN" }
      input_map { key: "end_id", value: "_PREPROCESSOR_END_ID" }
      input_map { key: "pad_id", value: "_PREPROCESSOR_PAD_ID" }
      input_map { key: "stop_words_list", value: "_STOP_WORDS_IDS" }
      input_map { key: "bad_words_list", value: "_BAD_WORDS_IDS" }
      input_map { key: "runtime_top_k", value: "top_k" }
      input_map { key: "runtime_top_p", value: "top_p" }
      input_map { key: "temperature", value: "temperature" }
      input_map { key: "len_penalty", value: "length_penalty" }
      input_map { key: "repetition_penalty", value: "repetition_penalty" }
      input_map { key: "min_length", value: "min_length" }
      input_map { key: "presence_penalty", value: "presence_penalty" }
      input_map { key: "frequency_penalty", value: "frequency_penalty" }
      input_map { key: "random_seed", value: "random_seed" }
      input_map { key: "beam_width", value: "beam_width" }
      input_map { key: "streaming", value: "stream" }
      output_map { key: "output_ids", value: "_TOKENS_BATCH" }
      output_map { key: "sequence_length", value: "_SEQUENCE_LENGTH" }
    },
    {
      model_name: ${post_q}
      model_version: -1
      input_map { key: "TOKENS_BATCH", value: "_TOKENS_BATCH" }
      input_map { key: "SEQUENCE_LENGTH", value: "_SEQUENCE_LENGTH" }
      output_map { key: "OUTPUT", value: "text_output" }
    }
  ]
}
"""

_TRT_PREPROCESSING = """\
# Sovereign: tokenizer step of ${name} (model.py from the tensorrtllm_backend release)
name: ${pre_q}
backend: "python"
max_batch_size: ${max_batch_size}
input [
  { name: "QUERY", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "REQUEST_OUTPUT_LEN", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "BAD_WORDS_DICT", data_type: TYPE_STRING, dims: [ -1 ], optional: true },
  { name: "STOP_WORDS_DICT", data_type: TYPE_STRING, dims: [ -1 ], optional: true },
  { name: "END_ID", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "PAD_ID", data_type: TYPE_INT32, dims: [ 1 ], optional: true }
]
output [
  { name: "INPUT_ID", data_type: TYPE_INT32, dims: [ -1 ] },
  { name: "REQUEST_INPUT_LEN", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "BAD_WORDS_IDS", data_type: TYPE_INT32, dims: [ 2, -1 ] },
  { name: "STOP_WORDS_IDS", data_type: TYPE_INT32, dims: [ 2, -1 ] },
  { name: "REQUEST_OUTPUT_LEN", data_type: TYPE_INT32, dims: [ -1 ] },
  { name: "OUT_END_ID", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "OUT_PAD_ID", data_type: TYPE_INT32, dims: [ 1 ] }
]
instance_group [ { count: ${instances}, kind: KIND_CPU } ]
${parameters}
"""

_TRT_LLM = """\
# Sovereign: TensorRT-LLM engine of ${name}, in-flight batching
name: ${llm_q}
backend: "tensorrtllm"
max_batch_size: ${max_batch_size}
model_transaction_policy { decoupled: ${decoupled} }
dynamic_batching {
  preferred_batch_size: [ ${max_batch_size} ]
  max_queue_delay_microseconds: ${max_queue_delay_microseconds}
}
input [
  { name: "input_ids", data_type: TYPE_INT32, dims: [ -1 ], allow_ragged_batch: true },
  { name: "input_lengths", data_type: TYPE_INT32, dims: [ 1 ], reshape: { shape: [ ] } },
  { name: "request_output_len", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "end_id", data_type: TYPE_INT32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "pad_id", data_type: TYPE_INT32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "stop_words_list", data_type: TYPE_INT32, dims: [ 2, -1 ], optional: true, allow_ragged_batch: true },
  { name: "bad_words_list", data_type: TYPE_INT32, dims: [ 2, -1 ], optional: true, allow_ragged_batch: true },
  { name: "runtime_top_k", data_type: TYPE_INT32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "runtime_top_p", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "temperature", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "len_penalty", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "repetition_penalty", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "min_length", data_type: TYPE_INT32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "presence_penalty", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "frequency_penalty", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "random_seed", data_type: TYPE_UINT64, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "beam_width", data_type: TYPE_INT32, dims: [ 1 ], reshape: { shape: [ ] }, optional: true },
  { name: "streaming", data_type: TYPE_BOOL, dims: [ 1 ], optional: true }
]
output [
  { name: "output_ids", data_type: TYPE_INT32, dims: [ -1, -1 ] },
  { name: "sequence_length", data_type: TYPE_INT32, dims: [ -1 ] }
]
instance_group [ { count: 1, kind: KIND_CPU } ]
${parameters}
"""

_TRT_POSTPROCESSING = """\
# Sovereign: detokenizer step of ${name} (model.py from the tensorrtllm_backend release)
name: ${post_q}
backend: "python"
max_batch_size: ${max_batch_size}
input [
  { name: "TOKENS_BATCH", data_type: TYPE_INT32, dims: [ -1, -1 ] },
  { name: "SEQUENCE_LENGTH", data_type: TYPE_INT32, dims: [ -1 ] }
]
output [
  { name: "OUTPUT", data_type: TYPE_STRING, dims: [ -1 ] }
]
instance_group [ { count: ${instances}, kind: KIND_CPU } ]
${parameters}
"""


def _render_tensorrtllm(name: str, signature: dict, opts: _Options) -> dict[str, bytes]:
    context = signature["context_length"]
    engine_dir = opts.path("engine_dir", required=True)
    tokenizer_dir = opts.path("tokenizer_dir", required=True)
    batch = opts.integer("triton_max_batch_size", 8, 1, 4096)
    decoupled = opts.boolean("decoupled_mode", True)
    delay = opts.integer("max_queue_delay_microseconds", 0, 0, 10_000_000)
    pre_instances = opts.integer("preprocessing_instance_count", 1, 1, 64)
    post_instances = opts.integer("postprocessing_instance_count", 1, 1, 64)
    llm_params = {
        "gpt_model_type": opts.choice("batching_strategy", "inflight_fused_batching", TRT_BATCHING_STRATEGIES),
        "gpt_model_path": engine_dir,
        "max_beam_width": opts.integer("max_beam_width", 1, 1, 64),
        "batch_scheduler_policy": opts.choice("batch_scheduler_policy", "guaranteed_no_evict", TRT_SCHEDULER_POLICIES),
        "kv_cache_free_gpu_mem_fraction": opts.fraction("kv_cache_free_gpu_mem_fraction", 0.9),
        "max_tokens_in_paged_kv_cache": opts.integer("max_tokens_in_paged_kv_cache", None, 1, 2**31 - 1),
        "max_attention_window_size": opts.integer("max_attention_window_size", None, 1, context),
        "enable_kv_cache_reuse": opts.boolean("enable_kv_cache_reuse", None),
        "enable_chunked_context": opts.boolean("enable_chunked_context", None),
        "exclude_input_in_output": True,
        "gpu_device_ids": opts.device_ids("gpu_device_ids"),
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
    }
    add_special = opts.boolean("add_special_tokens", False)  # the gateway sends templated text
    opts.finish()
    names = {
        "name": name,
        "name_q": _q(name),
        "pre_q": _q(f"{name}_preprocessing"),
        "llm_q": _q(f"{name}_tensorrt_llm"),
        "post_q": _q(f"{name}_postprocessing"),
        "max_batch_size": batch,
    }
    return {
        f"{name}/config.pbtxt": _fill(_TRT_ENSEMBLE, **names),
        f"{name}/1/.keep": b"",  # an ensemble still needs a version directory
        f"{name}_preprocessing/config.pbtxt": _fill(
            _TRT_PREPROCESSING,
            **names,
            instances=pre_instances,
            parameters=_parameters({"tokenizer_dir": tokenizer_dir, "add_special_tokens": add_special}),
        ),
        f"{name}_tensorrt_llm/config.pbtxt": _fill(
            _TRT_LLM,
            **names,
            decoupled="true" if decoupled else "false",
            max_queue_delay_microseconds=delay,
            parameters=_parameters(llm_params),
        ),
        f"{name}_tensorrt_llm/1/.keep": b"",
        f"{name}_postprocessing/config.pbtxt": _fill(
            _TRT_POSTPROCESSING,
            **names,
            instances=post_instances,
            parameters=_parameters({"tokenizer_dir": tokenizer_dir, "skip_special_tokens": True}),
        ),
    }


# --------------------------------------------------------------------------- API


def render_backend_layout(
    backend: str, triton_name: str, signature: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """The files of ``backend``'s Triton layout for one registry entry (relative path → content)."""
    if backend not in BACKENDS:
        raise LLMConfigError("llm_config_unknown_backend", f"backend must be one of {', '.join(BACKENDS)}: {backend!r}")
    _check_name(triton_name)
    signature = _check_signature(signature)
    opts = _Options(options)
    files = (_render_vllm if backend == "vllm" else _render_tensorrtllm)(triton_name, signature, opts)
    validate_layout(files)
    return files


VLLM_REQUIRED_KEYS = ("model", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization")


def validate_layout(files: Mapping[str, bytes]) -> dict[str, Any]:
    """Parse every ``config.pbtxt`` into Triton's ``ModelConfig`` and check every ``model.json``.

    Returns ``{path: ModelConfig}``; raises :class:`LLMConfigError` (``llm_config_invalid_layout``)
    naming the file otherwise. Also checks that each config's name is its directory's and that
    every ensemble step names a model of the layout.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    def bad(path: str, why: str) -> LLMConfigError:
        return LLMConfigError("llm_config_invalid_layout", f"{path}: {why}")

    parsed: dict[str, Any] = {}
    for path, content in files.items():
        parts = path.split("/")
        if path.startswith("/") or ".." in parts or "" in parts:
            raise bad(path, "not a relative path inside the repository")
        if parts[-1] == "config.pbtxt":
            try:
                config = text_format.Parse(content.decode(), model_config_pb2.ModelConfig())
            except (UnicodeDecodeError, text_format.ParseError) as exc:
                raise bad(path, f"not a valid Triton model configuration: {exc}") from exc
            if len(parts) != 2 or config.name != parts[0]:
                raise bad(path, f"model name {config.name!r} is not its directory {parts[0]!r}")
            if config.backend == "vllm" and not (
                config.max_batch_size == 0 and config.model_transaction_policy.decoupled
            ):
                raise bad(path, "the vLLM backend needs max_batch_size 0 and a decoupled transaction policy")
            parsed[path] = config
        elif parts[-1] == "model.json":
            try:
                engine = json.loads(content)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise bad(path, f"not JSON: {exc}") from exc
            if not isinstance(engine, dict):
                raise bad(path, "not a JSON object")
            missing = [key for key in VLLM_REQUIRED_KEYS if key not in engine]
            if missing:
                raise bad(path, f"missing engine arguments: {', '.join(missing)}")
            parsed[path] = engine
    models = {path.split("/")[0] for path in parsed if path.endswith("config.pbtxt")}
    for path, config in parsed.items():
        if path.endswith("config.pbtxt") and config.platform == "ensemble":
            for step in config.ensemble_scheduling.step:
                if step.model_name not in models:
                    raise bad(path, f"ensemble step {step.model_name!r} is not a model of this layout")
    return parsed
