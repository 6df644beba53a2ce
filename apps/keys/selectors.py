"""The key inventory: what each KEK protects. Aggregates only; no key material, wrapped or not,
ever leaves this module."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from django.db.models import Count, Max, Min, Q

from apps.registry.models import Artifact

ALGORITHM = "AES-256"
KEY_WRAP = "RFC 5649 (CKM_AES_KEY_WRAP_PAD)"


@dataclass(frozen=True)
class KekRow:
    kek_id: str
    provider: str
    hsm_token: str | None
    hsm_label: str | None
    algorithm: str
    key_wrap: str
    artifacts_protected: int
    artifacts_shredded: int
    suites: list[str]
    first_wrapped_at: datetime | None
    last_wrapped_at: datetime | None

    def as_dict(self) -> dict:
        return asdict(self)


def _parse(kek_id: str) -> tuple[str, str | None, str | None]:
    """`pkcs11:<token>:<label>` names the HSM token and key label; `local:<fingerprint>` is the dev keystore."""
    provider, _, rest = kek_id.partition(":")
    if provider != "pkcs11":
        return provider, None, None
    token, _, label = rest.partition(":")
    return provider, token or None, label or None


def key_inventory() -> list[KekRow]:
    """One row per KEK id that wraps (or once wrapped) an artifact's data key, ordered by id."""
    rows = (
        Artifact.objects.values("kek_id")
        .annotate(
            protected=Count("pk", filter=Q(shredded_at__isnull=True) & ~Q(wrapped_dek=b"")),
            shredded=Count("pk", filter=Q(shredded_at__isnull=False)),
            first=Min("created_at"),
            last=Max("created_at"),
        )
        .order_by("kek_id")
    )
    suites: dict[str, set[str]] = {}
    for kek_id, suite in Artifact.objects.values_list("kek_id", "suite").distinct():
        suites.setdefault(kek_id, set()).add(suite)
    return [_row(r, sorted(suites.get(r["kek_id"], ()))) for r in rows]


def _row(r: dict, suites: list[str]) -> KekRow:
    provider, token, label = _parse(r["kek_id"])
    return KekRow(
        kek_id=r["kek_id"],
        provider=provider,
        hsm_token=token,
        hsm_label=label,
        algorithm=ALGORITHM,
        key_wrap=KEY_WRAP,
        artifacts_protected=r["protected"],
        artifacts_shredded=r["shredded"],
        suites=suites,
        first_wrapped_at=r["first"],
        last_wrapped_at=r["last"],
    )
