"""Request-scoped context (correlation id, source address) that services and tasks read.

Kept in contextvars so that it works the same under WSGI threads and in Celery workers, where
the task sets it from the id it was given.
"""

from __future__ import annotations

import contextvars
import uuid
from contextlib import contextmanager

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def current_request_id() -> str:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def bound_request_id(request_id: str | None):
    token = request_id_var.set(request_id or new_request_id())
    try:
        yield request_id_var.get()
    finally:
        request_id_var.reset(token)
