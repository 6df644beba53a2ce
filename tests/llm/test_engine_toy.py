"""The engine's batching, cache bookkeeping, sampling and callbacks on a toy decoder (exact
integer arithmetic, byte tokenizer): fast checks that can fail on any misplaced row or mask."""

from __future__ import annotations

import threading

import pytest

from inference_backend.llm.engine import Engine
from inference_backend.llm.sampling import EngineError, parse_sampling_parameters
from inference_backend.llm.tokenizer import StopMatcher, Tokenizer
from tests.llm.toy import EOS_ID, TOY_CONFIG, ToySession, byte_tokenizer_json
from tests.waiting import wait_for

TOKENIZER = Tokenizer(byte_tokenizer_json())
PROMPTS = ["Hello", "The quick brown fox jumps over", "a", "数据主权 and more text here, longer than others" * 2]


class Collector:
    def __init__(self) -> None:
        self.deltas: list[tuple[str, int]] = []
        self.finish: tuple[str, int, int] | None = None
        self.done = threading.Event()

    def on_delta(self, text: str, n: int) -> None:
        assert not self.done.is_set(), "delta after finish"
        self.deltas.append((text, n))

    def on_finish(self, reason: str, prompt_tokens: int, output_tokens: int) -> None:
        assert self.finish is None, "finished twice"
        self.finish = (reason, prompt_tokens, output_tokens)
        self.done.set()

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.deltas)

    def kw(self) -> dict:
        return {"on_delta": self.on_delta, "on_finish": self.on_finish}


def make_engine(**kwargs) -> tuple[Engine, ToySession, list[str]]:
    session = ToySession(eos_bias=kwargs.pop("eos_bias", 0), step_seconds=kwargs.pop("step_seconds", 0.0))
    lines: list[str] = []
    engine = Engine(session, TOKENIZER, dict(TOY_CONFIG), {"eos_token_id": [EOS_ID]}, log=lines.append, **kwargs)
    return engine, session, lines


def run_alone(prompt: str, params: dict) -> Collector:
    engine, _, _ = make_engine()
    try:
        c = Collector()
        engine.submit(prompt, params, **c.kw())
        assert c.done.wait(30)
        return c
    finally:
        engine.close()


def test_batched_greedy_equals_alone_with_joins_and_leaves():
    params = [{"temperature": 0, "max_tokens": n} for n in (12, 40, 25, 33)]
    alone = [run_alone(p, q) for p, q in zip(PROMPTS, params, strict=True)]
    engine, session, lines = make_engine(prefill_chunk=8)
    try:
        collectors = []
        for prompt, q in zip(PROMPTS, params, strict=True):
            c = Collector()
            engine.submit(prompt, q, **c.kw())
            collectors.append(c)
        for c in collectors:
            assert c.done.wait(30)
    finally:
        engine.close()
    for got, want in zip(collectors, alone, strict=True):
        assert got.text == want.text and got.finish == want.finish
        assert got.finish[0] == "length"
        assert sum(n for _, n in got.deltas) <= got.finish[2]
    # really batched: some decode runs carried more than one row, prefill ran in chunks of ≤ 8
    assert max(b for b, s, _ in session.runs if s == 1) >= 3
    assert max(s for _, s, _ in session.runs) == 8
    assert len([line for line in lines if "finished reason=length" in line]) == 4


def test_padding_is_trimmed_when_the_longest_sequence_leaves():
    want_short = run_alone(PROMPTS[0], {"temperature": 0, "max_tokens": 40})
    engine, session, _ = make_engine(prefill_chunk=8)
    try:
        long, short = Collector(), Collector()
        engine.submit(PROMPTS[3], {"temperature": 0, "max_tokens": 6}, **long.kw())
        engine.submit(PROMPTS[0], {"temperature": 0, "max_tokens": 40}, **short.kw())
        assert long.done.wait(30) and short.done.wait(30)
    finally:
        engine.close()
    assert short.text == want_short.text
    assert engine.stats.trims == 1
    # after the trim the short sequence's steps attend over its own length, not the long one's
    assert session.runs[-1][2] < 60


def test_sequence_joining_mid_flight_matches_alone():
    want_long = run_alone(PROMPTS[1], {"temperature": 0, "max_tokens": 150})
    want_late = run_alone(PROMPTS[3], {"temperature": 0, "max_tokens": 10})
    engine, session, _ = make_engine(prefill_chunk=16, step_seconds=0.005)
    try:
        first, late = Collector(), Collector()
        engine.submit(PROMPTS[1], {"temperature": 0, "max_tokens": 150}, **first.kw())
        wait_for(lambda: len(first.deltas) >= 20, timeout=30)
        engine.submit(PROMPTS[3], {"temperature": 0, "max_tokens": 10}, **late.kw())
        assert first.done.wait(30) and late.done.wait(30)
    finally:
        engine.close()
    assert first.text == want_long.text and late.text == want_late.text
    assert any(b == 2 for b, s, _ in session.runs if s == 1)


