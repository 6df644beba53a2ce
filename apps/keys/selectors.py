"""The key inventory: every KEK version and the data keys it wraps, counted by purpose. Aggregates
and labels only; no key material, wrapped or not, ever leaves this module.

Keys does not know what its data keys protect. The app that uses a purpose (the registry for
`artifact`) registers a label provider in its AppConfig.ready(): a callable that takes data key ids
and answers {data key id: label}, e.g. "triage v3". The inventory and the rotation's audit events
show those labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.db.models import Count, Max, Min, Q

from .models import DataKey, KeyEncryptionKey, Purpose

ALGORITHM = "AES-256"
KEY_WRAP = "RFC 5649 (CKM_AES_KEY_WRAP_PAD)"
LABEL_LIMIT = 50

LabelProvider = Callable[[list[int]], dict[int, str]]
_label_providers: dict[str, LabelProvider] = {}


def register_label_provider(purpose: str, provider: LabelProvider) -> None:
    """Called from the AppConfig.ready() of the app that stores data keys of `purpose`."""
    if purpose not in Purpose.values:
        raise ValueError(f"unknown data key purpose {purpose!r}")
    _label_providers[purpose] = provider


def data_key_labels(keys: Iterable[DataKey]) -> dict[int, str]:
    """{data key id: what it protects}, one provider call per purpose; keys whose purpose has no
    provider (or that the provider does not know) are left out."""
    by_purpose: dict[str, list[int]] = {}
    for key in keys:
        by_purpose.setdefault(key.purpose, []).append(key.pk)
    labels: dict[int, str] = {}
    for purpose, ids in by_purpose.items():
        provider = _label_providers.get(purpose)
        if provider is not None:
            labels.update(provider(ids))
    return labels


def protected_by(kek_id: str, limit: int = LABEL_LIMIT) -> list[str]:
    """Labels of the live data keys a KEK version wraps (the first `limit`), for the admin."""
    keys = list(DataKey.objects.live().filter(kek_id=kek_id).only("pk", "purpose").order_by("pk")[:limit])
    labels = data_key_labels(keys)
    return [labels.get(k.pk, f"{k.purpose} data key #{k.pk}") for k in keys]


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
    data_keys_protected: int
    data_keys_destroyed: int
    by_purpose: dict[str, dict[str, int]] = field(default_factory=dict)
    artifacts_protected: int = 0
    artifacts_shredded: int = 0
    suites: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    rotated_at: datetime | None = None
    retired_at: datetime | None = None
    first_wrapped_at: datetime | None = None
    last_wrapped_at: datetime | None = None

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
    """One row per registered KEK version, plus any KEK id a data key names that was never
    registered (state `unregistered`: from before versions were recorded), ordered by id."""
    per_purpose = DataKey.objects.values("kek_id", "purpose").annotate(
        live=Count("pk", filter=Q(destroyed_at__isnull=True)),
        destroyed=Count("pk", filter=Q(destroyed_at__isnull=False)),
        first=Min("created_at"),
        last=Max("created_at"),
    )
    counts: dict[str, dict] = {}
    for r in per_purpose.order_by():
        c = counts.setdefault(r["kek_id"], {"by_purpose": {}, "first": r["first"], "last": r["last"]})
        c["by_purpose"][r["purpose"]] = {"protected": r["live"], "destroyed": r["destroyed"]}
        c["first"], c["last"] = min(c["first"], r["first"]), max(c["last"], r["last"])
    suites: dict[str, set[str]] = {}
    for kek_id, suite in DataKey.objects.order_by().values_list("kek_id", "suite").distinct():
        suites.setdefault(kek_id, set()).add(suite)
    keks = {k.kek_id: k for k in KeyEncryptionKey.objects.all()}
    return [
        _row(kek_id, keks.get(kek_id), counts.get(kek_id, {}), sorted(suites.get(kek_id, ())))
        for kek_id in sorted(keks.keys() | counts.keys())
    ]


def _row(kek_id: str, kek: KeyEncryptionKey | None, c: dict, suites: list[str]) -> KekRow:
    provider, token, label = _parse(kek_id)
    by_purpose = c.get("by_purpose", {})
    artifacts = by_purpose.get(Purpose.ARTIFACT, {})
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
        data_keys_protected=sum(p["protected"] for p in by_purpose.values()),
        data_keys_destroyed=sum(p["destroyed"] for p in by_purpose.values()),
        by_purpose=by_purpose,
        artifacts_protected=artifacts.get("protected", 0),
        artifacts_shredded=artifacts.get("destroyed", 0),
        suites=suites,
        created_at=kek.created_at if kek else None,
        rotated_at=kek.rotated_at if kek else None,
        retired_at=kek.retired_at if kek else None,
        first_wrapped_at=c.get("first"),
        last_wrapped_at=c.get("last"),
    )


def custody(provider: str, token: str | None = None) -> str:
    """Where a KEK version really is, in the reader's language: the local key file (development, not
    an HSM), SoftHSM2 (a software token, development), or a PKCS#11 hardware module. SoftHSM2 is
    recognised by the configured module's path (the compliance check `keys.kek_in_hsm` reads the
    token's own description for the report)."""
    from django.conf import settings
    from django.utils.translation import gettext

    if provider == "local":
        return gettext("Local key file on this server — not an HSM (development)")
    if provider != "pkcs11":
        return provider
    module = settings.PKCS11.get("MODULE") or "softhsm"
    if "softhsm" in module.lower():
        return gettext(
            "PKCS#11 token “%(token)s” in SoftHSM2 — a software token, not a hardware module (development)"
        ) % {"token": token or settings.PKCS11.get("TOKEN") or "?"}
    return gettext("PKCS#11 hardware security module, token “%(token)s”") % {
        "token": token or settings.PKCS11.get("TOKEN") or "?"
    }


def wrapping_custody() -> str:
    """Where new data keys are wrapped now: the configured provider, as custody() names it."""
    from django.conf import settings

    return custody(settings.KEK_PROVIDER, settings.PKCS11.get("TOKEN") or None)
