"""Validating a language model's file set (docs/llm.md, "Language models in the registry").

The set is what the GGUF importer produces (inference_backend/llm/gguf_import.py) and what the
Triton-side model loads: `model.onnx` (a decoder with a KV cache, the contract below),
`tokenizer.json`, `chat_template.jinja`, `generation_config.json`, `config.json`, and
`model.onnx.data` only when the graph keeps its tensors as ONNX external data (a graph over
protobuf's 2 GiB). Nothing else.

`model.onnx` is read by a small protobuf wire scanner: the graph's inputs and outputs are parsed,
every initializer's bytes are skipped (never copied), so a 2 GiB graph costs one buffer of the
file, not two. External data references are allowed only to `model.onnx.data` of the same set
and must lie inside it; the file is then resolved in memory by the loader, never from disk.

No Django here: ServiceError only.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from onnx import NodeProto, TensorProto, ValueInfoProto
from onnx.onnx_pb import FunctionProto, GraphProto, SparseTensorProto, TrainingInfoProto

from apps.core.errors import ServiceError, _
from inference_backend.onnx_external import external_data_references

REQUIRED_FILES = ("model.onnx", "tokenizer.json", "chat_template.jinja", "generation_config.json", "config.json")
EXTERNAL_DATA_FILE = "model.onnx.data"
OPTIONAL_FILES = (EXTERNAL_DATA_FILE,)
ALLOWED_FILES = REQUIRED_FILES + OPTIONAL_FILES
SUPPORTED_ARCHITECTURES = ("llama",)
#: Upper bounds for the small files, read whole into memory to validate them.
SMALL_FILE_LIMITS = {
    "tokenizer.json": 64 << 20,
    "chat_template.jinja": 1 << 20,
    "generation_config.json": 1 << 20,
    "config.json": 1 << 20,
}
GRAPH_LIMIT = 2 << 30  # protobuf's limit on a serialized message

_INT64, _FLOAT = TensorProto.INT64, TensorProto.FLOAT


def invalid(code: str, detail: str, field_name: str = "files") -> ServiceError:
    return ServiceError(code, detail, field=field_name)


def check_names(names) -> None:
    names = set(names)
    unknown = sorted(names - set(ALLOWED_FILES))
    if unknown:
        raise invalid(
            "unexpected_file",
            _("a language model set holds only %(allowed_files)s; refused: %(value)s")
            % {"allowed_files": ", ".join(ALLOWED_FILES), "value": ", ".join(unknown)[:300]},
        )
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise invalid("missing_file", _("the language model set lacks %(missing)s") % {"missing": ", ".join(missing)})


def parse_json_file(name: str, data: bytes) -> dict:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise invalid(
            "invalid_llm_file", _("%(name)s is not valid UTF-8 JSON: %(err)s") % {"name": name, "err": err}
        ) from err
    if not isinstance(value, dict):
        raise invalid("invalid_llm_file", _("%(name)s must hold a JSON object") % {"name": name})
    return value


def check_config(config: dict) -> dict:
    arch = config.get("architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise invalid(
            "unsupported_architecture",
            _("config.json names architecture %(value)s; supported: %(supported_architectures)s")
            % {"value": repr(str(arch)[:60]), "supported_architectures": ", ".join(SUPPORTED_ARCHITECTURES)},
        )
    for key in ("n_layers", "context_length", "vocab_size"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise invalid("invalid_llm_file", _("config.json: %(key)s must be a positive integer") % {"key": key})
    return config


def check_tokenizer(data: bytes) -> None:
    tok = parse_json_file("tokenizer.json", data)
    if not isinstance(tok.get("model"), dict):
        raise invalid("invalid_llm_file", _("tokenizer.json is not a Hugging Face tokenizers file (no 'model' object)"))


def check_chat_template(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid("invalid_llm_file", _("chat_template.jinja is not UTF-8 text")) from err
    if not text.strip():
        raise invalid("invalid_llm_file", _("chat_template.jinja is empty"))
    return text


# ----------------------------------------------------------------------------- the ONNX graph


class _Wire:
    """Forward-only protobuf wire reading from a file object, with skipping."""

    def __init__(self, src) -> None:
        self.src = src
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self.src.read(n)
        if len(data) != n:
            raise invalid("invalid_model", _("model.onnx is truncated (not a complete ONNX protobuf)"))
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if hasattr(self.src, "seek"):
            self.src.seek(n, io.SEEK_CUR)
            self.pos += n
            return
        while n:
            chunk = self.read(min(n, 1 << 20))
            n -= len(chunk)

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.read(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise invalid("invalid_model", _("model.onnx is not an ONNX protobuf (bad varint)"))

    def fields(self, end: int):
        """Yield (field number, wire type, value or length) up to byte offset `end`; for a
        length-delimited field the caller must read or skip the `length` bytes."""
        while self.pos < end:
            key = self.varint()
            number, wire = key >> 3, key & 7
            if wire == 0:
                yield number, wire, self.varint()
            elif wire == 1:
                self.skip(8)
            elif wire == 5:
                self.skip(4)
            elif wire == 2:
                length = self.varint()
                if self.pos + length > end:
                    raise invalid("invalid_model", _("model.onnx is not an ONNX protobuf (field overruns its message)"))
                yield number, wire, length
            else:
                raise invalid(
                    "invalid_model", _("model.onnx is not an ONNX protobuf (wire type %(wire)s)") % {"wire": wire}
                )
        if self.pos != end:
            raise invalid("invalid_model", _("model.onnx is not an ONNX protobuf (misaligned message)"))


@dataclass
class GraphInfo:
    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (elem type, rank)
    outputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    external: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (tensor, external_data)
    nested_external: list[str] = field(default_factory=list)  # in node attributes, functions: refused
    initializers: int = 0


def _value_info(raw: bytes) -> tuple[str, tuple[int, int]]:
    info = ValueInfoProto.FromString(raw)
    tensor = info.type.tensor_type
    return info.name, (tensor.elem_type, len(tensor.shape.dim))


def _scan_tensor(w: _Wire, end: int, info: GraphInfo) -> None:
    """An initializer: name (8), external_data (13), data_location (14); data skipped."""
    name, entries, location = "", {}, 0
    for number, wire, value in w.fields(end):
        if wire != 2:
            if number == 14:
                location = value
            continue
        if number == 8:
            name = w.read(value).decode("utf-8", "replace")
        elif number == 13:
            entry = TensorProto().external_data.add()
            entry.ParseFromString(w.read(value))
            entries[entry.key] = entry.value
        else:
            w.skip(value)
    info.initializers += 1
    if entries or location == TensorProto.EXTERNAL:
        info.external.append((name, entries))


def scan_model(src, size: int) -> GraphInfo:
    """Inputs, outputs and external-data references of the ONNX model readable from `src` (`size`
    bytes), skipping every initializer's data."""
    if size > GRAPH_LIMIT:
        raise invalid(
            "invalid_model",
            _("model.onnx exceeds protobuf's 2 GiB: keep the weights in model.onnx.data (external data)"),
        )
    w = _Wire(src)
    info = GraphInfo()
    saw_graph = False
    try:
        for number, wire, value in w.fields(size):
            if wire != 2:
                continue
            if number == 7:  # graph
                saw_graph = True
                _scan_graph(w, w.pos + value, info)
            elif number in (20, 25):  # training_info, functions: parsed whole (small), checked
                raw = w.read(value)
                if number == 20:
                    proto = TrainingInfoProto.FromString(raw)
                    info.nested_external += _nested_refs([proto.initialization, proto.algorithm], [])
                else:
                    info.nested_external += _nested_refs([], list(FunctionProto.FromString(raw).node))
            else:
                w.skip(value)
    except ServiceError:
        raise
    except Exception as err:  # a protobuf DecodeError or similar on a hostile file
        raise invalid("invalid_model", _("model.onnx is not an ONNX model: %(err)s") % {"err": err}) from err
    if not saw_graph:
        raise invalid("invalid_model", _("model.onnx holds no graph"))
    return info


