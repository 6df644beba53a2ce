"""The key inventory: every KEK version and what it protects. Aggregates only; no key material,
wrapped or not, ever leaves this module."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from django.db.models import Count, Max, Min, Q

from apps.registry.models import Artifact

from .models import KeyEncryptionKey

ALGORITHM = "AES-256"
KEY_WRAP = "RFC 5649 (CKM_AES_KEY_WRAP_PAD)"


@dataclass(frozen=True)
class KekRow:
    id: int | None
    kek_id: str
    provider: str
    version: int | None
    state: str
    hsm_token: str | None
    hsm_label: str | None
    algorithm: str
    key_wrap: str
    artifacts_protected: int
    artifacts_shredded: int
    suites: list[str]
    created_at: datetime | None
    rotated_at: datetime | None
    retired_at: datetime | None
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
    """One row per registered KEK version, plus any KEK id an artifact names that was never
    registered (state `unregistered`: from before versions were recorded), ordered by id."""
    counts = {
        r["kek_id"]: r
        for r in Artifact.objects.values("kek_id").annotate(
            protected=Count("pk", filter=Q(shredded_at__isnull=True) & ~Q(wrapped_dek=b"")),
            shredded=Count("pk", filter=Q(shredded_at__isnull=False)),
            first=Min("created_at"),
            last=Max("created_at"),
        )
    }
    suites: dict[str, set[str]] = {}
    for kek_id, suite in Artifact.objects.values_list("kek_id", "suite").distinct():
        suites.setdefault(kek_id, set()).add(suite)
    keks = {k.kek_id: k for k in KeyEncryptionKey.objects.all()}
    return [
        _row(kek_id, keks.get(kek_id), counts.get(kek_id, {}), sorted(suites.get(kek_id, ())))
        for kek_id in sorted(keks.keys() | counts.keys())
    ]


def _row(kek_id: str, kek: KeyEncryptionKey | None, c: dict, suites: list[str]) -> KekRow:
    provider, token, label = _parse(kek_id)
    return KekRow(
        id=kek.pk if kek else None,
        kek_id=kek_id,
        provider=provider,
        version=kek.version if kek else None,
        state=kek.state if kek else "unregistered",
        hsm_token=token,
        hsm_label=label,
        algorithm=kek.algorithm if kek else ALGORITHM,
        key_wrap=KEY_WRAP,
        artifacts_protected=c.get("protected", 0),
        artifacts_shredded=c.get("shredded", 0),
        suites=suites,
        created_at=kek.created_at if kek else None,
        rotated_at=kek.rotated_at if kek else None,
        retired_at=kek.retired_at if kek else None,
        first_wrapped_at=c.get("first"),
        last_wrapped_at=c.get("last"),
    )
