"""The Celery signal handlers that carry the request id into tasks (without a broker)."""

from __future__ import annotations

from types import SimpleNamespace

from apps.core import task_context
from apps.core.context import bound_request_id, current_request_id


def test_publish_adds_the_current_request_id():
    headers: dict = {}
    with bound_request_id("req-pub"):
        task_context._add_context_headers(headers=headers)

    assert headers[task_context.REQUEST_ID_HEADER] == "req-pub"


def test_prerun_binds_and_postrun_restores():
    task = SimpleNamespace(request=SimpleNamespace(sovereign_request_id="req-run", sovereign_actor_id=7))

    task_context._bind_context(task=task)
    assert current_request_id() == "req-run"
    task_context._unbind_context(task=task)

    assert current_request_id() == ""


def test_a_task_from_beat_gets_a_fresh_id():
    task = SimpleNamespace(request=SimpleNamespace(headers={}))

    task_context._bind_context(task=task)
    rid = current_request_id()
    task_context._unbind_context(task=task)

    assert len(rid) == 32
