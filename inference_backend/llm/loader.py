"""Decrypt an LLM artifact set in memory and build its onnxruntime session; render its Triton config.

The deployment sends the encrypted files of one registry version (docs/llm-serving.md "The file set") to
Triton with the decoupled python model ``inference_backend/llm_model.py``. Its config carries
(string parameters): ``wrapped_dek`` (base64), ``kek_id`` and ``artifact_files``, a JSON list of
``{"name", "file", "aad", "sha256"}``: ``name`` is the file's name in the set, ``file`` the
encrypted file's name in the version directory, ``aad`` the associated data it was sealed with,
``sha256`` the plaintext digest. Each file is decrypted segment by segment into memory
(:mod:`inference_backend.stream`) and checked against its digest; nothing is written to disk.

External data: a decoder graph over protobuf's 2 GiB keeps its weights in ``model.onnx.data``,
another file of the same encrypted set. It is handed to onnxruntime from memory
(``SessionOptions.add_external_initializers_from_files_in_memory``) after every external
reference of the graph was checked to name exactly that file and to lie inside it. Any other
external reference is refused, as :mod:`inference_backend.onnx_external` refuses it for
classifiers.

No Django here: this module ships to Triton hosts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from onnx import ModelProto, TensorProto

from inference_backend.config import to_pbtxt
from inference_backend.envelope import ArtifactDecryptError, sha256_hex
from inference_backend.kek import KekError, KekProvider, provider_from_env
from inference_backend.onnx_external import _Walk, describe_references, is_external
from inference_backend.stream import StreamError, decrypt_artifact_file

#: The names a file set may contain (docs/llm-serving.md); anything else is refused.
FILE_NAMES = (
    "model.onnx",
    "model.onnx.data",
    "tokenizer.json",
    "chat_template.jinja",
    "generation_config.json",
    "config.json",
)
REQUIRED_FILES = ("model.onnx", "tokenizer.json", "config.json")
EXTERNAL_DATA_NAME = "model.onnx.data"
REQUIRED_PARAMETERS = ("wrapped_dek", "kek_id", "artifact_files")
#: The python model file the deployment sends as ``file:1/model.py``.
MODEL_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "llm_model.py")


class LoadError(Exception):
    """The artifact set cannot be decrypted or is not a usable LLM file set."""


def _safe_file_name(value: Any, what: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\x00" in value
        or os.path.basename(value) != value
    ):
        raise LoadError(f"{what} must be a plain file name without path separators, got {value!r}")
    return value


def parse_artifact_files(raw: str) -> list[dict[str, str]]:
    """Validate the ``artifact_files`` parameter; return its entries."""
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise LoadError(f"artifact_files is not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise LoadError("artifact_files must be a non-empty JSON list")
    seen: set[str] = set()
    checked = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"name", "file", "aad", "sha256"}:
            raise LoadError('each artifact_files entry must be {"name", "file", "aad", "sha256"}')
        name = _safe_file_name(entry["name"], "artifact_files name")
        if name not in FILE_NAMES:
            raise LoadError(f"artifact_files name {name!r} is not part of the LLM file set {list(FILE_NAMES)}")
        if name in seen:
            raise LoadError(f"artifact_files names {name!r} twice")
        seen.add(name)
        _safe_file_name(entry["file"], "artifact_files file")
        if not isinstance(entry["aad"], str) or not isinstance(entry["sha256"], str):
            raise LoadError("artifact_files aad and sha256 must be strings")
        checked.append(entry)
    missing = [name for name in REQUIRED_FILES if name not in seen]
    if missing:
        raise LoadError(f"artifact_files lacks {', '.join(missing)}")
    return checked


def decrypt_file_set(
    directory: str,
    parameters: Mapping[str, str],
    *,
    provider: KekProvider | None = None,
) -> dict[str, bytes]:
    """Decrypt every file of the set found in ``directory``; return {name: plaintext bytes}."""
    missing = [name for name in REQUIRED_PARAMETERS if not parameters.get(name)]
    if missing:
        raise LoadError(f"model config parameters are missing: {', '.join(missing)}")
    entries = parse_artifact_files(parameters["artifact_files"])
    try:
        wrapped = base64.b64decode(parameters["wrapped_dek"], validate=True)
    except (binascii.Error, ValueError):
        raise LoadError("cannot unwrap data key: the wrapped_dek parameter is not valid base64") from None
    try:
        dek = (provider or provider_from_env()).unwrap(wrapped, parameters["kek_id"])
    except KekError as exc:
        raise LoadError(f"cannot unwrap data key on this Triton host: {exc}") from None
    files: dict[str, bytes] = {}
    try:
        for entry in entries:
            path = os.path.join(directory, entry["file"])
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise LoadError(f"cannot read encrypted file {entry['file']} ({entry['name']}): {exc}") from None
            try:
                plaintext = decrypt_artifact_file(handle, dek, entry["aad"].encode("utf-8"))
            except (ArtifactDecryptError, StreamError) as exc:
                raise LoadError(f"cannot decrypt {entry['name']}: {exc}") from None
            finally:
                handle.close()
            digest = sha256_hex(plaintext)
            if not hmac.compare_digest(digest, entry["sha256"].strip().lower()):
                raise LoadError(f"{entry['name']} integrity check failed: SHA-256 {digest} != {entry['sha256']}")
            files[entry["name"]] = plaintext
    finally:
        del dek
    return files


def _external_references(model: ModelProto) -> list[tuple[str, TensorProto]]:
    """(where, tensor) for every tensor that refers to external data (the walk of onnx_external)."""
    found: list[tuple[str, TensorProto]] = []

    class _Collect(_Walk):
        def _tensor(self, path: str, tensor: TensorProto) -> None:
            if is_external(tensor):
                self.found.append(path)
                found.append((path, tensor))

    _Collect(model).run()
    return found


def check_external_data(model_bytes: bytes, data_size: int | None) -> None:
    """Refuse external references unless they all point inside the set's ``model.onnx.data``."""
    model = ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except Exception:
        raise LoadError("model.onnx is not an ONNX model") from None
    references = _external_references(model)
    if not references:
        return
    if data_size is None:
        raise LoadError(
            "refused before building the onnxruntime session: "
            + describe_references([where for where, _ in references])
            + " (only model.onnx.data of the same encrypted file set may hold external data)"
        )
    for where, tensor in references:
        info = {entry.key: entry.value for entry in tensor.external_data}
        if info.get("location") != EXTERNAL_DATA_NAME:
            raise LoadError(
                f"refused: {where} keeps its data in {info.get('location', '?')!r}; "
                f"only {EXTERNAL_DATA_NAME!r} of the same file set is allowed"
            )
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise LoadError(f"refused: {where} has a malformed external data offset/length") from None
        if offset < 0 or offset > data_size or (length is not None and (length < 0 or offset + length > data_size)):
            raise LoadError(f"refused: {where} points outside {EXTERNAL_DATA_NAME} ({data_size} bytes)")


