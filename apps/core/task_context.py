"""Carry the request's correlation id and acting user from the web process into Celery tasks.

`before_task_publish` copies them into the message headers of every task sent while a request
(or another task) is being served; `task_prerun` binds them in the worker for the task's run,
so every audit event a task writes carries the id of the request that caused it, whatever the
task's own arguments. A task sent from nowhere (beat) gets a fresh id.
"""

from __future__ import annotations

import contextlib

from celery import signals

from .context import actor_id_var, current_actor_id, current_request_id, new_request_id, request_id_var

REQUEST_ID_HEADER = "sovereign_request_id"
ACTOR_HEADER = "sovereign_actor_id"
_TOKENS = "_sovereign_context_tokens"


@signals.before_task_publish.connect(dispatch_uid="sovereign-request-id-publish")
def _add_context_headers(headers=None, **kwargs) -> None:
    if headers is None:
        return
    rid = current_request_id()
    if rid and not headers.get(REQUEST_ID_HEADER):
        headers[REQUEST_ID_HEADER] = rid
    actor = current_actor_id()
    if actor is not None and headers.get(ACTOR_HEADER) is None:
        headers[ACTOR_HEADER] = actor


def _header(request, name: str):
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


@signals.task_prerun.connect(dispatch_uid="sovereign-request-id-prerun")
def _bind_context(task=None, **kwargs) -> None:
    if task is None:
        return
    # Content type ids are cached per process; a worker outlives migrations (and test database
    # flushes) that renumber them, and django-auditlog stores them. One query per model per task.
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()
    rid = _header(task.request, REQUEST_ID_HEADER) or current_request_id() or new_request_id()
    actor = _header(task.request, ACTOR_HEADER)
    if actor is None:
        actor = actor_id_var.get()
    setattr(task.request, _TOKENS, (request_id_var.set(rid), actor_id_var.set(actor)))


@signals.task_postrun.connect(dispatch_uid="sovereign-request-id-postrun")
def _unbind_context(task=None, **kwargs) -> None:
    tokens = getattr(getattr(task, "request", None), _TOKENS, None)
    if tokens is None:
        return
    rid_token, actor_token = tokens
    with contextlib.suppress(ValueError):  # a token from another context (should not happen)
        actor_id_var.reset(actor_token)
        request_id_var.reset(rid_token)
