"""The real SmolLM2 int4 set for registry/deployment tests. tests/llm/conftest.py (H1) owns the
cached `smollm2_files(quant)` fixture; until it is merged this reads the converted copy under
/work/cache/smollm2/int4 (or SOVEREIGN_TEST_LLM_INT4_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CANDIDATES = [os.environ.get("SOVEREIGN_TEST_LLM_INT4_DIR", ""), "/work/cache/smollm2/int4", "/tmp/h3/int4"]


def load_int4_set() -> dict[str, bytes]:
    for candidate in filter(None, CANDIDATES):
        path = Path(candidate)
        if (path / "model.onnx").is_file():
            return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    pytest.fail("no converted SmolLM2 int4 set found (tests/llm/conftest.py smollm2_files, or " + str(CANDIDATES) + ")")


@pytest.fixture(scope="session")
def int4_set() -> dict[str, bytes]:
    return load_int4_set()
