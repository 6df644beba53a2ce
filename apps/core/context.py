"""Request-scoped context (correlation id, source address) that services and tasks read.

Kept in contextvars so that it works the same under WSGI threads and in Celery workers, where
the task sets it from the id it was given.
"""

from __future__ import annotations

import contextvars
import uuid
from contextlib import contextmanager

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The HTTP request being served (for who and where, read by the django-auditlog bridge), and in a
# Celery task the id of the user whose request enqueued it.
request_var: contextvars.ContextVar = contextvars.ContextVar("request", default=None)
actor_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("actor_id", default=None)


def current_request_id() -> str:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_actor_id() -> int | None:
    """The authenticated user of the current request, else the user a task was enqueued for."""
    user = getattr(request_var.get(), "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return user.pk
    return actor_id_var.get()


@contextmanager
def bound_request_id(request_id: str | None):
    """Run with `request_id`; without one, keep the id already bound (a task inherits its
    request's id through the message headers) or make a new one."""
    token = request_id_var.set(request_id or request_id_var.get() or new_request_id())
    try:
        yield request_id_var.get()
    finally:
        request_id_var.reset(token)
