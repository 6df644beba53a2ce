"""Live checks. Each is a function `check(ctx) -> CheckResult` registered under a dotted name
that the catalogue refers to. A check inspects the running system (settings, database, HSM,
audit chain) and says what it looked at; it never changes anything."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

PASS, FAIL, NA, MANUAL = "pass", "fail", "not_applicable", "manual"
_ORDER = {FAIL: 0, MANUAL: 1, PASS: 2, NA: 3}


@dataclass(frozen=True)
class CheckResult:
    status: str
    summary: str
    evidence: dict = field(default_factory=dict)
    remedy: str = ""


@dataclass
class Context:
    """What a check may need to know about the evaluation: which profile and control it serves,
    the profile's options, and when."""

    profile: str
    control_id: str = ""
    options: dict = field(default_factory=dict)
    now: datetime = field(default_factory=timezone.now)
    cache: dict = field(default_factory=dict)  # shared by the checks of one run (e.g. chain verification)


REGISTRY: dict[str, Callable[[Context], CheckResult]] = {}

# How a check knows: what backs its pass. No check returns a constant.
PROOFS = {
    "probe": "exercises the control now: sends a request it must refuse, decrypts, recomputes a chain or a manifest",
    "query": "reads the live state: database rows and privileges, settings in effect, the HSM token, the "
    "kernel's sockets, the dated record of a scheduled probe (a verification run, a delivered alert, a drill)",
    "attestation": "a person's statement, uploaded with its file's SHA-256, author and expiry",
}
PROOF_OF: dict[str, str] = {}


def register(name: str, *, proof: str):
    """Register `func` as the check `name`; `proof` (a key of PROOFS) says what backs its result."""
    if proof not in PROOFS:
        raise ValueError(f"check {name}: proof must be one of {sorted(PROOFS)}")

    def deco(func):
        if name in REGISTRY:
            raise ValueError(f"check {name} registered twice")
        REGISTRY[name] = func
        PROOF_OF[name] = proof
        return func

    return deco


def run_check(name: str, ctx: Context) -> CheckResult:
    """Run one check; an exception is a failure whose evidence names the error (a check that
    cannot look is not a pass)."""
    try:
        return REGISTRY[name](ctx)
    except Exception as exc:  # noqa: BLE001 - any error while checking is reported as evidence
        return CheckResult(FAIL, f"the check could not run: {type(exc).__name__}: {exc}", {"error": str(exc)})


def combine(statuses: list[str]) -> str:
    """A control fails if any check fails; else it is manual if any check needs a person; else it
    passes if any check passed; not applicable only if every check was."""
    if not statuses:
        return NA
    return min(statuses, key=_ORDER.__getitem__)


_MODULES = (
    "settings",
    "host",
    "access",
    "accounts",
    "lifecycle",
    "keystore",
    "artifacts",
    "audit",
    "deployments",
    "triton",
    "manual",
    "transit",
    "alerts",
    "monitoring",
    "backup",
)


def load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
