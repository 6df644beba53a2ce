"""Which replica a call goes to, and what the data plane learns from the calls it makes (docs/gateway.md,
"Choosing a replica").

One `Balancer` per data-plane process (the pipeline's; the OpenAI adapter shares it):

- **version split** (unversioned calls only): a smooth weighted round-robin (nginx's) per model over
  the versions that have at least one available replica, by their ReplicaSet.traffic_weight (Route.weight).
  Deterministic, so over any N calls each version gets its share within the number of versions,
  and processes that each split exactly add up to an exact split. A version with no available
  replica drops out (its share goes to the others in proportion); all weights 0: equal shares.
  A versioned call (/versions/<n>) goes to that version whatever its weight.
- **replica by load**: a smooth weighted round-robin over the version's available replicas, each
  weighted, at every choice, by

      weight = capacity / ((outstanding + pending + queue_units + 1) × latency)

  `latency`: the moving average (10 % per call) of the time the server took to answer this
  process's calls (a server not yet measured counts as the fastest); `outstanding`: this process's
  calls in flight to it (live); `pending`: Triton's nv_inference_pending_request_count (every
  client's queued requests); `queue_units`: Triton's mean queue time per request over the last
  scrape interval (Δnv_inference_queue_duration_us ÷ Δnv_inference_request_success) in units of
  SOVEREIGN_GATEWAY_QUEUE_UNIT_US (1 ms); `capacity`: 1 − GPU utilisation (nv_gpu_utilization,
  floored at 0.1) where the server reports a GPU, else 1 — the seed's "weighted round-robin by GPU
  utilisation", with the load already carried and the speed measured. Idle replicas of one speed
  alternate; a replica half as fast gets half the calls; every replica with a weight gets its turn
  (so a slow one is measured again, and recovers its share when it recovers).
- **circuit breaker per server**: a transport failure before any answer byte (refused, reset,
  closed, connect timeout) opens it at once; SOVEREIGN_GATEWAY_BREAKER_FAILURES consecutive 5xx
  answers or read timeouts open it too. An open server is out of the rotation; after a backoff
  (1 s, doubling to 30 s) one call is let through as a probe (half-open): success closes it,
  failure reopens it with the next backoff. The probe call, like any call, is failed over.

Triton's metrics are scraped in the background (`run`) every SOVEREIGN_GATEWAY_METRICS_INTERVAL
seconds from each server's metrics_url, with a short timeout; a failed scrape keeps no stale figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from apps.core.errors import ServiceError, _
from apps.deployments.selectors import GATEWAY_VIEW_KEY, GATEWAY_VIEW_TTL
from inference_backend.metrics import parse_metrics  # shared with the autoscaler (apps/deployments/autoscale.py)

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class Metrics:
    """One server's load as its last scrape saw it."""

    pending: float = 0.0
    queue_us: float = 0.0  # mean queue time per request over the last interval
    gpu_utilisation: float | None = None
    at: float = 0.0
    # the cumulative counters of the previous scrape, for the interval's mean
    _queue_total: float | None = None
    _success_total: float | None = None


@dataclass
class ServerState:
    server_id: int
    name: str = ""
    metrics_url: str = ""
    http_url: str = ""
    outstanding: int = 0
    calls: int = 0  # attempts started by this process
    failures: int = 0  # attempts failed (transport or 5xx)
    state: str = CLOSED
    consecutive: int = 0
    backoff: float = 0.0
    retry_at: float = 0.0
    opened_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None  # time.time()
    probing: bool = False
    latency: float = 0.0  # seconds: moving average of this process's answered calls (0: none yet)
    busy: float = 0.0  # seconds spent on answered calls, in total
    answered: int = 0
    metrics: Metrics = field(default_factory=Metrics)

    def view(self) -> dict:
        return {
            "server_id": self.server_id,
            "server": self.name,
            "state": self.state,
            "outstanding": self.outstanding,
            "calls": self.calls,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "latency_ms": round(self.latency * 1000, 3),
            "pending": self.metrics.pending,
            "queue_us": round(self.metrics.queue_us, 1),
            "gpu_utilisation": self.metrics.gpu_utilisation,
        }


PROBE_TIMEOUT = 120.0  # seconds a half-open probe may stay unanswered before another is let through
LATENCY_WEIGHT = 0.1  # each answered call's part in its server's moving-average latency


@dataclass(slots=True)
class Attempt:
    """One call's use of a server, from `begin` to its outcome."""

    state: ServerState
    started: float


def no_replica(name: str, retry_after: float) -> ServiceError:
    err = ServiceError(
        "triton_unavailable",
        _("no replica of %(name)s is reachable now; quote the X-Request-ID header to the operator")
        % {"name": repr(name)},
        503,
    )
    err.retry_after = str(max(1, int(retry_after + 0.999)))
    return err


