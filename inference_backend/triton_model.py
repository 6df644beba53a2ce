"""Triton python-backend model that serves an envelope-encrypted ONNX artifact.

The portal sends this file to Triton as ``file:1/model.py`` together with the encrypted
artifact (``file:1/<artifact_file>``) and a model config whose ``parameters`` carry
``artifact_file``, ``wrapped_dek`` (base64), ``kek_id``, ``artifact_aad`` and
``artifact_sha256``. On load, the Triton host unwraps the data key with its own KEK
provider (configured by its environment, see :func:`inference_backend.kek.provider_from_env`),
decrypts the artifact in memory, checks its SHA-256 and builds an onnxruntime session
from the bytes. The plaintext never touches the disk.

Before the session is built the model is parsed and refused if any tensor keeps its data in an
external file (:mod:`inference_backend.onnx_external`), and the process moves to an empty private
working directory: onnxruntime resolves external-data names of a model built from bytes against
the working directory, so even a reference this check missed finds nothing to read there.

Optional parameter: ``intra_op_threads`` (onnxruntime intra-op threads per instance).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
import sys
import tempfile
from typing import Any, NoReturn

# The python backend stub runs its embedded interpreter isolated (sys.flags.ignore_environment):
# PYTHONPATH is not applied. Honour it here so a host that is not pip-installed (the local
# development server) can still import ``inference_backend``.
for _entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402
from onnx import ModelProto  # noqa: E402

from inference_backend.envelope import ArtifactDecryptError, sha256_hex  # noqa: E402
from inference_backend.kek import KekError, provider_from_env  # noqa: E402
from inference_backend.onnx_external import describe_references, external_data_references  # noqa: E402
from inference_backend.stream import StreamError, decrypt_artifact_file  # noqa: E402

try:
    import triton_python_backend_utils as pb_utils  # noqa: E402
except ImportError:  # outside Triton (docs, unit tests that install a stand-in module)
    pb_utils = None

REQUIRED_PARAMETERS = ("artifact_file", "wrapped_dek", "kek_id", "artifact_aad", "artifact_sha256")


class BadRequest(Exception):
    """One request's inputs are unusable; only that request fails."""


def _fail(message: str) -> NoReturn:
    """Raise the exception Triton reports as the model's load failure."""
    exc_type = getattr(pb_utils, "TritonModelException", RuntimeError)
    raise exc_type(message)


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}


def _refuse_external_data(plaintext: bytes) -> None:
    """Fail the load when the model refers to external data (checked again here: the artifact may
    predate the upload check, or come from another portal)."""
    model = ModelProto()
    try:
        model.ParseFromString(plaintext)
    except (DecodeError, ValueError, RuntimeError):
        _fail("the decrypted model artifact is not an ONNX model")
    references = external_data_references(model)
    del model
    if references:
        _fail(f"refused before building the onnxruntime session: {describe_references(references)}")


def _enter_empty_directory() -> str:
    """chdir to a fresh empty directory only this process can enter (mode 0700); return its path.

    Each model instance runs in its own python-backend stub process, so this changes nothing
    for other models. Whatever directory Triton was started in (a container's WORKDIR, a host
    directory holding key files), a name onnxruntime resolves against it finds nothing.
    """
    path = tempfile.mkdtemp(prefix="sovereign-model-")
    os.chdir(path)
    return path


def _error_response(message: str, code: str = "INTERNAL") -> Any:
    """An error answer. `code` names a TritonError code: INVALID_ARG for what the caller sent (Triton
    answers 400, the gateway neither counts it against the server nor as the version's failure),
    INTERNAL for what went wrong here (500)."""
    error_type = pb_utils.TritonError
    value = getattr(error_type, code, None)
    error = error_type(message) if value is None else error_type(message, value)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _caller_fault(exc: Exception) -> bool:
    """True for an onnxruntime refusal of the inputs themselves (an index out of range, a shape the
    graph cannot take): its INVALID_ARGUMENT status, raised as the InvalidArgument class."""
    return type(exc).__name__ == "InvalidArgument"


