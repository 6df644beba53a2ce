"""The real SmolLM2 int4 set for registry tests: tests/llm_models.py converts it once per machine."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def int4_set(smollm2_files) -> dict[str, bytes]:
    return smollm2_files("int4")
