"""Every changing call leaves an audit event, including the ones that were refused.

Services record what they do (successes, and the failures they decide). A call refused before or
outside a service — no credentials (401), not allowed (403, CSRF), malformed (400), not found, a
conflict, a method not allowed, too many requests (429) — is recorded here as `access.refused`,
after the view, unless something in the request already recorded an event. Safe methods (GET,
HEAD, OPTIONS) are recorded where they matter (the gateway, the audit log's own reads).

An authenticated caller's refusal is one event, in a transaction of its own. An unauthenticated
caller's refusals are collapsed into one counted event per (address, code, minute)
(apps/audit/refusals.py): a loop of anonymous bad requests must not fill the six-year log.
"""

from __future__ import annotations

import json

from django.db import transaction

from . import refusals
from .models import Outcome
from .services import Source, record_event

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class AuditRefusalsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method not in SAFE and 400 <= response.status_code < 500 and not getattr(request, "audit_events", 0):
            self._record(request, response)
        refusals.tick()
        return response

    @staticmethod
    def _record(request, response) -> None:
        code = ""
        if "json" in response.get("Content-Type", "") and not getattr(response, "streaming", False):
            try:
                code = str(json.loads(response.content).get("code", ""))[:64]
            except (ValueError, AttributeError):
                code = ""
        user = getattr(request, "user", None)
        status = response.status_code
        event = {
            "source": Source.from_request(request),
            "outcome": Outcome.DENIED if status in (401, 403, 429) else Outcome.FAILURE,
            "error_code": code or f"http_{status}",
            "target_display": request.path[:200],
            "details": {"method": request.method, "path": request.path[:500], "status": status},
        }
        if user is None or not user.is_authenticated:
            refusals.record_refusal("access.refused", **event)
            return
        with transaction.atomic():
            record_event("access.refused", actor=user, **event)
