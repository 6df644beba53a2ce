"""KEK lifecycle: register the first version, rotate, re-wrap data keys, retire old versions.

Every operation is audited in its own transaction (fail closed) and only the views' callers with
the security officer's permissions reach it. Key material never leaves the provider: re-wrapping
unwraps a data key into this process's memory for the duration of one `wrap` call, exactly as
an upload does.

Concurrency with uploads: an upload wraps its data key with the active version *before* its
transaction and, inside it, locks that version's row (`lock_for_artifact`). A rotation
deactivates the old version under FOR UPDATE, so it waits for uploads in flight; an upload that
commits after the rotation finds its version deactivated and re-wraps with the new one before it
commits. So once a rotation has switched versions, no new artifact names the old one, and the
re-wrap task converges.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.context import current_request_id
from apps.core.errors import Conflict, ServiceError, get_or_404
from apps.registry.models import Artifact
from inference_backend.kek import KekError

from . import pseudonym
from .models import KekRotation, KekState, KeyEncryptionKey, RotationState
from .providers import get_kek_provider

log = logging.getLogger(__name__)

BATCH = 100
LEASE = timedelta(minutes=2)


def _kek_error(err: KekError) -> ServiceError:
    """503 `kek_unavailable` with a generic detail. The provider's words name KEK ids, keystore
    paths and token labels: they go to the server log (and, for a rotation, its audit event),
    never into an answer."""
    log.error("the key provider refused: %s", err)
    return ServiceError(
        "kek_unavailable",
        "the key provider (HSM or keystore) refused or cannot be reached; quote the X-Request-ID header to the "
        "operator, whose log has the reason",
        503,
    )


def _register(kek_id: str, *, state: str, actor, source: Source, event: str, details: dict) -> KeyEncryptionKey:
    try:
        info = get_kek_provider().describe(kek_id)
    except KekError as err:
        raise _kek_error(err) from err
    kek = KeyEncryptionKey.objects.create(
        kek_id=kek_id,
        provider=info.provider,
        version=info.version,
        hsm_token=info.hsm_token,
        hsm_label=info.hsm_label,
        state=state,
        created_by=acting_user(actor),
    )
    record_event(event, actor=actor, source=source, target=kek, details={"kek_id": kek_id, **details})
    return kek


def active_kek() -> KeyEncryptionKey:
    """The version that wraps new data keys. On a fresh installation, the provider's configured
    KEK is registered as version 1 (audited as `keys.kek.register`)."""
    kek = KeyEncryptionKey.objects.filter(state=KekState.ACTIVE).first()
    if kek is not None:
        return kek
    try:
        kek_id = get_kek_provider().kek_id
    except KekError as err:
        raise _kek_error(err) from err
    try:
        with transaction.atomic():
            return _register(
                kek_id, state=KekState.ACTIVE, actor=None, source=SYSTEM, event="keys.kek.register", details={}
            )
    except IntegrityError:  # another process registered it first
        return KeyEncryptionKey.objects.get(state=KekState.ACTIVE)


def lock_for_artifact(kek_id: str, wrapped_dek: bytes) -> tuple[str, bytes]:
    """Inside an upload's transaction: lock the version that wrapped the new data key and, if a
    rotation deactivated it meanwhile, re-wrap with the active version. Returns (kek_id, wrapped)."""
    kek = KeyEncryptionKey.objects.select_for_update(no_key=True).filter(kek_id=kek_id).first()
    if kek is not None and kek.state == KekState.ACTIVE:
        return kek_id, wrapped_dek
    active = KeyEncryptionKey.objects.select_for_update(no_key=True).get(state=KekState.ACTIVE)
    provider = get_kek_provider()
    try:
        return active.kek_id, provider.wrap(provider.unwrap(wrapped_dek, kek_id), active.kek_id)
    except KekError as err:
        raise _kek_error(err) from err


def _data_keys_to_rewrap(to_kek: KeyEncryptionKey):
    return Artifact.objects.filter(shredded_at__isnull=True).exclude(wrapped_dek=b"").exclude(kek_id=to_kek.kek_id)


def start_rotation(*, actor, reason: str = "", source: Source = SYSTEM) -> KekRotation:
    """Create the next KEK version in the provider (the HSM), make it active, deactivate the old
    one, and queue the re-wrap of every data key (`rewrap_task`). 409 `rotation_in_progress` while
    another rotation runs; 503 `kek_unavailable` when the provider cannot create the version."""
    current = active_kek()
    try:
        with transaction.atomic():
            # FOR UPDATE on the active row: serialises rotations and waits for uploads in flight.
            old = KeyEncryptionKey.objects.select_for_update().get(pk=current.pk)
            if old.state != KekState.ACTIVE or KekRotation.objects.filter(state=RotationState.RUNNING).exists():
                raise Conflict("rotation_in_progress", "a KEK rotation is already running; wait for it or resume it")
            try:
                new_id = get_kek_provider().create_version()
            except KekError as err:
                raise _kek_error(err) from err
            old.state, old.rotated_at = KekState.DEACTIVATED, timezone.now()
            old.save(update_fields=["state", "rotated_at"])
            new = _register(
                new_id,
                state=KekState.ACTIVE,
                actor=actor,
                source=source,
                event="keys.kek.create",
                details={"replaces": old.kek_id},
            )
            from_ids = list(
                KeyEncryptionKey.objects.filter(state=KekState.DEACTIVATED).values_list("kek_id", flat=True)
            )
            rotation = KekRotation.objects.create(
                to_kek=new,
                from_kek_ids=from_ids,
                total=_data_keys_to_rewrap(new).count(),
                requested_by=acting_user(actor),
                reason=reason[:500],
            )
            record_event(
                "keys.kek.rotate",
                actor=actor,
                source=source,
                target=rotation,
                details={"from": old.kek_id, "to": new.kek_id, "data_keys": rotation.total, "reason": reason[:500]},
            )
            _enqueue(rotation.pk)
    except IntegrityError as err:
        raise Conflict("rotation_in_progress", "a KEK rotation is already running") from err
    except ServiceError as err:
        with transaction.atomic():
            record_event(
                "keys.kek.rotate",
                actor=actor,
                source=source,
                target=current,
                outcome=Outcome.FAILURE,
                error_code=err.code,
                details={"from": current.kek_id, "error": _reason(err)},
            )
        raise
    return rotation


def _reason(err: ServiceError) -> str:
    """For the audit event: the provider's own words behind a `kek_unavailable`, else the detail."""
    cause = err.__cause__
    return str(cause)[:2000] if isinstance(cause, KekError) else err.detail


