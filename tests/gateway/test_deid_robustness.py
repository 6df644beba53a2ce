"""Bounded time on long and adversarial input: every pattern is linear, and input is capped."""

from __future__ import annotations

import time

import pytest

from apps.gateway.deid import DEFAULT_MAX_LENGTH, InputTooLong, deidentify

N = 200_000
ADVERSARIAL = {
    "digits": "7" * N,
    "digits and spaces": "1 " * (N // 2),
    "digit groups": "1234 " * (N // 5),
    "at signs": "@" * N,
    "local parts and at signs": "a.b@" * (N // 4),
    "dots and digits": "1." * (N // 2),
    "hex and colons": "a:" * (N // 2),
    "capitalised words": "Aa " * (N // 3),
    "url without end": "https://" + "a" * N,
    "cue repeated": "MRN: " * (N // 5),
    "cue and spaces": "account" + " " * N + "1234",
    "combining characters": "e\u0301\u0302\u0303" * (N // 4),
    "rtl and zero-width marks": "\u202e1\u200b2\u200f3\u2066" * (N // 8),
    "full-width digits": "１２３４５" * (N // 5),
    "han surname runs": "王" * N,
    "cue then han": "患者" * (N // 2),
    "mixed": "患者王 Dr. Smith 13800138000 a@b.c 1.2.3.4 ::1 " * (N // 50),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_input_finishes_quickly(name):
    text = ADVERSARIAL[name]
    # CPU time of this thread, not wall time: the bound is about the algorithm (linear, capped),
    # and a loaded CI machine must not turn a linear pass into a failure.
    started = time.thread_time()
    result = deidentify(text, "redact")
    elapsed = time.thread_time() - started
    assert elapsed < 2.0, f"{name}: {elapsed:.2f} s of CPU for {len(text)} characters"
    assert isinstance(result.text, str)


def test_one_mebibyte_of_clinical_text_finishes():
    note = "Patient: Maria Gonzalez, MRN: 00482913, seen on 2024-03-05. BP 132/84. 患者王小明，手机13800138000。\n"
    text = (note * (DEFAULT_MAX_LENGTH // len(note) + 1))[:DEFAULT_MAX_LENGTH]
    started = time.perf_counter()
    deidentify(text, "redact")
    assert time.perf_counter() - started < 20.0  # linear; ≈2.5 s on the shared 2-vCPU VM for this dense text
    with pytest.raises(InputTooLong):
        deidentify(text + "x")
