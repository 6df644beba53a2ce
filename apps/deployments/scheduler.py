"""Where the replicas of a replica set go: a pure function over servers and what they hold.

No database, no Triton: apps/deployments/services.py builds the :class:`Candidate` rows (a server
with the memory its desired-active replicas take) and the :class:`Ask`, and saves what
:func:`place` returns. The rules (docs/fleet.md):

- a server is a candidate when it is not DOWN, does not already hold a replica of this version,
  carries every label the set asks for (key=value), has the hardware the set asks for (blank =
  any), runs the backend the version needs, and — when both the server's memory and the set's
  memory per replica are declared — has room for one more replica (the memory of the server's
  desired-active replicas, each counted at its own set's memory_mb, plus this one);
- spread: at most one replica of a version per server;
- among the candidates, bin-packing by memory: the tightest fit first (least memory left after
  placing), then the server holding the fewest replicas, then the name.

When fewer candidates than replicas wanted exist, nothing is placed: :class:`PlacementImpossible`
(409 ``placement_impossible``) names every server and why it was not used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from apps.core.errors import Conflict, _

DOWN = "down"


@dataclass(frozen=True)
class Candidate:
    """A server as the scheduler sees it."""

    id: int
    name: str
    state: str = "unknown"
    hardware: str = "cpu"
    backends: tuple[str, ...] = ("python", "onnxruntime")
    labels: Mapping[str, str] = field(default_factory=dict)
    memory_mb: int = 0  # 0: not declared
    used_mb: int = 0  # memory of its desired-active replicas (each at its set's memory_mb)
    replicas: int = 0  # desired-active replicas it holds (every model)
    holds_version: bool = False  # already holds a desired-active replica of the version asked


@dataclass(frozen=True)
class Ask:
    """What one placement needs: ``count`` new replicas of one version."""

    count: int
    labels: Mapping[str, str] = field(default_factory=dict)
    accelerator: str = ""  # blank: any hardware
    backend: str = "python"
    memory_mb: int = 0  # per replica; 0: not estimated


class PlacementImpossible(Conflict):
    """Not all replicas could be placed; ``reasons`` holds one line per server not used."""

    def __init__(self, ask: Ask, placed: list[Candidate], reasons: list[str]):
        self.reasons = reasons
        self.fit = len(placed)  # servers that could take one more replica (the autoscaler places those)
        why = "; ".join(reasons) if reasons else _("no inference server is registered")
        super().__init__(
            "placement_impossible",
            _("cannot place %(count)s replica(s): %(fit)s server(s) fit. %(why)s")
            % {"count": ask.count, "fit": len(placed), "why": why},
        )

    def as_dict(self) -> dict:
        return {**super().as_dict(), "reasons": self.reasons}


def refusal(ask: Ask, server: Candidate) -> str | None:
    """Why ``server`` cannot take one more replica of the ask (None: it can)."""
    if server.state == DOWN:
        return _("DOWN")
    if server.holds_version:
        return _("already holds a replica of this version")
    missing = [f"{k}={v}" for k, v in sorted(ask.labels.items()) if server.labels.get(k) != v]
    if missing:
        return _("lacks label %(labels)s") % {"labels": ", ".join(missing)}
    if ask.accelerator and server.hardware != ask.accelerator:
        return _("hardware %(hardware)s, needs %(needed)s") % {"hardware": server.hardware, "needed": ask.accelerator}
    if ask.backend not in server.backends:
        return _("lacks backend %(backend)s") % {"backend": ask.backend}
    if server.memory_mb and ask.memory_mb:
        free = server.memory_mb - server.used_mb
        if free < ask.memory_mb:
            return _("%(free)s MiB free, needs %(needed)s") % {"free": max(free, 0), "needed": ask.memory_mb}
    return None


def _order(ask: Ask, server: Candidate) -> tuple:
    # The tightest fit first: memory left after placing (unknown memory sorts after every known).
    left = server.memory_mb - server.used_mb - ask.memory_mb if server.memory_mb and ask.memory_mb else math.inf
    return (left, server.replicas, server.name)


def place(ask: Ask, servers: Iterable[Candidate]) -> list[Candidate]:
    """The servers the ``ask.count`` new replicas go to (one each), in placement order; raises
    :class:`PlacementImpossible` (placing none) when fewer servers fit."""
    servers = sorted(servers, key=lambda s: s.name)
    fitting = [s for s in servers if refusal(ask, s) is None]
    fitting.sort(key=lambda s: _order(ask, s))
    if len(fitting) < ask.count:
        reasons = [f"{s.name}: {why}" for s in servers if (why := refusal(ask, s)) is not None]
        raise PlacementImpossible(ask, fitting, reasons)
    return fitting[: ask.count]
