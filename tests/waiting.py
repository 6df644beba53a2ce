"""Waiting for a condition in tests (never for a fixed time)."""

from __future__ import annotations

import time

import pytest


def wait_for(predicate, timeout: float = 60.0, what="condition", *, interval: float = 0.05):
    """Poll ``predicate`` until it is truthy and return its value; after ``timeout`` seconds fail,
    naming ``what`` (a string, or a callable giving one, so it can report the last state seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)
