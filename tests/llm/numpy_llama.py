"""An independent numpy llama forward pass that follows llama.cpp's own layout.

It reads the GGUF weights as they are stored — Q/K rows still permuted — and applies rotary
embeddings the way llama.cpp does for the llama architecture (adjacent pairs 2i, 2i+1 within each
head), so it shares nothing with the importer's un-permutation and half-split rotary: agreement of
the two is evidence both the permutation trap and the graph are handled right.
"""

from __future__ import annotations

import gguf
import numpy as np


def _weights(reader) -> dict[str, np.ndarray]:
    out = {}
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).astype(np.float64)
        out[tensor.name] = data.reshape(tuple(int(d) for d in reversed(tensor.shape)))
    return out


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def logits(path, ids: list[int]) -> np.ndarray:
    """[len(ids), vocab] float64 logits of one sequence (positions 0..n-1)."""
    reader = gguf.GGUFReader(path)
    w = _weights(reader)
    n_layers = _field(reader, "llama.block_count")
    n_heads = _field(reader, "llama.attention.head_count")
    n_kv = _field(reader, "llama.attention.head_count_kv", n_heads)
    eps = _field(reader, "llama.attention.layer_norm_rms_epsilon")
    base = _field(reader, "llama.rope.freq_base", 10000.0)
    hidden = w["token_embd.weight"].shape[1]
    hd = hidden // n_heads
    n = len(ids)

    def norm(x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    def rope_adjacent(x):  # x [n, heads, hd]; llama.cpp rope mode 0: pairs (2i, 2i+1)
        pos = np.arange(n)[:, None]
        theta = pos * base ** (-np.arange(0, hd, 2) / hd)  # [n, hd/2]
        cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    x = w["token_embd.weight"][ids]
    causal = np.tril(np.ones((n, n), bool))
    for i in range(n_layers):
        p = f"blk.{i}."
        h = norm(x, w[p + "attn_norm.weight"])
        q = rope_adjacent((h @ w[p + "attn_q.weight"].T).reshape(n, n_heads, hd))
        k = rope_adjacent((h @ w[p + "attn_k.weight"].T).reshape(n, n_kv, hd))
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, n_kv, hd)
        heads = []
        for head in range(n_heads):
            kv = head // (n_heads // n_kv)
            scores = q[:, head] @ k[:, kv].T / np.sqrt(hd)
            scores = np.where(causal, scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            heads.append(probs @ v[:, kv])
        x = x + np.concatenate(heads, axis=-1) @ w[p + "attn_output.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        gate = h @ w[p + "ffn_gate.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
    x = norm(x, w["output_norm.weight"])
    head = w.get("output.weight", w["token_embd.weight"])
    return x @ head.T