class TritonPythonModel:
    """Serves one encrypted ONNX model with onnxruntime, batching across requests."""

    def initialize(self, args: dict[str, str]) -> None:
        """Unwrap the data key, decrypt and verify the artifact, and build the onnxruntime session."""
        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name") or config.get("name", "?")
        self.batched = int(config.get("max_batch_size", 0)) > 0
        params = _parameters(config)
        missing = [name for name in REQUIRED_PARAMETERS if not params.get(name)]
        if missing:
            _fail(f"model config parameters are missing: {', '.join(missing)}")
        artifact_file = params["artifact_file"]
        if os.path.basename(artifact_file) != artifact_file or artifact_file in (".", ".."):
            _fail(f"artifact_file must be a file name inside the version directory, got {artifact_file!r}")
        path = os.path.join(args["model_repository"], args["model_version"], artifact_file)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below, after the decryption
        except OSError as exc:
            _fail(f"cannot read encrypted artifact {artifact_file}: {exc}")
        try:
            wrapped = base64.b64decode(params["wrapped_dek"], validate=True)
        except (binascii.Error, ValueError):
            _fail("cannot unwrap data key on this Triton host: the wrapped_dek parameter is not valid base64")
        try:
            dek = provider_from_env().unwrap(wrapped, params["kek_id"])
        except KekError as exc:
            _fail(f"cannot unwrap data key on this Triton host: {exc}")
        try:
            # Segment by segment into memory, each verified before its plaintext is kept.
            plaintext = decrypt_artifact_file(handle, dek, params["artifact_aad"].encode("utf-8"))
        except (ArtifactDecryptError, StreamError) as exc:
            _fail(f"cannot decrypt model artifact {artifact_file}: {exc}")
        finally:
            handle.close()
            del dek
        digest = sha256_hex(plaintext)
        if not hmac.compare_digest(digest, params["artifact_sha256"].strip().lower()):
            _fail(f"model artifact integrity check failed: SHA-256 {digest} != expected {params['artifact_sha256']}")
        _refuse_external_data(plaintext)
        self.workdir = _enter_empty_directory()
        options = ort.SessionOptions()
        if params.get("intra_op_threads"):
            options.intra_op_num_threads = int(params["intra_op_threads"])
        try:
            self.session = ort.InferenceSession(plaintext, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            _fail(f"onnxruntime cannot load the decrypted model: {exc}")
        finally:
            del plaintext
        self.input_names = [i.name for i in self.session.get_inputs()]
        declared = [i["name"] for i in config.get("input", [])]
        if declared and sorted(declared) != sorted(self.input_names):
            _fail(f"model config declares inputs {declared} but the ONNX model has inputs {self.input_names}")
        session_outputs = [o.name for o in self.session.get_outputs()]
        self.output_names = [o["name"] for o in config.get("output", [])] or session_outputs
        unknown = sorted(set(self.output_names) - set(session_outputs))
        if unknown:
            _fail(f"model config declares outputs {unknown} that the ONNX model does not have ({session_outputs})")

    def _inputs(self, request: Any) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise BadRequest(f"missing input {name!r}")
            array = tensor.as_numpy()
            if array.dtype == np.object_:  # BYTES: onnxruntime wants str
                array = np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(array)
            arrays[name] = array
        if self.batched:
            sizes = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
            if None in sizes.values() or len(set(sizes.values())) != 1:
                raise BadRequest(f"inputs must share the same batch size (first dimension), got {sizes}")
        return arrays

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run every request; requests with the same per-item shapes share ONE session run."""
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                arrays = self._inputs(request)
            except BadRequest as exc:
                responses[index] = _error_response(f"{self.model_name}: {exc}", "INVALID_ARG")
                continue
            if self.batched:
                key = tuple((name, arrays[name].shape[1:], arrays[name].dtype.str) for name in self.input_names)
            else:
                key = (index,)  # without batching every request runs alone
            groups.setdefault(key, []).append((index, arrays))
        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def _run_group(self, members: list[tuple[int, dict[str, np.ndarray]]], responses: list[Any]) -> None:
        if len(members) == 1:
            feeds = members[0][1]
        else:
            feeds = {name: np.concatenate([arrays[name] for _, arrays in members], axis=0) for name in self.input_names}
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as exc:
            if len(members) > 1:  # isolate the request(s) that broke the batch
                for member in members:
                    self._run_group([member], responses)
                return
            code = "INVALID_ARG" if _caller_fault(exc) else "INTERNAL"
            responses[members[0][0]] = _error_response(f"{self.model_name}: inference failed: {exc}", code)
            return
        if not self.batched:
            index = members[0][0]
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(r)) for n, r in zip(self.output_names, results, strict=True)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            return
        sizes = [arrays[self.input_names[0]].shape[0] for _, arrays in members]
        total = sum(sizes)
        bad = [n for n, r in zip(self.output_names, results, strict=True) if r.ndim == 0 or r.shape[0] != total]
        if bad:
            for index, _ in members:
                responses[index] = _error_response(
                    f"{self.model_name}: outputs {bad} do not have the batch size {total} as first dimension"
                )
            return
        offsets = np.cumsum(sizes)[:-1]
        pieces = [np.split(result, offsets, axis=0) for result in results]
        for position, (index, _) in enumerate(members):
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(piece[position]))
                for name, piece in zip(self.output_names, pieces, strict=True)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        """Release the onnxruntime session and remove the (still empty) working directory."""
        self.session = None
        workdir = getattr(self, "workdir", None)
        if workdir:
            with contextlib.suppress(OSError):
                if os.path.samefile(os.getcwd(), workdir):
                    os.chdir("/")  # never stay in a deleted directory
                # Not empty or already gone: leave it, never delete what this model did not create.
                os.rmdir(workdir)
