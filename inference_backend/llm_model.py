"""Triton decoupled python-backend model that serves an encrypted LLM file set (docs/llm-serving.md).

The deployment sends this file as ``file:1/model.py`` with the encrypted files of one registry
version (``file:1/<storage name>``) and the config of
:func:`inference_backend.llm.loader.render_llm_python_config`: ``wrapped_dek``, ``kek_id``,
``artifact_files`` (JSON list of ``{"name", "file", "aad", "sha256"}``) and optionally
``intra_op_threads`` (2), ``max_active_sequences`` (8), ``prefill_chunk`` (64), ``allow_spinning``
(0: idle onnxruntime threads sleep instead of spinning, see the loader).

On load the data key is unwrapped with this host's KEK provider, every file is decrypted in
memory and checked (:mod:`inference_backend.llm.loader`), the process moves to an empty private
working directory (as ``triton_model.py`` does) and one in-flight batching
:class:`inference_backend.llm.engine.Engine` starts per model instance.

The tensor contract is the one of Triton's vLLM backend (docs/llm-serving.md "Triton tensor contract"):
``text_input`` (already templated), ``stream``, ``sampling_parameters`` (JSON),
``exclude_input_in_output``, ``return_finish_reason``, ``return_num_input_tokens``,
``return_num_output_tokens`` → ``text_output``, ``finish_reason``, ``num_input_tokens``,
``num_output_tokens``. ``execute`` returns ``None``; responses go through each request's response
sender from the engine thread, the last one with ``TRITONSERVER_RESPONSE_COMPLETE_FINAL``.
Bad input is an error response ``[code] message`` sent before any token. ``request.is_cancelled()``
is polled every engine step; a cancelled request leaves the batch, and every finished request is
logged with ``sovereign-llm: request <id> finished reason=<r> prompt_tokens=<n> output_tokens=<m> steps=<k>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
from typing import Any, NoReturn

# The python backend stub runs its embedded interpreter isolated: PYTHONPATH is not applied.
for _entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import numpy as np  # noqa: E402

from inference_backend.llm.engine import Engine, load_json  # noqa: E402
from inference_backend.llm.loader import LoadError, decrypt_file_set, session_from_files  # noqa: E402
from inference_backend.llm.sampling import EngineError  # noqa: E402
from inference_backend.llm.tokenizer import Tokenizer, TokenizerError  # noqa: E402

try:
    import triton_python_backend_utils as pb_utils  # noqa: E402
except ImportError:  # outside Triton (docs, unit tests that install a stand-in module)
    pb_utils = None

BOOL_INPUTS = (
    "stream",
    "exclude_input_in_output",
    "return_finish_reason",
    "return_num_input_tokens",
    "return_num_output_tokens",
)


def _fail(message: str) -> NoReturn:
    exc_type = getattr(pb_utils, "TritonModelException", RuntimeError)
    raise exc_type(message)


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}


def _int_parameter(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        _fail(f"model config parameter {name} must be an integer, got {raw!r}")
    if not low <= value <= high:
        _fail(f"model config parameter {name} must be between {low} and {high}, got {value}")
    return value


class _Request:
    """One request's response side: turns engine callbacks into Triton responses."""

    def __init__(self, model: TritonPythonModel, request: Any, sender: Any, options: dict[str, Any]) -> None:
        self.model = model
        self.request = request
        self.sender = sender
        self.stream = options["stream"]
        self.options = options
        self.prompt_tokens = 0
        self.reported_tokens = 0
        self.pieces: list[str] = []
        self.prefix = "" if options["exclude_input_in_output"] else options["prompt"]
        self.done = False
        self.lock = threading.Lock()

    def _response(self, text: str, finish_reason: str, output_tokens: int) -> Any:
        tensors = [pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))]
        if self.options["return_finish_reason"]:
            tensors.append(pb_utils.Tensor("finish_reason", np.array([finish_reason.encode()], dtype=np.object_)))
        if self.options["return_num_input_tokens"]:
            tensors.append(pb_utils.Tensor("num_input_tokens", np.array([self.prompt_tokens], dtype=np.uint32)))
        if self.options["return_num_output_tokens"]:
            tensors.append(pb_utils.Tensor("num_output_tokens", np.array([output_tokens], dtype=np.uint32)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def on_delta(self, text: str, n_tokens: int) -> None:
        if self.prefix:
            text, self.prefix = self.prefix + text, ""
        if not self.stream:
            self.pieces.append(text)
            return
        self.reported_tokens += n_tokens
        self.sender.send(self._response(text, "", n_tokens))

    def on_finish(self, reason: str, prompt_tokens: int, output_tokens: int) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        self.prompt_tokens = prompt_tokens
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if reason == "cancelled":
            with contextlib.suppress(Exception):
                self.sender.send(flags=final)
            return
        if self.stream:
            response = self._response(self.prefix, reason, output_tokens - self.reported_tokens)
        else:
            response = self._response(self.prefix + "".join(self.pieces), reason, output_tokens)
        with contextlib.suppress(Exception):  # the client may be gone
            self.sender.send(response, flags=final)

    def on_error(self, message: str) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        self.model.send_error(self.sender, f"[internal] {message}")


class TritonPythonModel:
    """Decrypts the file set in memory and serves it with one in-flight batching engine."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name") or config.get("name", "?")
        params = _parameters(config)
        threads = _int_parameter(params, "intra_op_threads", 2, 1, 256)
        max_active = _int_parameter(params, "max_active_sequences", 8, 1, 256)
        chunk = _int_parameter(params, "prefill_chunk", 64, 1, 8192)
        spinning = _int_parameter(params, "allow_spinning", 0, 0, 1) == 1
        directory = os.path.join(args["model_repository"], args["model_version"])
        try:
            files = decrypt_file_set(directory, params)
        except LoadError as exc:
            _fail(f"{self.model_name}: {exc}")
        self.workdir = tempfile.mkdtemp(prefix="sovereign-llm-")
        os.chdir(self.workdir)  # nothing onnxruntime might resolve by name is found here
        try:
            session = session_from_files(files, intra_op_threads=threads, allow_spinning=spinning)
            tokenizer = Tokenizer(files["tokenizer.json"])
            model_config = load_json(files["config.json"])
            generation = load_json(files.get("generation_config.json"))
            self.engine = Engine(
                session,
                tokenizer,
                model_config,
                generation,
                max_active_sequences=max_active,
                prefill_chunk=chunk,
                log=self._log,
            )
        except (LoadError, TokenizerError, ValueError, KeyError) as exc:
            _fail(f"{self.model_name}: cannot start the LLM engine: {exc}")
        finally:
            files.clear()
        self._log(
            f"sovereign-llm: model {self.model_name} ready (layers={model_config.get('n_layers')}, "
            f"quantization={model_config.get('quantization')}, threads={threads}, "
            f"max_active_sequences={max_active}, prefill_chunk={chunk})"
        )

    @staticmethod
    def _log(message: str) -> None:
        if pb_utils is not None:
            pb_utils.Logger.log_info(message)

    @staticmethod
    def send_error(sender: Any, message: str) -> None:
        with contextlib.suppress(Exception):
            sender.send(
                pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )

    @staticmethod
    def _read_options(request: Any) -> dict[str, Any]:
        def scalar(name: str) -> Any:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return None
            array = tensor.as_numpy().reshape(-1)
            if array.size != 1:
                raise EngineError("invalid_input", f"{name} must hold exactly one element, got {array.size}")
            return array[0]

        text = scalar("text_input")
        if text is None:
            raise EngineError("invalid_input", "text_input is required")
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise EngineError("invalid_input", "text_input is not valid UTF-8") from None
        if not isinstance(text, str):
            raise EngineError("invalid_input", "text_input must be a string")
        options: dict[str, Any] = {"prompt": text}
        for name in BOOL_INPUTS:
            value = scalar(name)
            if value is not None and not isinstance(value, bool | np.bool_):
                raise EngineError("invalid_input", f"{name} must be a BOOL")
            options[name] = bool(value) if value is not None else (name == "exclude_input_in_output")
        sampling = scalar("sampling_parameters")
        if isinstance(sampling, bytes):
            try:
                sampling = sampling.decode("utf-8")
            except UnicodeDecodeError:
                raise EngineError("invalid_sampling_parameters", "sampling_parameters is not valid UTF-8") from None
        options["sampling_parameters"] = sampling
        return options

    def execute(self, requests: list[Any]) -> None:
        """Admit each request into the engine (or answer it with an error); responses follow."""
        for request in requests:
            sender = request.get_response_sender()
            try:
                options = self._read_options(request)
                prompt_ids, params, _ = self.engine.validate(options["prompt"], options["sampling_parameters"])
                handler = _Request(self, request, sender, options)
                handler.prompt_tokens = len(prompt_ids)
                self.engine.submit(
                    None,
                    params,
                    prompt_ids=prompt_ids,
                    on_delta=handler.on_delta,
                    on_finish=handler.on_finish,
                    on_error=handler.on_error,
                    cancelled=request.is_cancelled,
                    request_id=request.request_id() or None,
                )
            except EngineError as exc:
                self._log(f"sovereign-llm: request {request.request_id() or '-'} refused {exc}")
                self.send_error(sender, str(exc))
            except Exception as exc:  # never leave a request without its final response
                self.send_error(sender, f"[internal] {type(exc).__name__}: {exc}")
        return None

    def finalize(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
        workdir = getattr(self, "workdir", None)
        if workdir:
            with contextlib.suppress(OSError):
                if os.path.samefile(os.getcwd(), workdir):
                    os.chdir("/")
                os.rmdir(workdir)
