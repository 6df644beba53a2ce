"""Gateway call events written through the audit service's batched path (record_events, as the data
plane's group committer writes them), with the gateway's own details (call_details), then sealed."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from django.db import transaction

from apps.audit.chain import seal_pending
from apps.audit.services import PendingEvent, Source, record_events
from apps.gateway.dataplane.auditsink import call_details, call_outcome


def call(model: str, version: int, latency_ms: float, at: datetime, *, status: int = 200, code: str = "", llm=None):
    route = SimpleNamespace(model_id=1, version=version, server="triton-a", deployment_id=7)
    details = call_details(model, status, latency_ms, route=route if version else None)
    if llm:
        details.update(protocol="openai", llm=llm)
    return PendingEvent(
        "inference.chat" if llm else "inference.infer",
        actor_id=1,
        actor_name="alice",
        actor_roles=["analyst"],
        source=Source(ip="198.51.100.7", user_agent="tritonclient"),
        request_id=f"req-{model}-{latency_ms}-{at.timestamp()}",
        target_type="registry.model",
        target_id="1",
        target_display=model,
        outcome=call_outcome(status, code),
        error_code=code,
        details=details,
        timestamp=at,
    )


def record_sealed(events) -> None:
    with transaction.atomic():
        record_events(list(events))
    seal_pending(checkpoint=False)
