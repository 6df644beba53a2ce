"""In-flight batching decode engine for the ONNX decoder of the LLM file set (docs/llm-serving.md).

One background thread runs *steps*. A decode step advances **every** active sequence by one
token in a single onnxruntime run: ``input_ids`` [B, 1], ``attention_mask`` [B, T+1] with left
padding (each row's cache is right-aligned in the common length T), ``position_ids`` [B, 1] per
row, and the KV cache of all rows. New requests join between steps: their prompt is prefilled
apart, batch 1, one chunk (``prefill_chunk`` tokens) per step, so the others stall at most one
chunk; when the prefill is done its first token is emitted and its cache is merged into the
batch. Finished and cancelled sequences leave between steps.

KV cache handling (the measured costs in LLM_NOTES "Batching decode steps"):

- the ``present.*`` outputs of a step are the next step's ``past_key_values.*`` (no copy: the
  arrays onnxruntime returns wrap its own buffers);
- a sequence leaves by copying the last row over its row and viewing ``[:B-1]`` (a leading-axis
  slice of a C-contiguous array stays contiguous): a few hundred kB, not an ``np.delete``;
- joining (and trimming left padding nobody needs any more) writes into preallocated flat
  buffers, viewed contiguously as [B, kv_heads, T, head_dim], grown geometrically.

Callbacks run on the engine thread and must not block: ``on_delta(text, n_tokens)`` for each
complete text delta (never a split UTF-8 character; ``n_tokens`` = tokens since the previous
delta), then exactly one ``on_finish(reason, prompt_tokens, output_tokens)`` with reason
"stop" | "length" | "cancelled" (or ``on_error(message)`` if the step itself failed, when given).
A callback that raises cancels its request. Every finished request is logged with one line
``sovereign-llm: request <id> finished reason=<r> prompt_tokens=<n> output_tokens=<m> steps=<k>``
through the ``log`` callable.

No Django here: this module ships to Triton hosts.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference_backend.llm.sampling import (
    EngineError,
    SamplingParams,
    make_rng,
    parse_sampling_parameters,
    sample_token,
)
from inference_backend.llm.tokenizer import IncrementalDetokenizer, StopMatcher, Tokenizer

DEFAULT_MAX_NEW_TOKENS = 256
#: Left padding every row shares is trimmed once it is this long and a quarter of the length.
TRIM_MIN_PADDING = 32
#: The preallocated cache pool is kept while idle up to this size, released above it.
POOL_KEEP_BYTES = 256 * 2**20

Callback = Callable[..., Any]


@dataclass
class EngineStats:
    decode_steps: int = 0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    prefill_chunks: int = 0
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    merge_seconds: float = 0.0
    merges: int = 0
    trims: int = 0
    run_seconds: float = 0.0  # inside onnxruntime (decode and prefill)
    max_batch: int = 0
    batch_histogram: dict[int, int] = field(default_factory=dict)


@dataclass(eq=False)
class _Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    on_delta: Callback
    on_finish: Callback
    on_error: Callback | None
    cancelled: Callable[[], bool] | None
    detok: IncrementalDetokenizer
    stopper: StopMatcher
    stop_ids: frozenset[int]
    rng: np.random.Generator
    submitted: float
    cancel_requested: bool = False
    prefilled: int = 0
    past: list[np.ndarray] | None = None
    length: int = 0  # tokens in this sequence's cache
    next_token: int = -1
    output_tokens: int = 0
    unreported: int = 0
    steps: int = 0
    finished: bool = False
    first_token_at: float | None = None


class Engine:
    """Serves one decoder session; thread-safe :meth:`submit` / :meth:`cancel`."""

    def __init__(
        self,
        session: Any,
        tokenizer: Tokenizer,
        config: dict[str, Any],
        generation_config: dict[str, Any] | None = None,
        *,
        max_active_sequences: int = 8,
        prefill_chunk: int = 64,
        log: Callable[[str], None] | None = None,
        start: bool = True,
    ) -> None:
        if max_active_sequences < 1 or prefill_chunk < 1:
            raise ValueError("max_active_sequences and prefill_chunk must be at least 1")
        self.session = session
        self.tokenizer = tokenizer
        self.config = config
        self.generation_config = generation_config or {}
        self.max_active = max_active_sequences
        self.prefill_chunk = prefill_chunk
        self.log = log
        self.n_layers = int(config["n_layers"])
        self.n_kv_heads = int(config["n_kv_heads"])
        self.head_dim = int(config["head_dim"])
        self.context_length = int(config["context_length"])
        self.vocab_size = int(config.get("vocab_size") or tokenizer.vocab_size)
        eos = self.generation_config.get("eos_token_id", [])
        self.eos_ids = frozenset([eos] if isinstance(eos, int) else list(eos or []))
        default_max = self.generation_config.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS
        self.default_max_tokens = int(default_max)
        self.sampling_defaults = {k: self.generation_config.get(k) for k in ("temperature", "top_p", "top_k")}

        self.past_names = [f"past_key_values.{i}.{kind}" for i in range(self.n_layers) for kind in ("key", "value")]
        present_names = [f"present.{i}.{kind}" for i in range(self.n_layers) for kind in ("key", "value")]
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        needed = {"input_ids", "attention_mask", "position_ids", *self.past_names}
        if needed - inputs or {"logits", *present_names} - outputs:
            missing = sorted((needed - inputs) | ({"logits", *present_names} - outputs))
            raise ValueError(f"the decoder graph lacks the inputs/outputs of the LLM contract: {missing[:6]}")
        self.output_names = ["logits", *present_names]

        # Batch state (engine thread only).
        self.rows: list[_Sequence] = []
        self.kv: list[np.ndarray] = []
        self.mask: np.ndarray | None = None  # [B, T] int64
        self._pool: list[np.ndarray] = []  # flat float32 buffers, one per past tensor
        self._kv_in_pool = False  # self.kv are views of the pool (until the next decode step)
        self._prefilling: collections.deque[_Sequence] = collections.deque()
        self._joining: list[_Sequence] = []
        self._waiting: collections.deque[_Sequence] = collections.deque()

        # Shared with submitters.
        self._lock = threading.Condition()
        self._inbox: list[_Sequence] = []
        self._cancels: set[str] = set()
        self._running = True
        self._ids = itertools.count(1)
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._loop, name="sovereign-llm-engine", daemon=True)
        if start:
            self._thread.start()

    # ------------------------------------------------------------------ public API

    def validate(
        self,
        prompt: str | None = None,
        params: SamplingParams | dict[str, Any] | str | bytes | None = None,
        *,
        prompt_ids: list[int] | None = None,
    ) -> tuple[list[int], SamplingParams, int]:
        """(prompt ids, parameters, max_tokens) or :class:`EngineError` with a stable code."""
        if not isinstance(params, SamplingParams):
            params = parse_sampling_parameters(params, defaults=self.sampling_defaults, vocab_size=self.vocab_size)
        if prompt_ids is None:
            if not isinstance(prompt, str) or not prompt:
                raise EngineError("invalid_input", "text_input must be a non-empty string")
            prompt_ids = self.tokenizer.encode(prompt)
        if not prompt_ids:
            raise EngineError("invalid_input", "text_input has no tokens")
        if any(not 0 <= t < self.vocab_size for t in prompt_ids):
            raise EngineError("invalid_input", "prompt token ids outside the vocabulary")
        room = self.context_length - len(prompt_ids)
        if params.max_tokens is not None:
            if len(prompt_ids) + params.max_tokens > self.context_length:
                raise EngineError(
                    "context_length_exceeded",
                    f"the prompt has {len(prompt_ids)} tokens and max_tokens is {params.max_tokens}: "
                    f"together more than the model's context length of {self.context_length}",
                )
            max_tokens = params.max_tokens
        else:
            if room < 1:
                raise EngineError(
                    "context_length_exceeded",
                    f"the prompt has {len(prompt_ids)} tokens; the model's context length is {self.context_length}",
                )
            max_tokens = min(self.default_max_tokens, room)
        return list(prompt_ids), params, max_tokens

    def submit(
        self,
        prompt: str | None = None,
        params: SamplingParams | dict[str, Any] | str | bytes | None = None,
        *,
        on_delta: Callback,
        on_finish: Callback,
        on_error: Callback | None = None,
        cancelled: Callable[[], bool] | None = None,
        prompt_ids: list[int] | None = None,
        request_id: str | None = None,
    ) -> str:
        """Validate and queue one request; return its id. Raises :class:`EngineError` (nothing queued)."""
        ids, params, max_tokens = self.validate(prompt, params, prompt_ids=prompt_ids)
        with self._lock:
            if not self._running:
                raise EngineError("unavailable", "the engine is shut down")
            request_id = request_id or f"r{next(self._ids)}"
            seq = _Sequence(
                request_id=request_id,
                prompt_ids=ids,
                params=params,
                max_tokens=max_tokens,
                on_delta=on_delta,
                on_finish=on_finish,
                on_error=on_error,
                cancelled=cancelled,
                detok=self.tokenizer.detokenizer(ids),
                stopper=StopMatcher(params.stop),
                stop_ids=self.eos_ids | frozenset(params.stop_token_ids),
                rng=make_rng(params.seed),
                submitted=time.perf_counter(),
            )
            self._inbox.append(seq)
            self._lock.notify()
        return request_id

    def cancel(self, request_id: str) -> None:
        """Ask the engine to stop a request; it leaves before the next step."""
        with self._lock:
            self._cancels.add(request_id)
            self._lock.notify()

    def close(self, timeout: float = 30) -> None:
        """Stop the thread; unfinished requests finish with reason "cancelled"."""
        with self._lock:
            self._running = False
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def active(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------------ engine thread

    def _loop(self) -> None:
        while True:
            with self._lock:
                while self._running and not (self._inbox or self._cancels or self._has_work()):
                    self._lock.wait()
                if not self._running:
                    break
                self._waiting.extend(self._inbox)
                self._inbox.clear()
                cancels, self._cancels = self._cancels, set()
            try:
                self._step(cancels)
            except Exception as exc:  # a failed run: every sequence in flight fails, the engine goes on
                self._fail_all(f"generation failed: {exc}")
        self._shutdown()

    def _has_work(self) -> bool:
        return bool(self.rows or self._prefilling or self._waiting or self._joining)

    def _all_sequences(self) -> list[_Sequence]:
        return [*self.rows, *self._prefilling, *self._joining, *self._waiting]

    def _step(self, cancels: set[str]) -> None:
        for seq in self._all_sequences():
            if seq.request_id in cancels:
                seq.cancel_requested = True
            if not seq.cancel_requested and seq.cancelled is not None:
                try:
                    seq.cancel_requested = bool(seq.cancelled())
                except Exception:
                    seq.cancel_requested = True
            if seq.cancel_requested:
                self._finish(seq, "cancelled")
        self._drop_finished()
        # Admit: at most max_active sequences hold a cache (decoding + prefilling + joining).
        while self._waiting and len(self.rows) + len(self._prefilling) + len(self._joining) < self.max_active:
            self._prefilling.append(self._waiting.popleft())
        if self.rows:
            self._decode()
        if self._prefilling:
            self._prefill_chunk(self._prefilling[0])
        self._drop_finished()
        if self._joining:
            self._merge()

    def _drop_finished(self) -> None:
        self._waiting = collections.deque(s for s in self._waiting if not s.finished)
        self._prefilling = collections.deque(s for s in self._prefilling if not s.finished)
        self._joining = [s for s in self._joining if not s.finished]
        gone = [r for r, s in enumerate(self.rows) if s.finished]
        if gone:
            self._remove_rows(gone)

    # -- running the graph

    def _run(self, input_ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]):
        feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(self.past_names, past, strict=True))
        started = time.perf_counter()
        outputs = self.session.run(self.output_names, feeds)
        self.stats.run_seconds += time.perf_counter() - started
        return outputs[0], outputs[1:]

    def _decode(self) -> None:
        started = time.perf_counter()
        batch = len(self.rows)
        input_ids = np.fromiter((s.next_token for s in self.rows), dtype=np.int64, count=batch).reshape(batch, 1)
        positions = np.fromiter((s.length for s in self.rows), dtype=np.int64, count=batch).reshape(batch, 1)
        mask = np.concatenate([self.mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        logits, present = self._run(input_ids, mask, positions, self.kv)
        self.kv, self.mask, self._kv_in_pool = present, mask, False
        stats = self.stats
        stats.decode_steps += 1
        stats.decode_tokens += batch
        stats.max_batch = max(stats.max_batch, batch)
        stats.batch_histogram[batch] = stats.batch_histogram.get(batch, 0) + 1
        for row, seq in enumerate(self.rows):
            seq.length += 1
            seq.steps += 1
            self._accept(seq, sample_token(logits[row, -1], seq.params, seq.rng))
        stats.decode_seconds += time.perf_counter() - started

    def _prefill_chunk(self, seq: _Sequence) -> None:
        started = time.perf_counter()
        start = seq.prefilled
        chunk = seq.prompt_ids[start : start + self.prefill_chunk]
        n = len(chunk)
        past = seq.past if seq.past is not None else self._empty_past()
        logits, present = self._run(
            np.asarray([chunk], dtype=np.int64),
            np.ones((1, start + n), dtype=np.int64),
            np.arange(start, start + n, dtype=np.int64).reshape(1, n),
            past,
        )
        seq.past = present
        seq.prefilled += n
        seq.steps += 1
        self.stats.prefill_chunks += 1
        self.stats.prefill_tokens += n
        if seq.prefilled == len(seq.prompt_ids):
            self._prefilling.popleft()
            seq.length = seq.prefilled
            self._accept(seq, sample_token(logits[0, -1], seq.params, seq.rng))
            if not seq.finished:
                self._joining.append(seq)
            else:
                seq.past = None
        self.stats.prefill_seconds += time.perf_counter() - started

    def _empty_past(self) -> list[np.ndarray]:
        empty = np.zeros((1, self.n_kv_heads, 0, self.head_dim), dtype=np.float32)
        return [empty] * len(self.past_names)

    # -- tokens and text

    def _accept(self, seq: _Sequence, token: int) -> None:
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
        seq.output_tokens += 1
        seq.unreported += 1
        seq.next_token = token
        if token in seq.stop_ids:
            self._finish(seq, "stop")
            return
        text, stopped = seq.stopper.push(seq.detok.push((token,)))
        if stopped:
            self._emit(seq, text)
            self._finish(seq, "stop")
            return
        if seq.output_tokens >= seq.max_tokens or seq.length + 1 > self.context_length:
            self._emit(seq, text)
            self._finish(seq, "length")
            return
        if text:
            self._emit(seq, text)

    def _emit(self, seq: _Sequence, text: str) -> None:
        if not text or seq.finished:
            return
        n, seq.unreported = seq.unreported, 0
        try:
            seq.on_delta(text, n)
        except Exception:
            seq.cancel_requested = True

    def _finish(self, seq: _Sequence, reason: str) -> None:
        if seq.finished:
            return
        if reason != "cancelled":
            tail, stopped = seq.stopper.push(seq.detok.flush())
            tail += seq.stopper.flush()
            self._emit(seq, tail)
            if stopped:
                reason = "stop"
        seq.finished = True
        seq.past = None
        with contextlib.suppress(Exception):
            seq.on_finish(reason, len(seq.prompt_ids), seq.output_tokens)
        self._log(seq, reason)

    def _log(self, seq: _Sequence, reason: str) -> None:
        if self.log is not None:
            with contextlib.suppress(Exception):
                self.log(
                    f"sovereign-llm: request {seq.request_id} finished reason={reason} "
                    f"prompt_tokens={len(seq.prompt_ids)} output_tokens={seq.output_tokens} steps={seq.steps}"
                )

    def _fail_all(self, message: str) -> None:
        for seq in self._all_sequences():
            if seq.finished:
                continue
            seq.finished = True
            seq.past = None
            with contextlib.suppress(Exception):
                if seq.on_error is not None:
                    seq.on_error(message)
                else:
                    seq.on_finish("error", len(seq.prompt_ids), seq.output_tokens)
            self._log(seq, "error")
        self.rows, self.kv, self.mask = [], [], None
        self._prefilling.clear()
        self._joining.clear()
        self._waiting.clear()

    def _shutdown(self) -> None:
        with self._lock:
            self._waiting.extend(self._inbox)
            self._inbox.clear()
        for seq in self._all_sequences():
            self._finish(seq, "cancelled")
        self.rows, self.kv, self.mask = [], [], None

    # -- cache layout

    def _buffers(self, batch: int, length: int) -> list[np.ndarray]:
        """Contiguous [batch, kv_heads, length, head_dim] views into the preallocated pool."""
        size = batch * self.n_kv_heads * length * self.head_dim
        if not self._pool or self._pool[0].shape[0] < size:
            capacity = max(size, int(self._pool[0].shape[0] * 1.5) if self._pool else 0)
            self._pool = [np.empty(capacity, dtype=np.float32) for _ in self.past_names]
        shape = (batch, self.n_kv_heads, length, self.head_dim)
        return [buffer[:size].reshape(shape) for buffer in self._pool]

    def _merge(self) -> None:
        """Add the sequences whose prefill finished to the batch (one copy of the cache)."""
        started = time.perf_counter()
        joining, self._joining = self._joining, []
        old_batch = len(self.rows)
        old_len = self.mask.shape[1] if self.mask is not None else 0
        new_len = max([old_len, *(s.length for s in joining)])
        batch = old_batch + len(joining)
        if self._kv_in_pool:
            # The batch still lives in the pool (no decode step since the last merge): copy it out first.
            self.kv = [np.array(a) for a in self.kv]
        buffers = self._buffers(batch, new_len)
        mask = np.zeros((batch, new_len), dtype=np.int64)
        offset = new_len - old_len
        for index, target in enumerate(buffers):
            if offset:
                target[:old_batch, :, :offset, :] = 0.0
            if old_batch:
                target[:old_batch, :, offset:, :] = self.kv[index]
        if old_batch:
            mask[:old_batch, offset:] = self.mask
        for k, seq in enumerate(joining):
            row = old_batch + k
            pad = new_len - seq.length
            for index, target in enumerate(buffers):
                if pad:
                    target[row, :, :pad, :] = 0.0
                target[row, :, pad:, :] = seq.past[index][0]
            mask[row, pad:] = 1
            seq.past = None
            self.rows.append(seq)
        self.kv, self.mask, self._kv_in_pool = buffers, mask, True
        self.stats.merges += 1
        self.stats.merge_seconds += time.perf_counter() - started

    def _remove_rows(self, gone: list[int]) -> None:
        """Swap-remove rows: the last row is copied over each leaving one, then [:B-k] is viewed."""
        for row in sorted(gone, reverse=True):
            last = len(self.rows) - 1
            if row != last:
                for array in self.kv:
                    array[row] = array[last]
                self.mask[row] = self.mask[last]
                self.rows[row] = self.rows[last]
            self.rows.pop()
        batch = len(self.rows)
        if batch == 0:
            self.kv, self.mask, self._kv_in_pool = [], None, False
            if self._pool and self._pool[0].nbytes * len(self._pool) > POOL_KEEP_BYTES:
                self._pool = []  # a long-context burst is over: give the memory back
            return
        self.kv = [array[:batch] for array in self.kv]
        self.mask = self.mask[:batch]
        self._trim_padding()

    def _trim_padding(self) -> None:
        total = self.mask.shape[1]
        padding = total - max(s.length for s in self.rows)
        if padding < TRIM_MIN_PADDING or padding * 4 < total:
            return
        batch, length = len(self.rows), total - padding
        if self._kv_in_pool:
            self.kv = [np.array(a) for a in self.kv]
        buffers = self._buffers(batch, length)
        for source, target in zip(self.kv, buffers, strict=True):
            target[...] = source[:, :, padding:, :]
        self.kv, self._kv_in_pool = buffers, True
        self.mask = np.ascontiguousarray(self.mask[:, padding:])
        self.stats.trims += 1


def load_json(data: bytes | str | None) -> dict[str, Any]:
    if data is None:
        return {}
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def engine_from_files(
    files: dict[str, bytes], *, intra_op_threads: int = 2, allow_spinning: bool = False, **kwargs: Any
) -> Engine:
    """An engine from a decrypted file set (names of the file set, docs/llm-serving.md → bytes)."""
    from inference_backend.llm.loader import session_from_files

    session = session_from_files(files, intra_op_threads=intra_op_threads, allow_spinning=allow_spinning)
    config = load_json(files["config.json"])
    generation = load_json(files.get("generation_config.json"))
    return Engine(session, Tokenizer(files["tokenizer.json"]), config, generation, **kwargs)
