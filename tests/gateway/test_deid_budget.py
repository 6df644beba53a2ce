"""The de-identifier's CPU budget (issue 14): a request that would take longer than its budget is
refused with a stable code once the budget is spent, at a bounded overshoot; normal notes finish
well within the default budget."""

from __future__ import annotations

import time

import pytest

from apps.gateway.deid import Budget, BudgetExceeded, DeidError, deidentify, deidentify_tensor, detect, warm

NOTE = "Patient John Smith (MRN 4839201) seen 3/4/2024 in Boston, call (617) 555-0143; SSN 123-45-6789. "
DEFAULT_BUDGET = 2.0  # portal/settings.py SOVEREIGN_DEID_CPU_BUDGET


@pytest.fixture(autouse=True, scope="module")
def _warm():
    warm()  # the gazetteers are built once a process, at the data plane's start


def test_budget_exceeded_is_a_deid_error_with_a_stable_code():
    assert issubclass(BudgetExceeded, DeidError)
    assert BudgetExceeded.code == "deid_budget_exceeded"


def test_a_text_longer_than_a_tiny_budget_allows_is_refused_soon_after_the_budget():
    text = NOTE * (900_000 // len(NOTE))  # under the 1 MiB length limit, about a second of work
    budget = Budget(0.05)
    cpu = time.thread_time()
    with pytest.raises(BudgetExceeded) as caught:
        deidentify(text, "redact", budget=budget)
    spent = time.thread_time() - cpu
    assert "John" not in str(caught.value) and "4839201" not in str(caught.value)  # never quotes the input
    assert spent < 0.6, f"{spent:.2f} s of CPU against a budget of 0.05 s"  # at most about one detector pass more
    assert budget.spent >= 0.05


def test_the_budget_is_per_request_across_its_texts():
    """Each element is small, but together they exceed it: the budget carries over between texts."""
    budget = Budget(0.05)
    with pytest.raises(BudgetExceeded):
        deidentify_tensor([NOTE * 20] * 2000, "BYTES", "redact", budget=budget)
    assert 0.05 <= budget.spent < 0.3


def test_a_normal_note_finishes_under_the_default_budget_with_the_same_result():
    budget = Budget(DEFAULT_BUDGET)
    assert deidentify(NOTE, "redact", budget=budget) == deidentify(NOTE, "redact")
    assert detect(NOTE * 50, budget=Budget(DEFAULT_BUDGET)) == detect(NOTE * 50)
    assert budget.spent < 0.05


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_a_budget_is_a_positive_number_of_seconds(value):
    with pytest.raises(ValueError):
        Budget(value)