def test_cancel_leaves_within_one_step():
    engine, session, lines = make_engine(step_seconds=0.002)
    try:
        c, other = Collector(), Collector()
        runs_at_finish = []
        rid = engine.submit(
            PROMPTS[0],
            {"temperature": 0, "max_tokens": 400},
            on_delta=c.on_delta,
            on_finish=lambda *a: (runs_at_finish.append(len(session.runs)), c.on_finish(*a)),
        )
        engine.submit(PROMPTS[1], {"temperature": 0, "max_tokens": 30}, **other.kw())
        wait_for(lambda: len(c.deltas) >= 5, timeout=30)
        runs_at_cancel = len(session.runs)
        engine.cancel(rid)
        assert c.done.wait(10)
        assert other.done.wait(30)
    finally:
        engine.close()
    assert c.finish[0] == "cancelled" and c.finish[2] < 400
    # at most the step running when cancel() was called (and its prefill chunk) went on
    assert runs_at_finish[0] - runs_at_cancel <= 2
    assert other.finish[0] == "length" and other.finish[2] == 30
    assert any(f"request {rid} finished reason=cancelled" in line for line in lines)


def test_cancelled_predicate_polled_each_step():
    engine, _, _ = make_engine(step_seconds=0.002)
    flag = threading.Event()
    try:
        c = Collector()
        engine.submit(PROMPTS[0], {"temperature": 0, "max_tokens": 400}, cancelled=flag.is_set, **c.kw())
        wait_for(lambda: len(c.deltas) >= 3, timeout=30)
        seen = c.finish
        flag.set()
        assert c.done.wait(10) and seen is None
    finally:
        engine.close()
    assert c.finish[0] == "cancelled" and c.finish[2] < 400


def test_detokenizer_on_chinese_bytes():
    ids = TOKENIZER.encode("中文测试：数据主权。English too.")
    d = TOKENIZER.detokenizer(TOKENIZER.encode("prompt "))
    deltas = [d.push([i]) for i in ids] + [d.flush()]
    assert all("\ufffd" not in x for x in deltas)
    assert "".join(deltas) == "中文测试：数据主权。English too."
    # generation cut inside a character: the incomplete bytes are dropped, not shown as U+FFFD
    d = TOKENIZER.detokenizer()
    out = "".join(d.push([i]) for i in TOKENIZER.encode("好")[:2]) + d.flush()
    assert out == ""


def test_stop_matcher_holds_prefixes_and_truncates():
    m = StopMatcher(["</s>", "STOP"])
    shown = []
    for piece in ["Hello <", "/", "x> wor", "ld ST", "OP tail"]:
        text, stopped = m.push(piece)
        shown.append(text)
        if stopped:
            break
    assert "".join(shown) == "Hello </x> world "
    assert stopped and m.matched == "STOP"
    m = StopMatcher(["abc"])
    assert m.push("xxab") == ("xx", False)
    assert m.flush() == "ab"


def test_stop_sequence_ends_generation_and_is_not_shown():
    full = run_alone(PROMPTS[1], {"temperature": 0, "max_tokens": 40}).text
    stop = full[10:13]
    assert stop and stop not in full[:10]
    got = run_alone(PROMPTS[1], {"temperature": 0, "max_tokens": 40, "stop": [stop]})
    assert got.text == full[: full.index(stop)]
    assert got.finish[0] == "stop"


def test_eos_and_stop_token_ids():
    engine, _, _ = make_engine(eos_bias=1000)
    try:
        c = Collector()
        engine.submit("hi", {"temperature": 0, "max_tokens": 10}, **c.kw())
        assert c.done.wait(30)
    finally:
        engine.close()
    assert c.finish == ("stop", 2, 1) and c.text == ""
    full = run_alone("hi", {"temperature": 0, "max_tokens": 30}).text
    index, char = next((i, ch) for i, ch in enumerate(full) if i > 0 and ch.isascii() and ch not in full[:i])
    stopped = run_alone("hi", {"temperature": 0, "max_tokens": 30, "stop_token_ids": TOKENIZER.encode(char)})
    assert stopped.finish[0] == "stop"
    assert stopped.text == full[:index].rstrip("\ufffd")


