"""Write tiny synthetic GGUF files with gguf.GGUFWriter (random weights, byte-level vocabulary)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def _byte_tokens() -> list[str]:
    # GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to U+0100 onwards.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def write_tiny_llama(
    path: Path,
    *,
    arch: str = "llama",
    n_layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 96,
    weight_type: T = T.Q4_1,
    tied: bool = True,
    seed: int = 0,
    skip_keys: tuple[str, ...] = (),
    type_overrides: dict[str, T] | None = None,
    tokenizer_model: str = "gpt2",
    pre: str = "smollm",
    add_bos: bool = False,
) -> Path:
    rng = np.random.default_rng(seed)
    byte_tokens = _byte_tokens()
    merges = ["Ġ t", "h e", "Ġt he", "Ġ 4", "Ġ4 2", "4 2"]
    tokens = SPECIALS + byte_tokens + ["Ġt", "he", "Ġthe", "42", "Ġ4", "Ġ42"]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), arch)
    prefix = arch + "."
    values = {
        "block_count": lambda: writer.add_block_count(n_layers),
        "context_length": lambda: writer.add_context_length(256),
        "embedding_length": lambda: writer.add_embedding_length(hidden),
        "feed_forward_length": lambda: writer.add_feed_forward_length(ffn),
        "attention.head_count": lambda: writer.add_head_count(heads),
        "attention.head_count_kv": lambda: writer.add_head_count_kv(kv_heads),
        "attention.layer_norm_rms_epsilon": lambda: writer.add_layer_norm_rms_eps(1e-5),
        "rope.freq_base": lambda: writer.add_rope_freq_base(10000.0),
        "vocab_size": lambda: writer.add_uint32(prefix + "vocab_size", vocab),
    }
    for key, add in values.items():
        if prefix + key not in skip_keys:
            add()
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(TEMPLATE)

    def add(name: str, rows: int, cols: int | None = None, kind: T | None = None) -> None:
        if cols is None:
            writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(rows)).astype(np.float32))
            return
        data = (0.2 * rng.standard_normal((rows, cols))).astype(np.float32)
        if kind is None:
            role = name.split(".")[-2]  # blk.0.attn_v.weight -> attn_v
            kind = (type_overrides or {}).get(role, weight_type)
        if kind == T.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)

    hd = hidden // heads
    add("token_embd.weight", vocab, hidden, T.Q8_0)
    for i in range(n_layers):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", hidden)
        add(p + "attn_q.weight", heads * hd, hidden)
        add(p + "attn_k.weight", kv_heads * hd, hidden)
        add(p + "attn_v.weight", kv_heads * hd, hidden)
        add(p + "attn_output.weight", hidden, heads * hd)
        add(p + "ffn_norm.weight", hidden)
        add(p + "ffn_gate.weight", ffn, hidden)
        add(p + "ffn_up.weight", ffn, hidden)
        add(p + "ffn_down.weight", hidden, ffn)
    add("output_norm.weight", hidden)
    if not tied:
        add("output.weight", vocab, hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