def _nested_refs(graphs: list[GraphProto], nodes: list[NodeProto]) -> list[str]:
    """External references inside node attributes, subgraphs and these graphs (walked by
    inference_backend.onnx_external on a probe model holding only them)."""
    from onnx import ModelProto

    probe = ModelProto()
    for graph in graphs:
        probe.training_info.add().initialization.CopyFrom(graph)
    if nodes:
        probe.functions.add().node.extend(nodes)
    return external_data_references(probe)


def _scan_graph(w: _Wire, end: int, info: GraphInfo) -> None:
    for number, wire, value in w.fields(end):
        if wire != 2:
            continue
        if number == 5:
            _scan_tensor(w, w.pos + value, info)
        elif number in (11, 12):
            name, spec = _value_info(w.read(value))
            (info.inputs if number == 11 else info.outputs)[name] = spec
        elif number == 1:  # a node: its attributes may hold tensors and subgraphs
            node = NodeProto.FromString(w.read(value))
            info.nested_external += _nested_refs([], [node])
        elif number == 15:
            sparse = SparseTensorProto.FromString(w.read(value))
            for tensor in (sparse.values, sparse.indices):
                if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
                    info.nested_external.append(f"sparse initializer {tensor.name!r}")
        else:
            w.skip(value)


def check_decoder(info: GraphInfo, n_layers: int) -> None:
    """The decoder contract (COMMON §1): inputs input_ids/attention_mask/position_ids (int64, rank
    2) and past_key_values.{i}.key/value (float32, rank 4); outputs logits (float32, rank 3) and
    present.{i}.key/value (float32, rank 4), for i in 0..n_layers-1. Nothing more, nothing less."""
    want_in = {"input_ids": (_INT64, 2), "attention_mask": (_INT64, 2), "position_ids": (_INT64, 2)}
    want_out = {"logits": (_FLOAT, 3)}
    for i in range(n_layers):
        for kind in ("key", "value"):
            want_in[f"past_key_values.{i}.{kind}"] = (_FLOAT, 4)
            want_out[f"present.{i}.{kind}"] = (_FLOAT, 4)
    for what, have, want in (("input", info.inputs, want_in), ("output", info.outputs, want_out)):
        missing = [n for n in want if n not in have]
        extra = [n for n in have if n not in want]
        wrong = [n for n in want if n in have and have[n] != want[n]]
        if missing or extra or wrong:
            parts = []
            if missing:
                parts.append(f"missing {what}s {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")
            if extra:
                parts.append(f"unexpected {what}s {', '.join(extra[:4])[:200]}")
            if wrong:
                parts.append(f"{what}s with the wrong type or rank: {', '.join(wrong[:4])}")
            raise invalid(
                "invalid_decoder",
                _("model.onnx does not follow the decoder contract for %(n_layers)s layers: %(parts)s")
                % {"n_layers": n_layers, "parts": "; ".join(parts)},
            )


