"""Render Triton model configurations (JSON for the repository API, and config.pbtxt)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

KINDS = ("KIND_CPU", "KIND_GPU")
# Triton datatype string -> model config enum name (DataType in model_config.proto).
_CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BF16": "TYPE_BF16",
    "BYTES": "TYPE_STRING",
}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Fields whose values are protobuf enums (emitted unquoted in text format) or maps.
_ENUM_FIELDS = frozenset({"data_type", "kind", "format"})
_MAP_FIELDS = frozenset({"parameters"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BatchingSettings:
    """How Triton batches and schedules one model.

    ``max_batch_size`` 0 disables batching (then ``dynamic_batching`` must be False).
    """

    max_batch_size: int = 8
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    instance_count: int = 1
    kind: str = "KIND_CPU"

    def __post_init__(self) -> None:
        """Validate the settings; raise ValueError naming the offending field."""
        object.__setattr__(self, "preferred_batch_sizes", tuple(self.preferred_batch_sizes))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not _is_int(self.max_batch_size) or self.max_batch_size < 0:
            raise ValueError(f"max_batch_size must be an integer >= 0, got {self.max_batch_size!r}")
        if not _is_int(self.instance_count) or self.instance_count < 1:
            raise ValueError(f"instance_count must be a positive integer, got {self.instance_count!r}")
        if not _is_int(self.max_queue_delay_us) or self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be an integer >= 0, got {self.max_queue_delay_us!r}")
        if self.dynamic_batching and self.max_batch_size < 1:
            raise ValueError("dynamic_batching needs max_batch_size >= 1")
        for size in self.preferred_batch_sizes:
            if not _is_int(size) or size < 1:
                raise ValueError(f"preferred batch sizes must be positive integers, got {size!r}")
            if size > self.max_batch_size:
                raise ValueError(f"preferred batch size {size} is larger than max_batch_size {self.max_batch_size}")

    def as_dict(self) -> dict[str, Any]:
        """The settings keyed by BATCHING_FIELDS, as plain JSON values (the sizes as a list)."""
        return {**asdict(self), "preferred_batch_sizes": list(self.preferred_batch_sizes)}


# The one list of batching settings, in display order: a deployment's columns, its API and admin
# fields and its audit snapshot all spell them from here.
BATCHING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(BatchingSettings))


def _tensor_config(tensor: dict[str, Any], batched: bool) -> dict[str, Any]:
    datatype = tensor["datatype"]
    if datatype not in _CONFIG_TYPES:
        raise ValueError(f"tensor {tensor['name']!r} has unsupported datatype {datatype!r}")
    shape = [int(d) for d in tensor["shape"]]
    dims = shape[1:] if batched else shape
    entry: dict[str, Any] = {"name": tensor["name"], "data_type": _CONFIG_TYPES[datatype]}
    if dims:
        entry["dims"] = dims
    else:
        # Triton needs at least one dim: a per-item scalar travels as [1] and is reshaped to [].
        entry["dims"] = [1]
        entry["reshape"] = {"shape": []}
    return entry


def render_config(
    name: str,
    signature: dict[str, Any],
    settings: BatchingSettings,
    parameters: dict[str, str] | None = None,
    backend: str = "python",
) -> dict[str, Any]:
    """Return the Triton model config (repository-API JSON form) for a model with ``signature``.

    ``signature`` is the output of :func:`inference_backend.signature.read_onnx_signature`.
    A signature that is not batch-dynamic forces ``max_batch_size`` 0, no dynamic batching,
    and full dims; otherwise dims leave out the batch dimension.
    """
    if not _MODEL_NAME.match(name or ""):
        raise ValueError(f"invalid Triton model name {name!r}: use letters, digits, '_', '.', '-'")
    batched = bool(signature.get("batch_dynamic")) and settings.max_batch_size > 0
    config: dict[str, Any] = {
        "name": name,
        "backend": backend,
        "max_batch_size": settings.max_batch_size if batched else 0,
        "input": [_tensor_config(t, batched) for t in signature["inputs"]],
        "output": [_tensor_config(t, batched) for t in signature["outputs"]],
        "instance_group": [{"count": settings.instance_count, "kind": settings.kind}],
    }
    if batched and settings.dynamic_batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": list(settings.preferred_batch_sizes),
            "max_queue_delay_microseconds": settings.max_queue_delay_us,
        }
    if parameters:
        for key, value in parameters.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"model parameters must be str -> str, got {key!r}: {type(value).__name__}")
        config["parameters"] = {key: {"string_value": value} for key, value in parameters.items()}
    return config


def _quote(text: str) -> str:
    """Quote a string for protobuf text format (C escapes; non-ASCII bytes as octal)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in "\\\"'":
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_int(value) or isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, str):
        return value if key in _ENUM_FIELDS else _quote(value)
    raise TypeError(f"cannot emit {key}={value!r} in protobuf text format")


def _emit(obj: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for key, value in obj.items():
        if key in _MAP_FIELDS and isinstance(value, dict):
            for map_key, map_value in value.items():
                lines.append(f"{pad}{key} {{")
                lines.append(f"{pad}  key: {_quote(map_key)}")
                lines.append(f"{pad}  value {{")
                _emit(map_value, indent + 2, lines)
                lines.append(f"{pad}  }}")
                lines.append(f"{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            _emit(value, indent + 1, lines)
            lines.append(f"{pad}}}")
        elif isinstance(value, list | tuple):
            if value and all(isinstance(v, dict) for v in value):
                for item in value:
                    lines.append(f"{pad}{key} {{")
                    _emit(item, indent + 1, lines)
                    lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: [{', '.join(_scalar(key, v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}")


def to_pbtxt(config: dict[str, Any]) -> str:
    """Return ``config`` (as produced by :func:`render_config`) in ``config.pbtxt`` text format."""
    lines: list[str] = []
    _emit(config, 0, lines)
    return "\n".join(lines) + "\n"
