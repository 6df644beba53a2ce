"""GGUF (llama architecture) → ONNX decoder with a KV cache, plus tokenizer and generation files.

``convert(source, quant="int4"|"fp32")`` reads a GGUF file with the ``gguf`` package (numpy only,
no torch) and builds, op by op with ``onnx.helper``, the file set of docs/llm.md:

- ``model.onnx``: inputs ``input_ids`` [batch, seq], ``attention_mask`` [batch, past+seq] (left
  padding allowed), ``position_ids`` [batch, seq], ``past_key_values.{i}.key|value``
  [batch, n_kv_heads, past, head_dim]; outputs ``logits`` [batch, seq, vocab] and
  ``present.{i}.key|value``. RMSNorm, half-split rotary embeddings (after undoing llama.cpp's
  Q/K row permutation), grouped-query attention without copying the KV heads, SwiGLU.
- ``tokenizer.json`` (Hugging Face ``tokenizers``: byte-level BPE from the GGUF vocabulary,
  merges and token types; the pre-tokenizer named by ``tokenizer.ggml.pre``),
  ``chat_template.jinja``, ``generation_config.json``, ``config.json``.

int4: each Q4_1 (or Q4_0) weight becomes a ``com.microsoft.MatMulNBits`` (bits 4, block 32,
accuracy level 0) whose 4-bit codes and scales are the GGUF block's own, re-ordered only (GGUF keeps
element j and j+16 in one byte, MatMulNBits elements 2i and 2i+1). Q4_1 stores w = d·q + m while
MatMulNBits computes (q − zp)·scale: a float zero point −m/d would be exact too, but onnxruntime
then falls back to a kernel about 15× slower, so the MatMulNBits runs with scale d and zero point 0
and the block minimums are added exactly beside it: Σ_k (d·q + m)·x = Σ_k d·q·x + Σ_blocks m·(Σ_block x)
(a small fp32 MatMul of the per-block sums of x with the m matrix). Q4_0 (w = d·(q − 8)) uses the
default zero point 8. Other types (Q8_0, F16, BF16, F32) are dequantised to fp32; fp32 dequantises
everything. The embedding is dequantised to fp32 for ``Gather``; a tied output head is a ``Gemm``
on the same initializer (8-bit MatMulNBits at accuracy level 0 was 40× slower than that).

Refusals raise :class:`GGUFImportError` with a stable ``code``: ``gguf_malformed``,
``gguf_unsupported_architecture``, ``gguf_unsupported_tensor_type``, ``gguf_unsupported_tokenizer``,
``gguf_invalid_option``. The plaintext is returned in memory (or handed to ``sink`` file by file);
nothing is written to disk. No Django here: this module ships to Triton hosts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper

#: Bumped whenever the produced files change for the same GGUF (cache keys include it).
CONVERTER_VERSION = 1

#: Names of the file set, in the order they are produced.
FILE_NAMES = ("model.onnx", "tokenizer.json", "chat_template.jinja", "generation_config.json", "config.json")
EXTERNAL_DATA_NAME = "model.onnx.data"

#: Tensor bytes above which weights go to ``model.onnx.data`` (protobuf cannot exceed 2 GiB).
EXTERNAL_DATA_THRESHOLD = 2**31 - 64 * 2**20

QUANTS = ("int4", "fp32")
OPSET = 21
BLOCK = 32

Progress = Callable[[float, str], None]
Sink = Callable[[str, bytes], None]


class GGUFImportError(Exception):
    """A GGUF file this importer refuses; ``code`` is stable, ``message`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- reading


def _memfd_copy(chunks) -> BinaryIO:
    """An anonymous in-memory file (memfd: never on disk) holding the chunks, for np.memmap."""
    fd = os.memfd_create("gguf-import", 0)
    handle = os.fdopen(fd, "w+b")
    for chunk in chunks:
        handle.write(chunk)
    handle.flush()
    handle.seek(0)
    return handle


def _open_reader(source):
    import gguf

    try:
        if isinstance(source, (str, os.PathLike)):
            return gguf.GGUFReader(source, "r")
        if isinstance(source, (bytes, bytearray, memoryview)):
            return gguf.GGUFReader(_memfd_copy([source]), "r")
        try:
            source.fileno()
            seekable = source.seekable()
        except (AttributeError, OSError, io.UnsupportedOperation):
            seekable = False
        if seekable:
            source.seek(0)
            return gguf.GGUFReader(source, "r")
        return gguf.GGUFReader(_memfd_copy(iter(lambda: source.read(1 << 20), b"")), "r")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # untrusted bytes: any parser failure is a malformed file
        raise GGUFImportError("gguf_malformed", f"not a readable GGUF file: {exc}") from exc


_MISSING = object()


def _meta(reader, key: str, default: Any = _MISSING) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise GGUFImportError("gguf_malformed", f"missing metadata key {key!r}")
        return default
    try:
        return field.contents()
    except Exception as exc:
        raise GGUFImportError("gguf_malformed", f"unreadable metadata key {key!r}: {exc}") from exc


def _meta_int(reader, key: str, default: Any = _MISSING, minimum: int = 1) -> int:
    value = _meta(reader, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise GGUFImportError("gguf_malformed", f"metadata {key!r} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _meta_float(reader, key: str, default: Any = _MISSING) -> float:
    value = _meta(reader, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise GGUFImportError("gguf_malformed", f"metadata {key!r} must be a number, got {value!r}")
    return float(value)


def _sha256(reader) -> str:
    digest = hashlib.sha256()
    data = reader.data
    step = 16 << 20
    for start in range(0, len(data), step):
        digest.update(memoryview(np.ascontiguousarray(data[start : start + step])))
    return digest.hexdigest()


def _hparams(reader) -> dict:
    arch = _meta(reader, "general.architecture")
    if arch != "llama":
        raise GGUFImportError("gguf_unsupported_architecture", f"architecture {arch!r} is not supported (only 'llama')")
    p = "llama."
    n_heads = _meta_int(reader, p + "attention.head_count")
    hidden = _meta_int(reader, p + "embedding_length")
    hp = {
        "n_layers": _meta_int(reader, p + "block_count"),
        "hidden_size": hidden,
        "n_heads": n_heads,
        "n_kv_heads": _meta_int(reader, p + "attention.head_count_kv", n_heads),
        "ffn_size": _meta_int(reader, p + "feed_forward_length"),
        "context_length": _meta_int(reader, p + "context_length"),
        "rms_norm_eps": _meta_float(reader, p + "attention.layer_norm_rms_epsilon"),
        "rope_theta": _meta_float(reader, p + "rope.freq_base", 10000.0),
    }
    if _meta(reader, p + "expert_count", 0):
        raise GGUFImportError("gguf_unsupported_architecture", "mixture-of-experts llama models are not supported")
    head_dim = _meta_int(reader, p + "attention.key_length", hidden // n_heads)
    if _meta_int(reader, p + "attention.value_length", head_dim) != head_dim:
        raise GGUFImportError("gguf_unsupported_architecture", "key and value head sizes differ")
    if head_dim % 2 or n_heads % hp["n_kv_heads"]:
        raise GGUFImportError("gguf_malformed", "head counts or head size are inconsistent")
    hp["head_dim"] = head_dim
    if _meta_int(reader, p + "rope.dimension_count", head_dim) != head_dim:
        raise GGUFImportError("gguf_unsupported_architecture", "partial rotary embeddings are not supported")
    scaling = _meta(reader, p + "rope.scaling.type", "none")
    factor = 1.0
    if scaling == "linear":
        factor = _meta_float(reader, p + "rope.scaling.factor", 1.0)
        if factor <= 0:
            raise GGUFImportError("gguf_malformed", "rope scaling factor must be positive")
    elif scaling not in ("none", ""):
        raise GGUFImportError("gguf_unsupported_architecture", f"rope scaling {scaling!r} is not supported")
    hp["rope_scaling_factor"] = factor
    return hp


# --------------------------------------------------------------------------- weights


def _gguf_types():
    from gguf import GGMLQuantizationType as T

    return T


def _check_tensor(tensor, expected_ne: tuple[int, ...]) -> None:
    T = _gguf_types()
    supported = {T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0}
    if tensor.tensor_type not in supported:
        raise GGUFImportError(
            "gguf_unsupported_tensor_type",
            f"tensor {tensor.name!r} has type {tensor.tensor_type.name}; supported: "
            + ", ".join(sorted(t.name for t in supported)),
        )
    shape = tuple(int(d) for d in tensor.shape)
    if shape != expected_ne:
        raise GGUFImportError("gguf_malformed", f"tensor {tensor.name!r} has shape {shape}, expected {expected_ne}")


def _dequantize(tensor) -> np.ndarray:
    """fp32 array in numpy order (rows = ggml ne1, columns = ne0)."""
    from gguf.quants import dequantize

    T = _gguf_types()
    data = tensor.data
    if tensor.tensor_type == T.F32:
        out = np.array(data, dtype=np.float32)
    elif tensor.tensor_type == T.F16:
        out = np.asarray(data, dtype=np.float16).astype(np.float32)
    else:
        out = dequantize(np.asarray(data), tensor.tensor_type).astype(np.float32, copy=False)
    return out.reshape(tuple(int(d) for d in reversed(tensor.shape)))


def _unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (its rotary pairs rows i, i+1; ours i, i + head_dim/2)."""
    n = rows.shape[0]
    return rows.reshape(n_head, n // n_head // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """(…, 32) codes 0..15 → (…, 16) bytes, element 2i in the low nibble, 2i+1 in the high one."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def _blocks(tensor, rows: np.ndarray | None = None) -> np.ndarray:
    from gguf.constants import GGML_QUANT_SIZES

    block, type_size = GGML_QUANT_SIZES[tensor.tensor_type]
    raw = np.asarray(tensor.data if rows is None else rows)
    return raw.reshape(raw.shape[0], -1, type_size)


def q4_to_matmulnbits(tensor, rows: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """Q4_0/Q4_1 rows → MatMulNBits inputs, the GGUF codes and scales re-ordered only.

    ``B`` (N, k_blocks, 16) uint8, ``scales`` (N, k_blocks) float32 (= d), ``zero_points`` packed
    uint8 or None (Q4_0: default 8), ``minimums`` (N, k_blocks) float32 for Q4_1 (= m, added as
    m · blocksum(x) beside the MatMulNBits) else None.
    """
    T = _gguf_types()
    blocks = _blocks(tensor, rows)
    n, k_blocks = blocks.shape[:2]
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q1 = tensor.tensor_type == T.Q4_1
    qs = blocks[..., 4:20] if q1 else blocks[..., 2:18]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # GGUF: byte j holds elements j and j+16
    if not q1:  # w = d * (q - 8): MatMulNBits' default zero point
        return {"B": _pack_nibbles(codes), "scales": d, "zero_points": None, "minimums": None}
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    zero_points = np.zeros((n, (k_blocks + 1) // 2), np.uint8)
    return {"B": _pack_nibbles(codes), "scales": d, "zero_points": zero_points, "minimums": m}


# --------------------------------------------------------------------------- graph


@dataclass
class _RawTensor:
    name: str
    data_type: int
    dims: tuple[int, ...]
    raw: bytes


class _Graph:
    """Nodes in a list; initializers kept as raw bytes outside any protobuf message until
    :func:`serialize_model` encodes them one by one (protobuf copies a message on every append,
    and python's ``SerializeToString`` of a 500 MB model peaked at 5× its size)."""

    def __init__(self):
        self.nodes: list = []
        self.model = onnx.ModelProto()
        self.tensors: list[_RawTensor] = []
        self._names: set[str] = set()
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, name: str, array: np.ndarray) -> str:
        if name in self._names:  # shared constants (shapes) are added once
            return name
        self._names.add(name)
        array = np.ascontiguousarray(array)
        self.tensors.append(
            _RawTensor(name, helper.np_dtype_to_tensor_dtype(array.dtype), tuple(array.shape), array.tobytes())
        )
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, domain: str = "", **attrs):
        outs = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), domain=domain, **attrs))
        return outs[0] if outputs == 1 else outs


class _Builder:
    def __init__(self, reader, hp: dict, quant: str, progress: Progress):
        self.reader = reader
        self.hp = hp
        self.quant = quant
        self.progress = progress
        self.g = _Graph()
        self.tensors = {t.name: t for t in reader.tensors}
        self.used: set[str] = set()
        self._block_sums: dict[str, str] = {}

    def tensor(self, name: str, ne: tuple[int, ...]):
        tensor = self.tensors.get(name)
        if tensor is None:
            raise GGUFImportError("gguf_malformed", f"missing tensor {name!r}")
        _check_tensor(tensor, ne)
        self.used.add(name)
        return tensor

    def vector(self, name: str, size: int) -> str:
        return self.g.const(name, _dequantize(self.tensor(name, (size,))).reshape(size))

    def linear(self, x: str, name: str, k: int, n: int, unpermute_heads: int | None = None) -> str:
        T = _gguf_types()
        tensor = self.tensor(name, (k, n))
        rows = None
        if unpermute_heads:
            rows = _unpermute_rows(np.asarray(tensor.data), unpermute_heads)
        base = name.removesuffix(".weight")
        if self.quant == "int4" and tensor.tensor_type in (T.Q4_0, T.Q4_1):
            return self.matmulnbits(x, base, q4_to_matmulnbits(tensor, rows), k, n)
        weight = _dequantize_rows(tensor, rows) if rows is not None else _dequantize(tensor)
        return self.g.op("MatMul", [x, self.g.const(base + ".weight_t", weight.T)], hint=base)

    def matmulnbits(self, x: str, base: str, packed: dict, k: int, n: int) -> str:
        g = self.g
        inputs = [x, g.const(base + ".qweight", packed["B"]), g.const(base + ".scales", packed["scales"])]
        if packed["zero_points"] is not None:
            inputs.append(g.const(base + ".zero_points", packed["zero_points"]))
        attrs = {"K": k, "N": n, "bits": 4, "block_size": BLOCK, "accuracy_level": 0}
        y = g.op("MatMulNBits", inputs, hint=base, domain="com.microsoft", **attrs)
        if packed["minimums"] is None:
            return y
        # Q4_1's w = d·q + m: the MatMulNBits above is Σ d·q·x; add Σ_blocks m · (sum of x over the block).
        minimums = g.const(base + ".minimums_t", packed["minimums"].T)
        return g.op("Add", [y, g.op("MatMul", [self.block_sums(x, k), minimums])])

    def block_sums(self, x: str, k: int) -> str:
        """[..., K] → [..., K/32] sums over each quantisation block (shared by linears on one input)."""
        cached = self._block_sums.get(x)
        if cached is None:
            g = self.g
            blocks = g.op("Reshape", [x, g.const(f"shape_blocks_{k}", np.array([0, 0, k // BLOCK, BLOCK], np.int64))])
            cached = self._block_sums[x] = g.op("ReduceSum", [blocks, self.last_axis], keepdims=0)
        return cached

    def rmsnorm(self, x: str, weight: str) -> str:
        g = self.g
        sq = g.op("Pow", [x, self.two])
        mean = g.op("ReduceMean", [sq, self.last_axis], keepdims=1)
        std = g.op("Sqrt", [g.op("Add", [mean, self.eps])])
        return g.op("Mul", [g.op("Div", [x, std]), weight])

    def rotary(self, x: str, cos: str, sin: str) -> str:
        g = self.g
        x1, x2 = g.op("Split", [x], outputs=2, axis=-1, num_outputs=2)
        rotated = g.op("Concat", [g.op("Neg", [x2]), x1], axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])])

    def build(self) -> onnx.ModelProto:
        hp, g = self.hp, self.g
        H, nh, nkv, hd = hp["hidden_size"], hp["n_heads"], hp["n_kv_heads"], hp["head_dim"]
        L, F = hp["n_layers"], hp["ffn_size"]
        groups = nh // nkv
        embed_tensor = self.tensor("token_embd.weight", (H, self.vocab_size))
        self.progress(0.05, "embedding")

        self.two = g.const("const_two", np.array(2.0, np.float32))
        self.last_axis = g.const("const_last_axis", np.array([-1], np.int64))
        self.eps = g.const("const_rms_eps", np.array(hp["rms_norm_eps"], np.float32))
        zero_i = g.const("const_zero_i64", np.array(0, np.int64))
        one_i = g.const("const_one_i64", np.array(1, np.int64))

        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        ]
        outputs = [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch_size", "sequence_length", self.vocab_size]
            )
        ]
        for i in range(L):
            for kind in ("key", "value"):
                inputs.append(
                    helper.make_tensor_value_info(
                        f"past_key_values.{i}.{kind}",
                        TensorProto.FLOAT,
                        ["batch_size", nkv, "past_sequence_length", hd],
                    )
                )
                outputs.append(
                    helper.make_tensor_value_info(
                        f"present.{i}.{kind}", TensorProto.FLOAT, ["batch_size", nkv, "total_sequence_length", hd]
                    )
                )

        # Embedding (fp32 for Gather).
        embed = _dequantize(embed_tensor)
        embed_name = g.const("model.embed_tokens.weight", embed)
        x = g.op("Gather", [embed_name, "input_ids"], hint="embed", axis=0)

        # Additive attention mask [batch, 1, groups*seq, total]: causal within the new tokens,
        # padding from attention_mask. -1e9 (not -inf) keeps fully masked (padding) rows finite.
        seq = g.op("Gather", [g.op("Shape", ["input_ids"]), one_i], axis=0)
        total = g.op("Gather", [g.op("Shape", ["attention_mask"]), one_i], axis=0)
        past = g.op("Sub", [total, seq])
        key_idx = g.op("Range", [zero_i, total, one_i])
        query_idx = g.op("Range", [past, total, one_i])
        causal = g.op(
            "LessOrEqual",
            [
                g.op("Unsqueeze", [key_idx, g.const("axes_0", np.array([0], np.int64))]),
                g.op("Unsqueeze", [query_idx, g.const("axes_1", np.array([1], np.int64))]),
            ],
        )
        padding = g.op(
            "Unsqueeze",
            [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), g.const("axes_12", np.array([1, 2], np.int64))],
        )
        allowed = g.op("And", [causal, padding])
        mask = g.op(
            "Where",
            [
                allowed,
                g.const("mask_open", np.array(0.0, np.float32)),
                g.const("mask_closed", np.array(-1e9, np.float32)),
            ],
        )
        mask = g.op("Tile", [mask, g.const("mask_tile", np.array([1, 1, groups, 1], np.int64))], hint="attn_mask")

        # Rotary tables [batch, 1, seq, head_dim] (half-split layout, as Hugging Face's llama).
        inv_freq = 1.0 / (hp["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))
        inv_freq = (inv_freq / hp["rope_scaling_factor"]).astype(np.float32)
        pos = g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=TensorProto.FLOAT), self.last_axis])
        freqs = g.op("Mul", [pos, g.const("rope_inv_freq", inv_freq)])
        angles = g.op("Concat", [freqs, freqs], axis=-1)
        cos = g.op("Unsqueeze", [g.op("Cos", [angles]), g.const("axes_1b", np.array([1], np.int64))], hint="rope_cos")
        sin = g.op("Unsqueeze", [g.op("Sin", [angles]), g.const("axes_1c", np.array([1], np.int64))], hint="rope_sin")

        shape_bshd_q = g.const("shape_q", np.array([0, 0, nh, hd], np.int64))
        shape_bshd_kv = g.const("shape_kv", np.array([0, 0, nkv, hd], np.int64))
        shape_grouped = g.const("shape_grouped", np.array([0, nkv, -1, hd], np.int64))
        shape_heads = g.const("shape_heads", np.array([0, nh, -1, hd], np.int64))
        shape_hidden = g.const("shape_hidden", np.array([0, 0, nh * hd], np.int64))
        scale = g.const("attn_scale", np.array(1.0 / np.sqrt(hd), np.float32))

        for i in range(L):
            p = f"blk.{i}."
            h = self.rmsnorm(x, self.vector(p + "attn_norm.weight", H))
            q = self.linear(h, p + "attn_q.weight", H, nh * hd, unpermute_heads=nh)
            k = self.linear(h, p + "attn_k.weight", H, nkv * hd, unpermute_heads=nkv)
            v = self.linear(h, p + "attn_v.weight", H, nkv * hd)
            q = g.op("Transpose", [g.op("Reshape", [q, shape_bshd_q])], perm=[0, 2, 1, 3])
            k = g.op("Transpose", [g.op("Reshape", [k, shape_bshd_kv])], perm=[0, 2, 1, 3])
            v = g.op("Transpose", [g.op("Reshape", [v, shape_bshd_kv])], perm=[0, 2, 1, 3])
            q = g.op("Mul", [self.rotary(q, cos, sin), scale])
            k = self.rotary(k, cos, sin)
            self.g.nodes.append(
                helper.make_node("Concat", [f"past_key_values.{i}.key", k], [f"present.{i}.key"], axis=2)
            )
            self.g.nodes.append(
                helper.make_node("Concat", [f"past_key_values.{i}.value", v], [f"present.{i}.value"], axis=2)
            )
            # Grouped-query attention: query head h uses KV head h // groups, so the queries of
            # one KV head are contiguous: [batch, nkv, groups*seq, hd] against [batch, nkv, total, hd].
            qg = g.op("Reshape", [q, shape_grouped])
            kt = g.op("Transpose", [f"present.{i}.key"], perm=[0, 1, 3, 2])
            scores = g.op("Add", [g.op("MatMul", [qg, kt]), mask])
            probs = g.op("Softmax", [scores], axis=-1)
            attn = g.op("MatMul", [probs, f"present.{i}.value"])
            attn = g.op("Transpose", [g.op("Reshape", [attn, shape_heads])], perm=[0, 2, 1, 3])
            attn = g.op("Reshape", [attn, shape_hidden])
            x = g.op("Add", [x, self.linear(attn, p + "attn_output.weight", nh * hd, H)], hint=f"resid_attn{i}")
            h = self.rmsnorm(x, self.vector(p + "ffn_norm.weight", H))
            gate = self.linear(h, p + "ffn_gate.weight", H, F)
            up = self.linear(h, p + "ffn_up.weight", H, F)
            act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
            x = g.op("Add", [x, self.linear(act, p + "ffn_down.weight", F, H)], hint=f"resid_ffn{i}")
            self.progress(0.05 + 0.75 * (i + 1) / L, f"layer {i + 1}/{L}")

        x = self.rmsnorm(x, self.vector("output_norm.weight", H))
        logits = self._output_head(x, embed_tensor, embed_name, H)
        self.g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))

        unused = sorted(set(self.tensors) - self.used)
        if unused:
            raise GGUFImportError(
                "gguf_unsupported_architecture", f"tensors this importer does not know: {', '.join(unused[:5])}"
            )
        model = self.g.model
        graph = model.graph
        graph.name = "decoder"
        graph.node.extend(self.g.nodes)
        graph.input.extend(inputs)
        graph.output.extend(outputs)
        model.opset_import.append(helper.make_opsetid("", OPSET))
        if self.quant == "int4":
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        model.producer_name = "sovereign-gguf-import"
        model.ir_version = 10
        return model

    def _output_head(self, x: str, embed_tensor, embed_name: str, H: int) -> str:
        g, V = self.g, self.vocab_size
        if "output.weight" in self.tensors:
            return self.linear(x, "output.weight", H, V)
        # Tied: the head is the fp32 embedding matrix (MatMulNBits 8-bit at accuracy level 0 is far slower).
        flat = g.op("Reshape", [x, g.const("shape_flat", np.array([-1, H], np.int64))])
        logits = g.op("Gemm", [flat, embed_name], transB=1)
        start, end = g.const("slice_0", np.array([0], np.int64)), g.const("slice_2", np.array([2], np.int64))
        batch_seq = g.op("Slice", [g.op("Shape", [x]), start, end])
        out_shape = g.op("Concat", [batch_seq, g.const("vocab_dim", np.array([V], np.int64))], axis=0)
        return g.op("Reshape", [logits, out_shape])


def _dequantize_rows(tensor, rows: np.ndarray) -> np.ndarray:
    from gguf.quants import dequantize

    T = _gguf_types()
    if tensor.tensor_type == T.F32:
        return np.asarray(rows, dtype=np.float32)
    if tensor.tensor_type == T.F16:
        return np.asarray(rows, dtype=np.float16).astype(np.float32)
    return dequantize(np.asarray(rows), tensor.tensor_type).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- tokenizer

_GPT2_FAMILY = {"default", "gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion"}
_DIGITS_FAMILY = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_LLAMA3_FAMILY = {"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "falcon3", "pixtral", "superbpe"}
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(use_regex: bool, add_prefix_space: bool = False) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True, "use_regex": use_regex}


def _pre_tokenizer(pre: str) -> dict:
    if pre in _GPT2_FAMILY:
        return _byte_level(True)
    if pre in _DIGITS_FAMILY:
        return {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level(True)],
        }
    if pre in _LLAMA3_FAMILY:
        return {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": _LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
                _byte_level(False),
            ],
        }
    raise GGUFImportError("gguf_unsupported_tokenizer", f"pre-tokenizer {pre!r} is not supported")


def _tokenizer(reader) -> tuple[dict, dict]:
    model = _meta(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFImportError(
            "gguf_unsupported_tokenizer", f"tokenizer model {model!r} is not supported (only byte-level BPE 'gpt2')"
        )
    tokens = _meta(reader, "tokenizer.ggml.tokens")
    merges = _meta(reader, "tokenizer.ggml.merges")
    types = _meta(reader, "tokenizer.ggml.token_type", None) or [1] * len(tokens)
    if len(types) != len(tokens) or not tokens:
        raise GGUFImportError("gguf_malformed", "token list and token types disagree")
    pre = _meta(reader, "tokenizer.ggml.pre", "default")
    n = len(tokens)

    def token_id(key: str, default: Any = None) -> int | None:
        value = _meta(reader, key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < n:
            raise GGUFImportError("gguf_malformed", f"{key} {value!r} is not a token id")
        return int(value)

    bos = token_id("tokenizer.ggml.bos_token_id")
    eos = token_id("tokenizer.ggml.eos_token_id")
    if bos is None or eos is None:
        raise GGUFImportError("gguf_malformed", "missing bos/eos token ids")
    unk = token_id("tokenizer.ggml.unknown_token_id")
    pad = token_id("tokenizer.ggml.padding_token_id")
    eot = token_id("tokenizer.ggml.eot_token_id")
    eom = token_id("tokenizer.ggml.eom_token_id")
    add_bos = bool(_meta(reader, "tokenizer.ggml.add_bos_token", False))

    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    pairs = []
    for merge in merges:
        left, sep, right = merge.partition(" ")
        if not sep:
            raise GGUFImportError("gguf_malformed", f"merge {merge!r} is not two tokens")
        pairs.append([left, right])
    added = []
    special_tokens = []
    for index, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind in (2, 3, 4):  # unknown, control, user-defined
            special = kind != 4
            added.append(
                {
                    "id": index,
                    "content": token,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": not special,
                    "special": special,
                }
            )
            if special:
                special_tokens.append(token)
    if add_bos:
        post = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tokens[bos], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": tokens[bos], "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {tokens[bos]: {"id": tokens[bos], "ids": [bos], "tokens": [tokens[bos]]}},
        }
    else:
        post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer(pre),
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": tokens[unk] if unk is not None else None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": pairs,
        },
    }
    eos_ids = [eos] + [t for t in (eot, eom) if t is not None and t != eos]
    info = {
        "bos_token_id": bos,
        "eos_token_ids": eos_ids,
        "pad_token_id": pad if pad is not None else eos,
        "bos_token": tokens[bos],
        "eos_token": tokens[eos],
        "special_tokens": special_tokens,
        "vocab_size": n,
    }
    return tokenizer, info


def _generation_config(reader, info: dict) -> dict:
    def sampling(key: str, default: float) -> float:
        value = _meta(reader, "general.sampling." + key, None)
        return default if value is None else float(value)

    top_k = int(sampling("top_k", 0))
    return {
        "bos_token_id": info["bos_token_id"],
        "eos_token_id": info["eos_token_ids"],
        "pad_token_id": info["pad_token_id"],
        "temperature": sampling("temp", 0.7),
        "top_p": sampling("top_p", 0.9),
        "top_k": top_k if top_k > 0 else -1,
        "max_new_tokens": 512,
    }


# --------------------------------------------------------------------------- serialising


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> list[bytes]:
    """A length-delimited protobuf field (wire type 2), as chunks to join."""
    return [_varint(number << 3 | 2), _varint(len(payload)), payload]


_GRAPH_FIELD = 7  # ModelProto.graph
_INITIALIZER_FIELD = 5  # GraphProto.initializer


def serialize_model(
    model: onnx.ModelProto, tensors: list[_RawTensor], threshold: int = EXTERNAL_DATA_THRESHOLD
) -> dict[str, bytes]:
    """``model.onnx`` alone, or with ``model.onnx.data`` when the weights exceed ``threshold`` bytes.

    ``model`` holds everything but the initializers, which are encoded one at a time and appended
    to the graph field (protobuf concatenation is a merge), so the peak is about twice the model.
    External data: each initializer of 1 KiB or more moves to the data file (64-byte aligned
    offsets) with ``location`` = ``model.onnx.data``; the loader resolves it in memory.
    """
    external = sum(len(t.raw) for t in tensors) > threshold
    graph_chunks: list[bytes] = [model.graph.SerializeToString()]
    data_chunks: list[bytes] = []
    offset = 0
    tensors.reverse()
    while tensors:
        raw = tensors.pop()
        tensor = TensorProto(name=raw.name, data_type=raw.data_type, dims=raw.dims)
        if external and len(raw.raw) >= 1024:
            pad = (-offset) % 64
            if pad:
                data_chunks.append(b"\0" * pad)
                offset += pad
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", EXTERNAL_DATA_NAME),
                ("offset", str(offset)),
                ("length", str(len(raw.raw))),
            ):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            data_chunks.append(raw.raw)
            offset += len(raw.raw)
        else:
            tensor.raw_data = raw.raw
        del raw
        graph_chunks += _field(_INITIALIZER_FIELD, tensor.SerializeToString())
        del tensor
    graph_size = sum(len(c) for c in graph_chunks)
    model.ClearField("graph")
    head = model.SerializeToString() + _varint(_GRAPH_FIELD << 3 | 2) + _varint(graph_size)
    graph_chunks.insert(0, head)
    files = {"model.onnx": b"".join(graph_chunks)}
    graph_chunks.clear()
    if external:
        files[EXTERNAL_DATA_NAME] = b"".join(data_chunks)
    return files


def convert(
    source: str | os.PathLike | BinaryIO | bytes,
    *,
    quant: str = "int4",
    progress: Progress | None = None,
    sink: Sink | None = None,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> dict[str, bytes]:
    """Convert a llama GGUF into the LLM file set.

    Returns ``{name: bytes}``; with ``sink`` each file is handed to ``sink(name, data)`` as soon as
    it exists (so the caller can encrypt it) and the returned dict maps names to sizes instead.
    """
    if quant not in QUANTS:
        raise GGUFImportError("gguf_invalid_option", f"quant must be one of {QUANTS}, got {quant!r}")
    report = progress or (lambda fraction, message: None)
    started = time.monotonic()
    report(0.0, "reading GGUF")
    reader = _open_reader(source)
    hp = _hparams(reader)
    file_type = _meta(reader, "general.file_type", None)
    tokenizer, info = _tokenizer(reader)
    template = _meta(reader, "tokenizer.chat_template", None)
    if not isinstance(template, str) or not template.strip():
        raise GGUFImportError("gguf_malformed", "the GGUF carries no chat template (tokenizer.chat_template)")
    vocab = _meta_int(reader, "llama.vocab_size", info["vocab_size"])
    if vocab != info["vocab_size"]:
        raise GGUFImportError("gguf_malformed", f"vocab_size {vocab} but {info['vocab_size']} tokens")

    builder = _Builder(reader, hp, quant, report)
    builder.vocab_size = vocab
    model = builder.build()
    report(0.82, "serialising graph")
    graph_files = serialize_model(model, builder.g.tensors, external_data_threshold)
    del model, builder

    config = {
        "architecture": "llama",
        "n_layers": hp["n_layers"],
        "hidden_size": hp["hidden_size"],
        "n_heads": hp["n_heads"],
        "n_kv_heads": hp["n_kv_heads"],
        "head_dim": hp["head_dim"],
        "intermediate_size": hp["ffn_size"],
        "vocab_size": vocab,
        "context_length": hp["context_length"],
        "rope_theta": hp["rope_theta"],
        "rms_norm_eps": hp["rms_norm_eps"],
        "quantization": quant,
        "source": {
            "format": "gguf",
            "sha256": _sha256(reader),
            "file_type": int(file_type) if file_type is not None else None,
            "name": _meta(reader, "general.name", None),
        },
        "converter_version": CONVERTER_VERSION,
        "bos_token": info["bos_token"],
        "eos_token": info["eos_token"],
        "special_tokens": info["special_tokens"],
    }
    report(0.9, "tokenizer")
    files: dict[str, bytes] = {}
    sizes: dict[str, int] = {}

    def emit(name: str, data: bytes) -> None:
        sizes[name] = len(data)
        if sink is None:
            files[name] = data
        else:
            sink(name, data)

    for name in list(graph_files):
        emit(name, graph_files.pop(name))
    emit("tokenizer.json", json.dumps(tokenizer, ensure_ascii=False).encode())
    emit("chat_template.jinja", template.encode())
    emit("generation_config.json", json.dumps(_generation_config(reader, info), indent=2).encode())
    emit("config.json", json.dumps(config, indent=2, ensure_ascii=False).encode())
    report(1.0, f"done in {time.monotonic() - started:.1f} s")
    return files if sink is None else sizes