def check_external(info: GraphInfo, data_size: int | None) -> None:
    """External data: only `model.onnx.data` of this set, every range inside it; and the data file
    only when something refers to it."""
    if info.nested_external:
        raise invalid(
            "external_data_refused",
            _(
                "model.onnx keeps tensor data outside the model in node attributes or functions, "
                "which is refused: %(refs)s"
            )
            % {"refs": "; ".join(info.nested_external[:3])[:300]},
        )
    for name, entries in info.external:
        location = entries.get("location", "")
        if location != EXTERNAL_DATA_FILE:
            raise invalid(
                "external_data_refused",
                _(
                    "tensor %(value)s refers to external data %(value2)s; only %(external_data_file)s of the "
                    "same set is allowed"
                )
                % {"value": repr(name[:60]), "value2": repr(location[:60]), "external_data_file": EXTERNAL_DATA_FILE},
            )
        if data_size is None:
            raise invalid(
                "missing_file",
                _("model.onnx refers to %(external_data_file)s, which is not in the set")
                % {"external_data_file": EXTERNAL_DATA_FILE},
            )
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else data_size - offset
        except ValueError as err:
            raise invalid(
                "external_data_refused",
                _("tensor %(value)s: bad external data offset or length") % {"value": repr(name[:60])},
            ) from err
        if offset < 0 or length < 0 or offset + length > data_size:
            raise invalid(
                "external_data_refused",
                _(
                    "tensor %(value)s refers to bytes %(offset)s..%(value2)s of %(external_data_file)s, "
                    "which holds %(data_size)s"
                )
                % {
                    "value": repr(name[:60]),
                    "offset": offset,
                    "value2": offset + length,
                    "external_data_file": EXTERNAL_DATA_FILE,
                    "data_size": data_size,
                },
            )
    if data_size is not None and not info.external:
        raise invalid(
            "unexpected_file",
            _("%(external_data_file)s is in the set but model.onnx refers to no external data")
            % {"external_data_file": EXTERNAL_DATA_FILE},
        )


def build_signature(config: dict, generation: dict, chat_template: str, files: list[dict]) -> dict:
    """ModelVersion.signature of an llm version (COMMON §3)."""
    return {
        "kind": "llm",
        "architecture": config["architecture"],
        "context_length": config["context_length"],
        "quantization": config.get("quantization", ""),
        "chat_template": chat_template,
        "bos_token": config.get("bos_token", ""),
        "eos_token": config.get("eos_token", ""),
        # control tokens: the gateway refuses them inside chat messages (a forged turn or system prompt)
        "special_tokens": [t for t in config.get("special_tokens", []) if isinstance(t, str) and t][:256],
        "generation_defaults": generation,
        "files": files,
    }