def session_from_files(files: Mapping[str, bytes], *, intra_op_threads: int = 2, allow_spinning: bool = False) -> Any:
    """An onnxruntime CPU session for the set's decoder, external data (if any) from memory.

    ``allow_spinning`` off by default: idle onnxruntime threads that spin steal the CPU other
    model instances and processes need; measured on the shared 2-core box, a batch-8 decode step
    took 140-170 ms without spinning and 250-260 ms with it.
    """
    import onnxruntime as ort

    model_bytes = files["model.onnx"]
    data = files.get(EXTERNAL_DATA_NAME)
    check_external_data(model_bytes, None if data is None else len(data))
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if data is not None:
        options.add_external_initializers_from_files_in_memory([EXTERNAL_DATA_NAME], [data], [len(data)])
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LoadError(f"onnxruntime cannot load the decoder: {exc}") from None


def render_llm_python_config(
    triton_name: str, parameters: Mapping[str, Any], *, instance_count: int = 1
) -> dict[str, Any]:
    """Triton config (as a dict for :func:`inference_backend.config.to_pbtxt`) of the decoupled
    python model that serves an LLM file set with the tensor contract of docs/llm-serving.md.

    ``parameters``: ``wrapped_dek``, ``kek_id``, ``artifact_files`` (list or JSON string) and
    optionally ``intra_op_threads``, ``max_active_sequences``, ``prefill_chunk``, ``allow_spinning`` (0/1).
    """
    allowed = {*REQUIRED_PARAMETERS, "intra_op_threads", "max_active_sequences", "prefill_chunk", "allow_spinning"}
    unknown = sorted(set(parameters) - allowed)
    if unknown:
        raise ValueError(f"unknown llm model parameters: {unknown}")
    missing = [name for name in REQUIRED_PARAMETERS if not parameters.get(name)]
    if missing:
        raise ValueError(f"llm model parameters are missing: {missing}")
    values = dict(parameters)
    if not isinstance(values["artifact_files"], str):
        values["artifact_files"] = json.dumps(values["artifact_files"], separators=(",", ":"))
    parse_artifact_files(values["artifact_files"])
    values.setdefault("intra_op_threads", 2)
    values.setdefault("max_active_sequences", 8)
    values.setdefault("prefill_chunk", 64)

    def tensor(name: str, data_type: str, optional: bool = False) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": name, "data_type": data_type, "dims": [1]}
        if optional:
            spec["optional"] = True
        return spec

    return {
        "name": triton_name,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [
            tensor("text_input", "TYPE_STRING"),
            tensor("stream", "TYPE_BOOL", True),
            tensor("sampling_parameters", "TYPE_STRING", True),
            tensor("exclude_input_in_output", "TYPE_BOOL", True),
            tensor("return_finish_reason", "TYPE_BOOL", True),
            tensor("return_num_input_tokens", "TYPE_BOOL", True),
            tensor("return_num_output_tokens", "TYPE_BOOL", True),
        ],
        "output": [
            tensor("text_output", "TYPE_STRING"),
            tensor("finish_reason", "TYPE_STRING"),
            tensor("num_input_tokens", "TYPE_UINT32"),
            tensor("num_output_tokens", "TYPE_UINT32"),
        ],
        "instance_group": [{"count": int(instance_count), "kind": "KIND_CPU"}],
        "parameters": {key: {"string_value": str(value)} for key, value in sorted(values.items())},
    }


def render_llm_python_pbtxt(triton_name: str, parameters: Mapping[str, Any], *, instance_count: int = 1) -> str:
    return to_pbtxt(render_llm_python_config(triton_name, parameters, instance_count=instance_count))