class Balancer:
    def __init__(
        self,
        *,
        failures_to_open: int | None = None,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        queue_unit_us: float | None = None,
        clock=time.monotonic,
    ):
        self.failures_to_open = failures_to_open or getattr(settings, "GATEWAY_BREAKER_FAILURES", 3)
        self.first_backoff, self.max_backoff = backoff, max_backoff
        self.queue_unit_us = queue_unit_us or getattr(settings, "GATEWAY_QUEUE_UNIT_US", 1000.0)
        self.clock = clock
        self.servers: dict[int, ServerState] = {}
        self._wrr: dict[int, dict[int, float]] = {}  # model id → version → current weight
        self._swrr: dict[tuple[int, int], dict[int, float]] = {}  # (model id, version) → server → current
        self._turn = itertools.count()
        self.process = f"{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:x}"
        self._published: dict[int, str] = {}
        # Called with the server's state when its circuit opens: the pipeline fails over the calls
        # still waiting on it (UpstreamPool.abandon) instead of leaving them to the read timeout.
        self.on_open = None

    # -- the choice ---------------------------------------------------------------------------

    def server(self, route) -> ServerState:
        state = self.servers.get(route.server_id)
        if state is None:
            state = self.servers[route.server_id] = ServerState(route.server_id)
        state.name, state.metrics_url, state.http_url = route.server, route.metrics_url, route.http_url
        return state

    def _available(self, state: ServerState, now: float) -> bool:
        if state.state == CLOSED:
            return True
        if state.state == HALF_OPEN:  # a probe that never reported back (cancelled): another one, later
            return now >= state.retry_at + PROBE_TIMEOUT
        return now >= state.retry_at  # open: due for its half-open probe

    def choose(
        self,
        routes: Sequence,
        *,
        versioned: bool,
        exclude: frozenset = frozenset(),
        like=None,
        skip: frozenset = frozenset(),
        other_version: bool = False,
    ):
        """The route for the next call among `routes` (one model's, as the policy gave them). `exclude`:
        servers already tried by this call; `skip`: deployments already tried (a version its server no
        longer serves, while the server may serve others); `like`: the route that failed (a failover
        stays on its version, or another version with the same signature; `other_version`: another
        version first, for a failure of the version itself). 503 `triton_unavailable`
        when no replica is available."""
        now = self.clock()
        candidates = []
        for route in routes:
            if route.server_id in exclude or route.deployment_id in skip:
                continue
            if like is not None and route.version != like.version and (versioned or route.signature != like.signature):
                continue
            if self._available(self.server(route), now):
                candidates.append(route)
        if not candidates:
            waits = [self.server(r).retry_at - now for r in routes if r.server_id not in exclude]
            raise no_replica(routes[0].model if routes else "", min((w for w in waits if w > 0), default=1.0))
        if like is not None:  # a failover: its own version first, or (`other_version`) another one first
            same = [r for r in candidates if (r.version == like.version) != other_version]
            candidates = same or candidates
        elif not versioned:
            candidates = self._version(candidates)
        route = self._by_load(candidates)
        state = self.servers[route.server_id]
        if state.state != CLOSED:  # its probe
            state.state, state.probing, state.retry_at = HALF_OPEN, True, now
        return route

    def _version(self, candidates: list) -> list:
        versions: dict[int, int] = {}
        for r in candidates:
            versions[r.version] = max(versions.get(r.version, 0), r.weight)
        if len(versions) == 1:
            return candidates
        if not any(versions.values()):
            versions = dict.fromkeys(versions, 1)
        current = self._wrr.setdefault(candidates[0].model_id, {})
        total, best, best_value = 0, None, None
        for version, weight in versions.items():
            value = current.get(version, 0.0) + weight
            current[version] = value
            total += weight
            if weight and (best_value is None or value > best_value):
                best, best_value = version, value
        current[best] -= total
        return [r for r in candidates if r.version == best]

    def weight(self, state: ServerState, typical: float) -> float:
        """The replica's share now: its speed (1 / latency) × free capacity ÷ the load it carries."""
        m = state.metrics
        queue_units = int(m.queue_us // self.queue_unit_us) if m.queue_us else 0
        capacity = 1.0 if m.gpu_utilisation is None else max(0.1, 1.0 - m.gpu_utilisation)
        load = state.outstanding + m.pending + queue_units + 1
        return capacity / (load * (state.latency or typical))

    def _by_load(self, candidates: list):
        """A smooth weighted round-robin over the replicas, each weighted by `weight()` as it is now."""
        if len(candidates) == 1:
            return candidates[0]
        states = [self.servers[r.server_id] for r in candidates]
        known = [s.latency for s in states if s.latency]
        typical = min(known) if known else 1.0  # a replica not yet measured: as fast as the fastest
        current = self._swrr.setdefault((candidates[0].model_id, candidates[0].version), {})
        total, best, best_value = 0.0, 0, None
        for i, state in enumerate(states):
            weight = self.weight(state, typical)
            value = current.get(state.server_id, 0.0) + weight
            current[state.server_id] = value
            total += weight
            if best_value is None or value > best_value:
                best, best_value = i, value
        current[states[best].server_id] -= total
        return candidates[best]

    # -- what the calls tell ------------------------------------------------------------------

    def begin(self, route) -> Attempt:
        state = self.servers.get(route.server_id) or self.server(route)
        state.outstanding += 1
        state.calls += 1
        return Attempt(state, self.clock())

    def succeeded(self, attempt: Attempt) -> None:
        state = attempt.state
        state.outstanding -= 1
        took = self.clock() - attempt.started
        state.busy += took
        state.answered += 1
        state.latency = took if not state.latency else state.latency + LATENCY_WEIGHT * (took - state.latency)
        state.consecutive = 0
        if state.state != CLOSED:
            log.warning("gateway: server %s answers again; circuit closed", state.name)
            state.state, state.probing, state.backoff, state.opened_at = CLOSED, False, 0.0, None

    def finished(self, attempt: Attempt) -> None:
        """The call ended in a way that says nothing about the server (a client gone, a model-level 5xx)."""
        state = attempt.state
        state.outstanding -= 1
        if state.state == HALF_OPEN and state.probing:
            state.state, state.probing = OPEN, False  # no verdict: the next call probes again

    def failed(self, attempt: Attempt, error: str, *, transport: bool) -> None:
        """A transport failure before any answer byte (opens at once), or a 5xx / read timeout."""
        state = attempt.state
        state.outstanding -= 1
        state.failures += 1
        state.consecutive += 1
        state.last_error, state.last_error_at = error[:300], time.time()
        if transport or state.consecutive >= self.failures_to_open or state.state == HALF_OPEN:
            self._open(state)

    def _open(self, state: ServerState) -> None:
        now = self.clock()
        was = state.state
        state.backoff = self.first_backoff if was == CLOSED else min(self.max_backoff, max(state.backoff, 0.5) * 2)
        state.state, state.probing, state.retry_at = OPEN, False, now + state.backoff
        if was == CLOSED:
            state.opened_at = now
            log.warning("gateway: circuit to server %s opened: %s", state.name, state.last_error)
            if self.on_open is not None:
                self.on_open(state)

    def stats(self) -> dict[int, dict]:
        return {sid: s.view() for sid, s in self.servers.items()}

    # -- background: Triton's metrics, and the view the control plane reads ----------------------

    async def run(self, pool, redis=None, *, interval: float | None = None, timeout: float = 0.5) -> None:
        """Scrape every known server's metrics and publish the breakers, forever (a task)."""
        interval = interval or getattr(settings, "GATEWAY_METRICS_INTERVAL", 1.5)
        while True:
            started = self.clock()
            servers = [s for s in self.servers.values() if s.metrics_url]
            if servers:
                await asyncio.gather(*(self.scrape(pool, s, timeout) for s in servers), return_exceptions=True)
            if redis is not None:
                with contextlib.suppress(Exception):  # Redis down: the log has the breaker's changes
                    await self.publish(redis)
            await asyncio.sleep(max(0.05, interval - (self.clock() - started)))

    async def scrape(self, pool, state: ServerState, timeout: float = 0.5) -> None:
        try:
            answer = await pool.request("GET", state.metrics_url, [], timeout=timeout)
            if answer.status != 200:
                raise ValueError(f"status {answer.status}")
            apply_metrics(state.metrics, parse_metrics(answer.body.decode("utf-8", "replace")), self.clock())
        except Exception as err:  # noqa: BLE001 - no figures rather than stale ones
            log.debug("gateway: metrics of %s unreadable: %s", state.name, err)
            state.metrics = Metrics()

    async def publish(self, redis) -> None:
        """Each server's breaker as this process sees it (apps.deployments.selectors.gateway_view reads it)."""
        pipe = redis.pipeline(transaction=False)
        for sid, state in self.servers.items():
            view = state.view()
            view["process"] = self.process
            view["at"] = time.time()
            key = GATEWAY_VIEW_KEY.format(server_id=sid)
            pipe.hset(key, self.process, json.dumps(view))
            pipe.expire(key, GATEWAY_VIEW_TTL)
        await pipe.execute()


def apply_metrics(m: Metrics, figures: dict[str, float], now: float) -> None:
    m.pending = figures.get("pending", 0.0)
    m.gpu_utilisation = figures.get("gpu")
    queue, success = figures.get("queue_us"), figures.get("success")
    if queue is not None and success is not None and m._queue_total is not None and m._success_total is not None:
        done = success - m._success_total
        m.queue_us = (queue - m._queue_total) / done if done > 0 else 0.0
    m._queue_total, m._success_total, m.at = queue, success, now
