"""LLM engine figures (no Triton, no portal): the in-flight batching engine on a converted file set.

Measures, per variant (int4 accuracy level 0, fp32): single-stream decode tokens/s, time to first
token (short and ~200-token prompts), and aggregate tokens/s with N concurrent streams against
one stream (issue 13's target: 8 streams >= 3x one). ``run(files, ...)`` returns the figures as a
dict so bench/llm_serving.py can call it; the command prints them as JSON and a Markdown table.

Run from the repository root:
  .venv/bin/python bench/llm_engine.py [--dir /work/cache/smollm2] [--quant int4 fp32] [--tokens 96] [--streams 8]
The machine's load average is printed with the figures: the box is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from inference_backend.llm.engine import engine_from_files  # noqa: E402

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QUESTIONS = [
    "Write a long story about a lighthouse keeper.",
    "Explain how a steam engine works, step by step.",
    "请详细介绍一下中国的长城。",
    "Describe the water cycle in detail.",
    "List ten facts about the moon and explain each.",
    "用中文写一篇关于春天的短文。",
    "Explain recursion to a beginner programmer with examples.",
    "Describe a day in the life of a medieval blacksmith.",
]
LONG_PROMPT = TEMPLATE.format(
    "Summarise the following notes. " + "The meeting covered budgets, hiring and plans. " * 20
)


class _Stream:
    def __init__(self) -> None:
        self.submitted = time.perf_counter()
        self.first = None
        self.last = None
        self.tokens = 0
        self.done = threading.Event()

    def on_delta(self, text: str, n: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now

    def on_finish(self, reason: str, prompt_tokens: int, output_tokens: int) -> None:
        self.tokens = output_tokens
        self.last = time.perf_counter()
        self.done.set()


def _go(engine, prompts: list[str], tokens: int) -> tuple[list[_Stream], float]:
    streams = []
    started = time.perf_counter()
    for prompt in prompts:
        s = _Stream()
        # ignore EOS: a fixed number of tokens per stream (stop_token_ids none; max_tokens fixed)
        engine.submit(prompt, {"temperature": 0, "max_tokens": tokens}, on_delta=s.on_delta, on_finish=s.on_finish)
        streams.append(s)
    for s in streams:
        s.done.wait()
    return streams, time.perf_counter() - started


def run(
    files: dict[str, bytes],
    *,
    tokens: int = 96,
    streams: int = 8,
    threads: int = 2,
    repeats: int = 2,
    allow_spinning: bool = False,
) -> dict:
    engine = engine_from_files(
        files, intra_op_threads=threads, max_active_sequences=max(8, streams), allow_spinning=allow_spinning
    )
    engine.eos_ids = frozenset()  # measure a fixed number of decode steps per stream
    try:
        _go(engine, [TEMPLATE.format("Hello")], 8)  # warm-up
        single = []
        ttft_short = []
        for i in range(repeats):
            (s,), _ = _go(engine, [TEMPLATE.format(QUESTIONS[i])], tokens)
            single.append((s.tokens - 1) / (s.last - s.first))
            ttft_short.append(s.first - s.submitted)
        ttft_long = []
        for _ in range(repeats):
            (s,), _ = _go(engine, [LONG_PROMPT], 4)
            ttft_long.append(s.first - s.submitted)
        long_tokens = len(engine.tokenizer.encode(LONG_PROMPT))
        one_stream_wall = []
        for i in range(repeats):
            (s,), wall = _go(engine, [TEMPLATE.format(QUESTIONS[i])], tokens)
            one_stream_wall.append(s.tokens / wall)
        aggregate = []
        decode_aggregate = []
        ttft_batch = []
        for _ in range(repeats):
            before_tokens, before_seconds = engine.stats.decode_tokens, engine.stats.decode_seconds
            group, wall = _go(engine, [TEMPLATE.format(QUESTIONS[i % len(QUESTIONS)]) for i in range(streams)], tokens)
            aggregate.append(sum(s.tokens for s in group) / wall)
            decode_aggregate.append(
                (engine.stats.decode_tokens - before_tokens) / (engine.stats.decode_seconds - before_seconds)
            )
            ttft_batch.append(max(s.first - s.submitted for s in group))
        med = statistics.median
        return {
            "quantization": engine.config.get("quantization"),
            "intra_op_threads": threads,
            "allow_spinning": allow_spinning,
            "tokens_per_stream": tokens,
            "single_stream_decode_tok_s": round(med(single), 1),
            "single_stream_wall_tok_s": round(med(one_stream_wall), 1),
            "ttft_short_prompt_ms": round(med(ttft_short) * 1000),
            "ttft_long_prompt_ms": round(med(ttft_long) * 1000),
            "long_prompt_tokens": long_tokens,
            "streams": streams,
            "aggregate_wall_tok_s": round(med(aggregate), 1),
            "aggregate_decode_tok_s": round(med(decode_aggregate), 1),
            "aggregate_ratio_wall": round(med(aggregate) / med(one_stream_wall), 2),
            "aggregate_ratio_decode": round(med(decode_aggregate) / med(single), 2),
            "ttft_worst_of_batch_ms": round(med(ttft_batch) * 1000),
            "load_average": os.getloadavg(),
        }
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/work/cache/smollm2", help="holds <quant>/ file sets")
    parser.add_argument("--quant", nargs="+", default=["int4", "fp32"])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--spin", action="store_true", help="let idle onnxruntime threads spin")
    args = parser.parse_args()
    results = []
    for quant in args.quant:
        directory = Path(args.dir) / quant
        files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
        result = run(
            files,
            tokens=args.tokens,
            streams=args.streams,
            threads=args.threads,
            repeats=args.repeats,
            allow_spinning=args.spin,
        )
        print(json.dumps(result), flush=True)
        results.append(result)
    print()
    header = [
        "variant",
        "1 stream decode tok/s",
        "TTFT short / long (ms)",
        f"{args.streams} streams aggregate tok/s (wall / decode)",
        "ratio (wall / decode)",
        "load avg",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print(
            f"| {r['quantization']} | {r['single_stream_decode_tok_s']} | {r['ttft_short_prompt_ms']} / "
            f"{r['ttft_long_prompt_ms']} ({r['long_prompt_tokens']} tok) | {r['aggregate_wall_tok_s']} / "
            f"{r['aggregate_decode_tok_s']} | {r['aggregate_ratio_wall']}× / {r['aggregate_ratio_decode']}× | "
            f"{' '.join(f'{x:.1f}' for x in r['load_average'])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
