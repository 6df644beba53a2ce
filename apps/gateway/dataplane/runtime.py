"""Assembles a data plane from the settings: the pipeline's parts, the ASGI app, and their start
and stop. `run_dataplane` (the process) and the tests' in-process client both use it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from apps.audit.services import AsyncEventWriter, async_refusal_counter
from apps.core import throttling
from apps.core.ratelimit import AsyncRedisLimiter
from apps.deployments.selectors import server_policy, tls_config

from .. import deid
from .asgi import DataPlaneApp
from .auditsink import AuditSink, GroupCommitter
from .balancer import Balancer
from .governance import Governance
from .openai import OpenAIAdapter
from .pipeline import Pipeline
from .snapshot import SnapshotHolder
from .surrogates import ConversationStore
from .tokens import TokenCounter
from .upstream import UpstreamPool


def async_redis():
    """A redis.asyncio client (None without REDIS_URL), short timeouts like the portal's."""
    if not settings.REDIS_URL:
        return None
    import redis.asyncio

    return redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


class _InProcess:
    """Without Redis (`make run`): the process's in-memory limiter, the one the portal's own code
    in this process uses, asked from the event loop (nothing in it blocks)."""

    def __init__(self, inner):
        self.inner = inner

    async def hit(self, *checks, now_us=None):
        return self.inner.hit(*checks, now_us=now_us)


@dataclass
class DataPlane:
    pipeline: Pipeline
    app: DataPlaneApp
    redis: object | None
    owns_policy: bool = True
    scraper: asyncio.Task | None = None
    metrics_pool: UpstreamPool | None = None

    async def start(self) -> None:
        # the de-identifier's gazetteers and dictionaries (about a second of CPU, once a process):
        # loaded now, not inside the first de-identified request and its CPU budget
        await asyncio.to_thread(deid.warm)
        if self.owns_policy:
            await self.pipeline.policy.start()  # raises if the first snapshot cannot be read
        await self.pipeline.audit.start()
        if self.metrics_pool is not None:  # Triton's metrics, and the breakers published for the control plane
            self.scraper = asyncio.create_task(
                self.pipeline.balancer.run(self.metrics_pool, self.redis), name="balancer-metrics"
            )

    async def stop(self, *, final: bool = True) -> None:
        """`final`: the process ends (in-process refusal counts are written now); the tests' client
        builds a plane per call and passes False."""
        if self.scraper is not None:
            self.scraper.cancel()
            with contextlib.suppress(BaseException):
                await self.scraper
            self.scraper = None
        if self.metrics_pool is not None:
            self.metrics_pool.close()
        await self.pipeline.audit.stop(final=final)
        if self.owns_policy:
            await self.pipeline.policy.stop()
        self.pipeline.pool.close()
        if self.app.openai is not None:
            self.app.openai.pool.close()
            await self.app.openai.governance.close()
        if self.redis is not None:
            await self.redis.aclose()


def build(
    *,
    portal_upstream: str | None = None,
    policy: SnapshotHolder | None = None,
    owns_policy: bool | None = None,
    audit_writer: str = "async",
    balance_metrics: bool = True,
) -> DataPlane:
    """`policy`: the holder to use (tests); by default a new one (LISTEN on PostgreSQL, a polled
    epoch on SQLite). The plane starts and stops the holder it owns (by default: one it made)."""
    client = async_redis()
    limiter = AsyncRedisLimiter(client) if client is not None else _InProcess(throttling.limiter())
    pool = UpstreamPool(
        server_policy(),
        tls_config(),
        max_connections=settings.GATEWAY_POOL_SIZE,
        max_waiting=settings.GATEWAY_MAX_WAITING,
    )
    if audit_writer == "async" and connection.vendor == "postgresql":
        # the COPY over the committer's own async connection: no thread hop per batch
        writer = AsyncEventWriter()
        committer = GroupCommitter(run_sync=writer, on_stop=writer.close)
    else:  # Django's thread-sensitive thread (SQLite; and tests, whose transaction it joins)
        committer = GroupCommitter()
    audit = AuditSink(committer, refusal_counter=async_refusal_counter(client))
    owned = policy is None if owns_policy is None else owns_policy
    pipeline = Pipeline(policy=policy or SnapshotHolder(), audit=audit, limiter=limiter, pool=pool, balancer=Balancer())
    streams = UpstreamPool(  # streams hold a connection for a whole answer: their own pool and limit
        server_policy(),
        tls_config(),
        max_connections=settings.GATEWAY_LLM_MAX_STREAMS,
        max_waiting=settings.GATEWAY_MAX_WAITING,
    )
    openai = OpenAIAdapter(
        pipeline,
        governance=Governance(pipeline.policy),
        tokens=TokenCounter(),
        pool=streams,
        conversations=ConversationStore(client),
    )
    app = DataPlaneApp(pipeline, portal_upstream=portal_upstream, health=lambda: _health(pipeline), openai=openai)
    metrics_pool = UpstreamPool(
        server_policy(), tls_config(), max_connections=2, max_waiting=2, connect_timeout=0.5, quiet=True
    )
    return DataPlane(pipeline, app, client, owns_policy=owned, metrics_pool=metrics_pool if balance_metrics else None)


def _health(pipeline: Pipeline) -> dict:
    policy = pipeline.policy
    # public: how many, never which (names and errors are published to Redis for the control plane)
    open_circuits = sum(1 for s in pipeline.balancer.servers.values() if s.state != "closed")
    return {"policy_age_s": round(policy.age, 3), "policy_loads": policy.loads, "open_circuits": open_circuits}