def _enqueue(rotation_id: int) -> None:
    from .tasks import rewrap_task

    rid = current_request_id()
    transaction.on_commit(lambda: rewrap_task.delay(rotation_id, rid))


def resume_rotation(*, rotation_id: int, actor, source: Source = SYSTEM) -> KekRotation:
    """Queue a failed (or stalled) rotation again; it carries on from where it stopped."""
    with transaction.atomic():
        rotation = get_or_404(
            KekRotation.objects.select_for_update(of=("self",)).select_related("to_kek"),
            "rotation_not_found",
            f"no KEK rotation with id {rotation_id}",
            pk=rotation_id,
        )
        if rotation.state == RotationState.DONE:
            raise Conflict("rotation_done", f"rotation #{rotation_id} already finished")
        if rotation.to_kek.state != KekState.ACTIVE:
            raise Conflict(
                "rotation_superseded", f"rotation #{rotation_id} targets a KEK version that is no longer active"
            )
        rotation.state, rotation.lease_until, rotation.last_error = RotationState.RUNNING, None, ""
        try:
            with transaction.atomic():
                rotation.save(update_fields=["state", "lease_until", "last_error"])
        except IntegrityError as err:
            raise Conflict("rotation_in_progress", "another KEK rotation is running") from err
        record_event("keys.kek.rotation_resume", actor=actor, source=source, target=rotation, details={})
        _enqueue(rotation.pk)
    return rotation


