"""What the control plane knows about the running system, for `/metrics` and for the monitoring alerts
(docs/metrics.md): servers and the gateway's circuits, queue depths, the audit sealer's lag,
compliance control states, quota use. Each reader is a few indexed queries or Redis reads, never a
scan of the audit log; each returns plain data so the exposition (portal/metrics.py) and the alert
rules (alerting.py) read the same figures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import Count, Max, Min, Q

logger = logging.getLogger(__name__)


def _redis():
    from apps.core.throttling import redis_client

    return redis_client()


@dataclass(frozen=True)
class ServerHealth:
    """One Triton server as the portal's health checks and the gateway's circuit breakers see it."""

    name: str
    state: str  # up | down | unknown (the portal's health check)
    last_seen: float | None  # epoch seconds of the last successful health check
    circuit_processes: int  # data-plane processes reporting on it (0: no data-plane view)
    circuit_open: int  # of which with the circuit open or half-open


def servers() -> list[ServerHealth]:
    from apps.deployments.models import InferenceServer
    from apps.deployments.selectors import gateway_view

    out = []
    for server in InferenceServer.objects.order_by("name").only("id", "name", "state", "last_seen_at"):
        views = gateway_view(server.id)
        out.append(
            ServerHealth(
                name=server.name,
                state=server.state,
                last_seen=server.last_seen_at.timestamp() if server.last_seen_at else None,
                circuit_processes=len(views),
                circuit_open=sum(1 for v in views if v.get("state") != "closed"),
            )
        )
    return out


def celery_queues() -> list[str]:
    return [getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", None) or "celery"]


def queue_depths() -> dict[str, int]:
    """Messages waiting in each Celery queue (Redis broker: the queue is a list of that name in the
    broker's database). {} with the embedded broker (`make run`), whose queue is a folder."""
    if not settings.REDIS_URL:
        return {}
    client = _redis()
    pipe = client.pipeline(transaction=False)
    names = celery_queues()
    for name in names:
        pipe.llen(name)
    return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))


@dataclass(frozen=True)
class SealerState:
    """How far the audit sealer is behind: unsealed events and the age of the oldest; the newest checkpoint."""

    unsealed: int
    oldest_unsealed_age: float  # seconds; 0 when everything is sealed
    last_checkpoint: float | None  # epoch seconds of the newest signed checkpoint
    sealed_head: int  # the highest sequence sealed


def sealer(now: float | None = None) -> SealerState:
    from apps.audit.models import AuditCheckpoint, AuditEvent

    now = time.time() if now is None else now
    # the partial index audit_unsealed_idx covers exactly these rows: no scan of the sealed log
    pending = AuditEvent.objects.filter(sequence__isnull=True).aggregate(n=Count("id"), oldest=Min("timestamp"))
    head = AuditEvent.objects.filter(sequence__isnull=False).aggregate(head=Max("sequence"))["head"] or 0
    checkpoint = AuditCheckpoint.objects.order_by("-sequence").values_list("created_at", flat=True).first()
    oldest = pending["oldest"]
    return SealerState(
        unsealed=pending["n"],
        oldest_unsealed_age=max(0.0, now - oldest.timestamp()) if oldest else 0.0,
        last_checkpoint=checkpoint.timestamp() if checkpoint else None,
        sealed_head=head,
    )


@dataclass(frozen=True)
class ControlState:
    """A control's latest evaluated status in one profile; `regressed`: failing now after having passed
    in an earlier evaluation (the condition of compliance.control.regressed, held until it passes)."""

    profile: str
    control: str
    status: str  # pass | fail | manual | not_applicable
    regressed: bool


def control_states() -> list[ControlState]:
    """The latest run's status of every control of every profile evaluated (three grouped queries)."""
    from apps.compliance.models import ControlResult

    latest = dict(ControlResult.objects.values("profile").annotate(run=Max("run_id")).values_list("profile", "run"))
    if not latest:
        return []
    passed = dict(
        ((p, c), run)
        for p, c, run in ControlResult.objects.filter(status="pass")
        .values("profile", "control_id")
        .annotate(run=Max("run_id"))
        .values_list("profile", "control_id", "run")
    )
    out = []
    for profile, run in sorted(latest.items()):
        for control, status in (
            ControlResult.objects.filter(profile=profile, run_id=run)
            .order_by("control_id")
            .values_list("control_id", "status")
        ):
            last_pass = passed.get((profile, control))
            out.append(
                ControlState(profile, control, status, status == "fail" and last_pass is not None and last_pass < run)
            )
    return out


@dataclass(frozen=True)
class QuotaUse:
    """Tokens used in the current UTC day or month window of one quota, against its limit."""

    quota_id: int
    scope: str
    subject: str
    model: str  # "" for all models together
    window: str  # day | month
    used: int
    limit: int


def quota_use(now: float | None = None) -> list[QuotaUse]:
    """The current day and month windows of every token quota (Redis, where the data plane keeps them;
    [] without Redis, where each data-plane process counts alone)."""
    from .models import Quota
    from .quota import PREFIX

    client = _redis()
    if client is None:
        return []
    at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    rows = []
    with_tokens = Q(tokens_per_day__isnull=False) | Q(tokens_per_month__isnull=False)
    for q in Quota.objects.select_related("user", "group", "model").filter(with_tokens):
        subject = q.user.username if q.user_id else q.group.name if q.group_id else f"token {q.token_id}"
        for window, limit, suffix in (
            ("day", q.tokens_per_day, f"d:{at:%Y%m%d}"),
            ("month", q.tokens_per_month, f"mo:{at:%Y%m}"),
        ):
            if limit:
                rows.append((q, subject, window, int(limit), f"{PREFIX}{q.id}:{suffix}"))
    if not rows:
        return []
    pipe = client.pipeline(transaction=False)
    for *_, key in rows:
        pipe.get(key)
    values = pipe.execute()
    return [
        QuotaUse(q.id, q.scope, subject, q.model.name if q.model_id else "", window, int(value or 0), limit)
        for (q, subject, window, limit, _), value in zip(rows, values, strict=True)
    ]


def live_versions() -> list[tuple[int, str, int]]:
    """(model id, model name, version) of every version with an active deployment: what the error-rate
    rule watches."""
    from apps.deployments.models import Deployment, Desired

    return sorted(
        set(
            Deployment.objects.filter(desired_state=Desired.ACTIVE).values_list(
                "model_version__model_id", "model_version__model__name", "model_version__version"
            )
        )
    )
