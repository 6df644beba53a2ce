"""Reads of the audit log for the rest of the portal.

Who may read which audit events: the auditor reads everything; the security officer reads the
`keys` group (key management is theirs to answer for); nobody else reads any. And what other apps
(compliance checks and reports) may ask of audit without reaching into its internal modules: the
chain's integrity report, its hash algorithm, the retention period, the event catalogue, and the
audit signing key that also signs compliance reports.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from apps.core.errors import ServiceError, _

from . import catalogue, chain, retention, signing, verify
from .models import AuditEvent

# The signature algorithms of the audit signing key, and the error raised when a signature needs a
# verifier that is not installed (gmssl, for SM2): part of verify_signature's contract below.
from .offline_verify import SIG_ALG, SM2_SIG_ALG, VerifierUnavailable  # noqa: F401
from .offline_verify import verify_signature as _verify_signature

KEY_GROUP = "keys"


def events_visible_to(user) -> QuerySet:
    if user.has_perm("audit.view_auditevent"):
        return AuditEvent.objects.all()
    if user.has_perm("audit.view_key_events"):
        return AuditEvent.objects.filter(event_group=KEY_GROUP)
    raise ServiceError("permission_denied", _("reading the audit log needs the auditor role"), 403)


def export_limit(user) -> int:
    """How many rows one export may hold for this caller (settings AUDIT_EXPORT_MAX_ROWS*)."""
    if user.has_perm("audit.export_auditevent"):
        return settings.AUDIT_EXPORT_MAX_ROWS
    return settings.AUDIT_KEY_EXPORT_MAX_ROWS


def verify_chain(using: str = "default") -> dict:
    """The integrity report of the whole log: the hash chain and every checkpoint signature (the same
    report as `manage.py audit_verify` and GET /api/v1/audit/verify/; docs/audit.md, "Verification").
    `using`: another database alias holding a copy of the log (a restore drill's scratch database)."""
    return verify.verify_chain(using)


def chain_hash_alg() -> str:
    """The hash algorithm of the chain: "sha256", or "sm3" in 国密 mode."""
    return chain.hash_alg()


def retention_days() -> int:
    """How many days audit events are kept (the longest of the setting and every retention hook)."""
    return retention.retention_days()


def purge_floor_days() -> int:
    """The age in days below which the database refuses to purge audit events."""
    return retention.purge_floor_days()


def append_only_posture() -> dict:
    """What PostgreSQL reports about the application role and the audit tables (apps/audit/dbguard.py)."""
    from django.db import connection

    from .dbguard import probe_append_only

    return probe_append_only(connection)


def is_catalogued(event_type: str) -> bool:
    """Whether `event_type` is in the audit catalogue, i.e. whether record_event accepts it."""
    return event_type in catalogue.EVENT_TYPES


def signing_key_status() -> dict:
    """The audit signing key (it signs checkpoints and compliance reports) as evidence: the signer's
    kind, key id, signature algorithm, whether it is SM2, and the key file if it is one; or `error`
    saying why the key is unavailable."""
    try:
        signer = signing.get_signer()
    except signing.SigningError as exc:
        return {"error": str(exc)}
    return {
        "signer": type(signer).__name__,
        "key_id": signer.key_id,
        "sig_alg": signer.sig_alg,
        "sm2": signer.sig_alg == SM2_SIG_ALG,
        "key_file": str(getattr(signer, "path", "")),
    }


def trusted_signing_keys() -> dict:
    """key id -> public key, for every key whose signatures the portal accepts: the current audit
    signer's and the retired ones in SOVEREIGN_AUDIT_TRUSTED_KEYS. Never keys read from the database."""
    return signing.trusted_public_keys()


def verify_signature(public_key, sig_alg: str, signature: bytes, message: bytes) -> None:
    """Check a signature by an audit signing key (from trusted_signing_keys()) under `sig_alg`. Raises
    cryptography's InvalidSignature if it does not verify, VerifierUnavailable if the SM2 verifier
    (gmssl) is missing."""
    _verify_signature(public_key, sig_alg, signature, message)


def latest_event(event_type: str) -> dict | None:
    """The latest event of `event_type` as {id, timestamp, details}, or None. Not filtered by
    caller: for the platform's own bookkeeping and checks, never to answer a person's request."""
    rows = AuditEvent.objects.filter(event_type=event_type).order_by("-timestamp", "-id")
    return rows.values("id", "timestamp", "details").first()


# --- Alerts (docs/alerts.md) --------------------------------------------------------------------


def alert_channel() -> dict:
    """The configured alert channel as the checks report it: `configured`, `channel` (host and URL
    fingerprint, never the URL), and `refused` (the policy's code and reason when its address is
    not allowed now; the name is resolved)."""
    from . import alerts

    url = alerts.channel_url()
    info = {"configured": bool(url), "channel": alerts.channel_id(url), "refused": None}
    if url:
        try:
            alerts.check_channel_url(url)
        except ServiceError as err:
            info["refused"] = {"code": err.code, "detail": err.detail}
    return info


def alert_deliveries() -> QuerySet:
    """Every alert delivery (newest first): the outbox rows with their attempts and outcome."""
    from .models import AlertDelivery

    return AlertDelivery.objects.all()


def delivery_of(event: AuditEvent):
    """The alert delivery of an alerting event, or None."""
    from .models import AlertDelivery

    return AlertDelivery.objects.filter(event_id=event.pk).order_by("-id").first()


def central_collection(now) -> dict:
    """The external collector's state: configured, its address refused or not, the newest sealed
    sequence, the acknowledged one, the unshipped count and lag, the last attempt."""
    from . import alerts, shipping

    url = shipping.collector_url()
    state = {"configured": bool(url), "refused": None, **shipping.collection_state(now)}
    if url:
        try:
            alerts.check_channel_url(url)
        except ServiceError as err:
            state["refused"] = {"code": err.code, "detail": err.detail}
    return state