def run_rotation(rotation_id: int, *, batch: int = BATCH) -> KekRotation:
    """Re-wrap, batch by batch, every data key not yet wrapped by the rotation's target version.
    Each batch commits its re-wrapped keys, the progress and an audit event together, so a crash
    loses at most one uncommitted batch and a re-run carries on (the ciphertext is never touched)."""
    provider = get_kek_provider()
    while True:
        with transaction.atomic():
            rotation = KekRotation.objects.select_for_update(of=("self",)).select_related("to_kek").get(pk=rotation_id)
            if rotation.state != RotationState.RUNNING:
                return rotation
            to = rotation.to_kek
            # Rows an upload or a shred holds are waited for (FOR UPDATE), not skipped.
            artifacts = list(_data_keys_to_rewrap(to).select_for_update(of=("self",)).order_by("pk")[:batch])
            if not artifacts:
                try:
                    pseudonym.rewrap(to.kek_id)  # the gateway's pseudonymisation key, wrapped like a data key
                except KekError as err:
                    failure = f"the pseudonymisation key: {err}"
                else:
                    failure = ""
                if failure:
                    return _fail(rotation_id, failure)
                rotation.state, rotation.finished_at, rotation.lease_until = RotationState.DONE, timezone.now(), None
                rotation.save(update_fields=["state", "finished_at", "lease_until"])
                record_event(
                    "keys.kek.rotation_complete",
                    actor=None,
                    target=rotation,
                    details={"to": to.kek_id, "rewrapped": rotation.rewrapped, "retirable": rotation.from_kek_ids},
                )
                return rotation
            moved = []
            try:
                for art in artifacts:
                    art.wrapped_dek = provider.wrap(provider.unwrap(bytes(art.wrapped_dek), art.kek_id), to.kek_id)
                    moved.append({"artifact": art.pk, "model_version": art.version_id, "from": art.kek_id})
                    art.kek_id = to.kek_id
            except KekError as err:
                failure = f"artifact {art.pk}: {err}"
            else:
                Artifact.objects.bulk_update(artifacts, ["wrapped_dek", "kek_id"])
                rotation.rewrapped += len(artifacts)
                rotation.lease_until = timezone.now() + LEASE
                rotation.save(update_fields=["rewrapped", "lease_until"])
                record_event(
                    "keys.dek.rewrap",
                    actor=None,
                    target=rotation,
                    details={"to": to.kek_id, "count": len(moved), "artifacts": moved},
                )
                continue
        # The batch rolled back as a whole; record the failure so the rotation can be resumed.
        return _fail(rotation_id, failure)


def _fail(rotation_id: int, error: str) -> KekRotation:
    with transaction.atomic():
        rotation = KekRotation.objects.select_for_update().get(pk=rotation_id)
        rotation.state, rotation.last_error, rotation.lease_until = RotationState.FAILED, error[:2000], None
        rotation.save(update_fields=["state", "last_error", "lease_until"])
        record_event(
            "keys.kek.rotation_fail",
            actor=None,
            target=rotation,
            outcome=Outcome.FAILURE,
            error_code="kek_unavailable",
            details={"error": error[:2000], "rewrapped": rotation.rewrapped},
        )
    log.error("KEK rotation #%s failed: %s", rotation_id, error)
    return rotation


def stalled_rotations() -> list[int]:
    """Running rotations whose worker stopped renewing its lease (crashed): the beat re-queues them."""
    now = timezone.now()
    return list(
        KekRotation.objects.filter(state=RotationState.RUNNING)
        .exclude(lease_until__gt=now)
        .filter(started_at__lt=now - LEASE)
        .values_list("pk", flat=True)
    )


def retire_kek(*, kek_pk: int, actor, source: Source = SYSTEM) -> KeyEncryptionKey:
    """Destroy an old KEK version in the provider. Refused while it is active (`kek_active`) or any
    artifact's data key is still wrapped by it (`kek_in_use`, with the count)."""
    with transaction.atomic():
        kek = get_or_404(
            KeyEncryptionKey.objects.select_for_update(), "kek_not_found", f"no KEK version with id {kek_pk}", pk=kek_pk
        )
        if kek.state == KekState.RETIRED:
            raise Conflict("kek_retired", f"{kek.kek_id} was already retired")
        if kek.state == KekState.ACTIVE:
            raise Conflict("kek_active", f"{kek.kek_id} is the active version; rotate first")
        in_use = Artifact.objects.filter(kek_id=kek.kek_id, shredded_at__isnull=True).exclude(wrapped_dek=b"").count()
        if pseudonym.wrapping_kek_id() == kek.kek_id:
            in_use += 1
        if in_use:
            raise Conflict(
                "kek_in_use", f"{kek.kek_id} still wraps {in_use} data key(s); finish the rotation before retiring it"
            )
        kek.state, kek.retired_at = KekState.RETIRED, timezone.now()
        kek.save(update_fields=["state", "retired_at"])
        record_event("keys.kek.retire", actor=actor, source=source, target=kek, details={"kek_id": kek.kek_id})
        try:
            get_kek_provider().destroy_version(kek.kek_id)  # last: a failure rolls the rest back
        except KekError as err:
            raise _kek_error(err) from err
    return kek


__all__ = [
    "active_kek",
    "lock_for_artifact",
    "resume_rotation",
    "retire_kek",
    "run_rotation",
    "stalled_rotations",
    "start_rotation",
]
