"""The engine on the real SmolLM2 decoder (fp32 and int4, accuracy level 0): batched greedy output
equals each sequence alone and equals a cache-free reference loop; Chinese deltas are whole
characters; seeds reproduce; cancellation leaves within one step."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from inference_backend.llm.engine import engine_from_files
from inference_backend.llm.loader import session_from_files
from inference_backend.llm.tokenizer import Tokenizer
from tests.waiting import wait_for

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [
    TEMPLATE.format("What is the capital of France?"),
    TEMPLATE.format("请用中文介绍一下北京。"),
    TEMPLATE.format("Write a haiku about the sea."),
    TEMPLATE.format("List three prime numbers and explain why each one is prime, briefly."),
]


class Collector:
    def __init__(self) -> None:
        self.deltas: list[tuple[str, int]] = []
        self.finish = None
        self.first_at = None
        self.done = threading.Event()

    def on_delta(self, text, n):
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.deltas.append((text, n))

    def on_finish(self, reason, prompt_tokens, output_tokens):
        self.finish = (reason, prompt_tokens, output_tokens)
        self.done.set()

    @property
    def text(self):
        return "".join(t for t, _ in self.deltas)

    def kw(self):
        return {"on_delta": self.on_delta, "on_finish": self.on_finish}


def generate(engine, prompt, params, **extra):
    c = Collector()
    engine.submit(prompt, params, **c.kw(), **extra)
    assert c.done.wait(300)
    return c


@pytest.fixture(scope="module", params=["fp32", "int4"])
def engine(request, smollm2_files):
    files = smollm2_files(request.param)
    lines: list[str] = []
    eng = engine_from_files(files, intra_op_threads=2, prefill_chunk=16, log=lines.append)
    eng.quant, eng.lines, eng.files = request.param, lines, files
    yield eng
    eng.close()


def test_batched_greedy_equals_alone_with_staggered_joins(engine):
    params = [{"temperature": 0, "max_tokens": n} for n in (20, 24, 16, 24)]
    alone = [generate(engine, p, q) for p, q in zip(PROMPTS, params, strict=True)]
    assert "Paris" in alone[0].text
    batch_sizes_before = dict(engine.stats.batch_histogram)
    collectors = [Collector() for _ in PROMPTS]
    engine.submit(PROMPTS[0], params[0], **collectors[0].kw())
    engine.submit(PROMPTS[1], params[1], **collectors[1].kw())
    wait_for(lambda: len(collectors[0].deltas) >= 4, timeout=120)  # the others join mid-flight
    engine.submit(PROMPTS[2], params[2], **collectors[2].kw())
    engine.submit(PROMPTS[3], params[3], **collectors[3].kw())
    for c in collectors:
        assert c.done.wait(300)
    for got, want in zip(collectors, alone, strict=True):
        assert got.text == want.text
        assert got.finish == want.finish
    grown = {b: n - batch_sizes_before.get(b, 0) for b, n in engine.stats.batch_histogram.items()}
    assert any(b >= 3 and n > 0 for b, n in grown.items()), grown


def test_engine_matches_a_cache_free_reference_loop(engine):
    """Greedy tokens of the engine (KV cache, chunked prefill) = recomputing the whole sequence each step."""
    tokenizer = Tokenizer(engine.files["tokenizer.json"])
    session = session_from_files(engine.files, intra_op_threads=2)
    ids = tokenizer.encode(PROMPTS[1])
    empty = np.zeros((1, 3, 0, 64), dtype=np.float32)
    past = {f"past_key_values.{i}.{k}": empty for i in range(30) for k in ("key", "value")}
    out = []
    for _ in range(16):
        seq = ids + out
        n = len(seq)
        logits = session.run(
            ["logits"],
            {
                "input_ids": np.asarray([seq], dtype=np.int64),
                "attention_mask": np.ones((1, n), dtype=np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None],
                **past,
            },
        )[0]
        out.append(int(np.argmax(logits[0, -1])))
    got = generate(engine, PROMPTS[1], {"temperature": 0, "max_tokens": 16})
    assert got.text == tokenizer.decode(out)


def test_chinese_deltas_are_whole_characters(engine):
    c = generate(engine, PROMPTS[1], {"temperature": 0.8, "seed": 11, "max_tokens": 48})
    assert any("\u4e00" <= ch <= "\u9fff" for ch in c.text)
    assert all("\ufffd" not in text for text, _ in c.deltas)
    assert sum(n for _, n in c.deltas) <= c.finish[2] == 48
    # more tokens than deltas: some characters took several tokens and were held back
    assert len(c.deltas) < c.finish[2] or all(len(t) >= 1 for t, _ in c.deltas)


def test_seed_reproducible_alone_and_in_a_batch(engine):
    p = {"temperature": 0.9, "top_p": 0.95, "top_k": 40, "seed": 1234, "max_tokens": 20}
    a = generate(engine, PROMPTS[2], p)
    others = [Collector(), Collector()]
    b = Collector()
    engine.submit(PROMPTS[0], {**p, "seed": 1}, **others[0].kw())
    engine.submit(PROMPTS[2], p, **b.kw())
    engine.submit(PROMPTS[3], {**p, "seed": 2}, **others[1].kw())
    assert b.done.wait(300) and all(o.done.wait(300) for o in others)
    assert a.text == b.text
    c = generate(engine, PROMPTS[2], {**p, "seed": 4321})
    assert c.text != a.text


def test_stop_sequence_on_the_real_model(engine):
    full = generate(engine, PROMPTS[0], {"temperature": 0, "max_tokens": 20}).text
    assert "Paris" in full
    got = generate(engine, PROMPTS[0], {"temperature": 0, "max_tokens": 20, "stop": ["Paris"]})
    assert got.text == full[: full.index("Paris")]
    assert got.finish[0] == "stop"


def test_cancel_leaves_the_batch_within_one_step(engine):
    flag = threading.Event()
    victim, other = Collector(), Collector()
    engine.submit(PROMPTS[3], {"temperature": 0, "max_tokens": 200}, cancelled=flag.is_set, **victim.kw())
    engine.submit(PROMPTS[0], {"temperature": 0, "max_tokens": 40}, **other.kw())
    wait_for(lambda: sum(n for _, n in victim.deltas) >= 5, timeout=120)
    steps_at_cancel = engine.stats.decode_steps
    flag.set()
    assert victim.done.wait(60)
    assert engine.stats.decode_steps - steps_at_cancel <= 1
    assert victim.finish[0] == "cancelled" and victim.finish[2] < 200
    assert other.done.wait(300) and other.finish[0] in ("stop", "length")
    assert any("finished reason=cancelled" in line for line in engine.lines)
