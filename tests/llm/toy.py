"""A toy decoder with the LLM graph contract, in numpy with exact integer arithmetic, and a
byte-level tokenizer: tests of the engine's cache bookkeeping (left padding, joins, leaves,
trims) that run in milliseconds. A wrong mask, position or row shows as different tokens."""

from __future__ import annotations

import time

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

N_LAYERS = 2
KV_HEADS = 1
HEAD_DIM = 4
EOS = "<eos>"


def byte_tokenizer_json() -> str:
    """One token per byte (a Chinese character is three tokens) plus an EOS special token."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok.to_str()


VOCAB = 257
EOS_ID = 256


class _Meta:
    def __init__(self, name: str) -> None:
        self.name = name


class ToySession:
    """Mimics an onnxruntime session of the contract: present = concat(past, new) on axis 2."""

    def __init__(self, seed: int = 0, eos_bias: int = 0, step_seconds: float = 0.0) -> None:
        self.step_seconds = step_seconds  # simulated compute time per run
        rng = np.random.default_rng(seed)
        self.weights = rng.integers(1, 50, size=(VOCAB, HEAD_DIM)).astype(np.float64)
        self.eos_bias = eos_bias
        self.runs: list[tuple[int, int, int]] = []  # (batch, seq, total)
        past = [f"past_key_values.{i}.{k}" for i in range(N_LAYERS) for k in ("key", "value")]
        present = [f"present.{i}.{k}" for i in range(N_LAYERS) for k in ("key", "value")]
        self._inputs = [_Meta(n) for n in ("input_ids", "attention_mask", "position_ids", *past)]
        self._outputs = [_Meta(n) for n in ("logits", *present)]

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def run(self, names, feeds):
        ids, mask, pos = feeds["input_ids"], feeds["attention_mask"], feeds["position_ids"]
        batch, seq = ids.shape
        assert ids.dtype == np.int64 and mask.dtype == np.int64 and pos.dtype == np.int64
        past_len = feeds["past_key_values.0.key"].shape[2]
        assert mask.shape == (batch, past_len + seq), (mask.shape, batch, past_len, seq)
        self.runs.append((batch, seq, past_len + seq))
        if self.step_seconds:
            time.sleep(self.step_seconds)
        new = np.stack([ids + 1, pos + 1, np.ones_like(ids), (ids * (pos + 3)) % 11], axis=-1).astype(np.float32)
        outputs = {}
        for i in range(N_LAYERS):
            for kind in ("key", "value"):
                past = feeds[f"past_key_values.{i}.{kind}"]
                assert past.flags["C_CONTIGUOUS"] and past.shape[0] == batch
                outputs[f"present.{i}.{kind}"] = np.concatenate([past, new[:, None, :, :] * (i + 1)], axis=2)
        keys = outputs["present.1.value"][:, 0].astype(np.float64)  # [B, total, 4]
        logits = np.zeros((batch, seq, VOCAB), dtype=np.float32)
        for s in range(seq):
            visible = mask.astype(bool).copy()
            visible[:, past_len + s + 1 :] = False  # causal
            summary = (keys * visible[:, :, None]).sum(axis=1)  # exact: small integers
            scores = (summary @ self.weights.T) % 97
            scores[:, EOS_ID] += self.eos_bias
            logits[:, s, :] = scores
        outputs["logits"] = logits
        return [outputs[n] for n in names]


TOY_CONFIG = {
    "n_layers": N_LAYERS,
    "n_kv_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "context_length": 512,
    "vocab_size": VOCAB,
}
