"""A small greedy reference loop over the decoder of :mod:`inference_backend.llm.gguf_import`.

For tests and checks of a converted file set, not for serving (the batched engine is
``inference_backend/llm/engine.py``). Holds everything in memory: the graph is built from bytes.
No Django here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

#: SmolLM2's default system prompt (what its chat template adds when there is none).
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

#: The fixed English and Chinese prompts of the int4/fp32 agreement figure (tests and bench).
AGREEMENT_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "What is 2+2?",
    "List three prime numbers.",
    "中国的首都是哪里？",
    "什么是人工智能？",
    "请用一句话介绍你自己。",
)


def chatml(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """ChatML as SmolLM2's template renders it when the first message is the system prompt."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


class ReferenceDecoder:
    def __init__(self, files: Mapping[str, bytes], threads: int = 2):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = json.loads(files["config.json"])
        self.generation = json.loads(files["generation_config.json"])
        self.tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if "model.onnx.data" in files:
            import onnx

            from .gguf_import import EXTERNAL_DATA_NAME

            model = onnx.load_from_string(files["model.onnx"])
            data = files[EXTERNAL_DATA_NAME]
            for tensor in model.graph.initializer:
                if tensor.external_data:
                    entries = {e.key: e.value for e in tensor.external_data}
                    start, length = int(entries["offset"]), int(entries["length"])
                    tensor.raw_data = data[start : start + length]
                    del tensor.external_data[:]
                    tensor.data_location = onnx.TensorProto.DEFAULT
            graph = model.SerializeToString()
        else:
            graph = files["model.onnx"]
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.n_layers = self.config["n_layers"]
        self.n_kv = self.config["n_kv_heads"]
        self.head_dim = self.config["head_dim"]
        self.eos = set(self.generation["eos_token_id"])

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.n_kv, 0, self.head_dim)
        past = {}
        for i in range(self.n_layers):
            past[f"past_key_values.{i}.key"] = np.zeros(shape, np.float32)
            past[f"past_key_values.{i}.value"] = np.zeros(shape, np.float32)
        return past

    def forward(self, input_ids, attention_mask, position_ids, past):
        feeds = {
            "input_ids": np.asarray(input_ids, np.int64),
            "attention_mask": np.asarray(attention_mask, np.int64),
            "position_ids": np.asarray(position_ids, np.int64),
            **past,
        }
        outputs = self.session.run(None, feeds)
        names = [o.name for o in self.session.get_outputs()]
        result = dict(zip(names, outputs, strict=True))
        present = {
            name.replace("present.", "past_key_values."): value
            for name, value in result.items()
            if name.startswith("present.")
        }
        return result["logits"], present

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation of a left-padded batch; each row stops at an end token."""
        batch = len(prompts)
        width = max(len(p) for p in prompts)
        ids = np.zeros((batch, width), np.int64)
        mask = np.zeros((batch, width), np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = prompt
            mask[row, width - len(prompt) :] = 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        logits, past = self.forward(ids, mask, positions, self.empty_past(batch))
        out: list[list[int]] = [[] for _ in range(batch)]
        done = [False] * batch
        next_pos = positions[:, -1] + 1
        for _ in range(max_new_tokens):
            tokens = logits[:, -1, :].argmax(-1)
            for row in range(batch):
                if not done[row]:
                    if int(tokens[row]) in self.eos:
                        done[row] = True
                    else:
                        out[row].append(int(tokens[row]))
            if all(done):
                break
            mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
            logits, past = self.forward(tokens[:, None], mask, next_pos[:, None], past)
            next_pos = next_pos + 1
        return out

    def generate(self, prompt: str, max_new_tokens: int = 32) -> str:
        ids = self.generate_ids([self.encode(prompt)], max_new_tokens)[0]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def prefix_agreement(candidate: Sequence[int], reference: Sequence[int]) -> tuple[int, int]:
    """Tokens of ``candidate`` equal to ``reference`` before the first difference, and the longer length."""
    same = 0
    for x, y in zip(candidate, reference, strict=False):
        if x != y:
            break
        same += 1
    return same, max(len(candidate), len(reference))


def greedy_agreement(
    candidate: ReferenceDecoder,
    reference: ReferenceDecoder,
    prompts: Sequence[str] = AGREEMENT_PROMPTS,
    max_new_tokens: int = 24,
    system: str | None = SMOLLM_SYSTEM,
) -> tuple[int, int]:
    """(equal tokens, total tokens) of two decoders' greedy answers to ``prompts`` (ChatML).

    Tokens count as equal up to the first difference in each answer (after it, greedy answers
    diverge by construction), over the longer answer's length.
    """
    same = total = 0
    for text in prompts:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        ids = candidate.encode(chatml(messages))
        s, t = prefix_agreement(
            candidate.generate_ids([ids], max_new_tokens)[0], reference.generate_ids([ids], max_new_tokens)[0]
        )
        same, total = same + s, total + t
    return same, total