def test_seed_reproducible_and_different_seeds_differ():
    p = {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "max_tokens": 30}
    a = run_alone(PROMPTS[1], {**p, "seed": 7}).text
    b = run_alone(PROMPTS[1], {**p, "seed": 7}).text
    c = run_alone(PROMPTS[1], {**p, "seed": 8}).text
    assert a == b and a != c
    # same seed in a batch with others gives the same tokens as alone
    engine, _, _ = make_engine()
    try:
        cs = [Collector() for _ in range(3)]
        engine.submit(PROMPTS[0], {**p, "seed": 1}, **cs[0].kw())
        engine.submit(PROMPTS[1], {**p, "seed": 7}, **cs[1].kw())
        engine.submit(PROMPTS[2], {**p, "seed": 2}, **cs[2].kw())
        assert all(x.done.wait(30) for x in cs)
    finally:
        engine.close()
    assert cs[1].text == a


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"temperature": -1}, "invalid_sampling_parameters"),
        ({"temperature": 2.5}, "invalid_sampling_parameters"),
        ({"temperature": "hot"}, "invalid_sampling_parameters"),
        ({"top_p": 0}, "invalid_sampling_parameters"),
        ({"top_p": 1.5}, "invalid_sampling_parameters"),
        ({"top_k": -2}, "invalid_sampling_parameters"),
        ({"top_k": 1.5}, "invalid_sampling_parameters"),
        ({"max_tokens": 0}, "invalid_sampling_parameters"),
        ({"max_tokens": True}, "invalid_sampling_parameters"),
        ({"stop": ["a"] * 5}, "invalid_sampling_parameters"),
        ({"stop": ["x" * 65]}, "invalid_sampling_parameters"),
        ({"stop": [""]}, "invalid_sampling_parameters"),
        ({"stop": [1]}, "invalid_sampling_parameters"),
        ({"stop_token_ids": [100000]}, "invalid_sampling_parameters"),
        ({"seed": "x"}, "invalid_sampling_parameters"),
        ({"beam_width": 2}, "invalid_sampling_parameters"),
        ("{not json", "invalid_sampling_parameters"),
        ("[1]", "invalid_sampling_parameters"),
        ({"max_tokens": 600}, "context_length_exceeded"),
    ],
)
def test_bad_parameters_refused_before_admission(params, code):
    engine, session, _ = make_engine()
    try:
        c = Collector()
        with pytest.raises(EngineError) as info:
            engine.submit("hello", params, **c.kw())
        assert info.value.code == code
        assert str(info.value).startswith(f"[{code}] ")
        assert session.runs == [] and c.finish is None
    finally:
        engine.close()


def test_bad_input_and_context_length():
    engine, _, _ = make_engine()
    try:
        for prompt in ("", None):
            with pytest.raises(EngineError) as info:
                engine.submit(prompt, {}, on_delta=print, on_finish=print)
            assert info.value.code == "invalid_input"
        with pytest.raises(EngineError) as info:
            engine.submit("x" * 600, {}, on_delta=print, on_finish=print)
        assert info.value.code == "context_length_exceeded"
        # without max_tokens the default is bounded by the room left in the context
        c = Collector()
        engine.submit("x" * 500, {"temperature": 0}, **c.kw())
        assert c.done.wait(30)
        assert c.finish == ("length", 500, 12)
    finally:
        engine.close()


def test_parse_defaults_and_normalisation():
    p = parse_sampling_parameters('{"top_k": -1, "stop": "END", "seed": -1}', defaults={"temperature": 0.6})
    assert p.top_k == 0 and p.stop == ("END",) and p.seed == 2**64 - 1 and p.temperature == 0.6


def test_max_active_sequences_queue_and_callback_failure():
    engine, session, _ = make_engine(max_active_sequences=2)
    try:
        cs = [Collector() for _ in range(5)]
        for i, c in enumerate(cs):
            engine.submit(PROMPTS[i % 4], {"temperature": 0, "max_tokens": 15}, **c.kw())
        broken = Collector()

        def boom(text, n):
            raise RuntimeError("client gone")

        engine.submit("zz", {"temperature": 0, "max_tokens": 50}, on_delta=boom, on_finish=broken.on_finish)
        assert all(c.done.wait(30) for c in cs) and broken.done.wait(30)
    finally:
        engine.close()
    assert max(b for b, s, _ in session.runs if s == 1) <= 2
    assert all(c.finish[0] == "length" and c.finish[2] == 15 for c in cs)
    assert broken.finish[0] == "cancelled"
