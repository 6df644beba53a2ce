"""Keys own the key hierarchy: KEK versions (register, rotate, retire) and the data keys they wrap
(seal, open, re-wrap, destroy). Other apps hold a reference to a `DataKey` and call these
functions; keys never looks at the rows that use a data key (labels come from the providers
registered in apps.keys.selectors).

Every operation is audited in its own transaction (fail closed) and only the views' callers with
the security officer's permissions reach the KEK lifecycle. Key material never leaves the
provider: re-wrapping unwraps a data key into this process's memory for the duration of one
`wrap` call, exactly as sealing does.

Concurrency with sealing: `seal` wraps a new data key with the active version *before* the
caller's transaction; `store_data_key`, inside it, locks that version's row. A rotation
deactivates the old version under FOR UPDATE, so it waits for stores in flight; a store that
commits after the rotation finds its version deactivated and re-wraps with the new one before it
commits. So once a rotation has switched versions, no new data key names the old one, and the
re-wrap task converges.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import Outcome
from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.context import current_request_id
from apps.core.errors import Conflict, NotFound, ServiceError, _, get_or_404
from inference_backend import envelope, stream
from inference_backend.kek import KekError

from . import providers, pseudonym
from .models import DataKey, KekRotation, KekState, KeyEncryptionKey, Purpose, RotationState
from .providers import get_kek_provider
from .selectors import data_key_labels

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
        _(
            "the key provider (HSM or keystore) refused or cannot be reached; quote the X-Request-ID header to the "
            "operator, whose log has the reason"
        ),
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


@dataclass(frozen=True)
class Sealed:
    """A ciphertext and its new data key, not saved yet: save the key with `store_data_key` inside
    the transaction that saves the row referencing it."""

    ciphertext: bytes
    data_key: DataKey


def seal(plaintext: bytes, aad: bytes, *, purpose: str) -> Sealed:
    """Encrypt with a fresh 256-bit data key (settings.ARTIFACT_SUITE, segmented stream format) and
    wrap that key with the active KEK version. The plaintext key exists only in this frame. Runs
    outside the caller's transaction (encryption takes time; no lock is held meanwhile)."""
    if purpose not in Purpose.values:
        raise ValueError(f"unknown data key purpose {purpose!r}")
    kek = active_kek()
    provider = get_kek_provider()
    dek = envelope.generate_dek()
    try:
        suite = settings.ARTIFACT_SUITE
        ciphertext = providers.encrypt(
            plaintext, aad, dek, suite=suite, kek_id=kek.kek_id, kek_version=str(kek.version)
        )
        wrapped = provider.wrap(dek, kek.kek_id)
    except KekError as err:
        raise _kek_error(err) from err
    finally:
        del dek
    return Sealed(ciphertext, DataKey(purpose=purpose, suite=suite, kek_id=kek.kek_id, wrapped=wrapped))


class StreamSealer:
    """A fresh data key for encrypting streams chunk by chunk (an artifact set of several files, a
    multi-GB upload) under one key: `encryptor(dst, aad)` returns a push-style
    `inference_backend.stream.StreamEncryptor`. The key is wrapped by the active KEK at once
    (`data_key`, unsaved: store it with `store_data_key`, or keep the wrapped bytes for an ephemeral
    key); the plaintext key lives in this object until `close()` (use it as a context manager)."""

    def __init__(self, *, purpose: str) -> None:
        if purpose not in Purpose.values:
            raise ValueError(f"unknown data key purpose {purpose!r}")
        kek = active_kek()
        self._kek_version = str(kek.version)
        self._dek: bytes | None = envelope.generate_dek()
        self.suite = settings.ARTIFACT_SUITE
        try:
            wrapped = get_kek_provider().wrap(self._dek, kek.kek_id)
        except KekError as err:
            self._dek = None
            raise _kek_error(err) from err
        self.data_key = DataKey(purpose=purpose, suite=self.suite, kek_id=kek.kek_id, wrapped=wrapped)

    def encryptor(self, dst, aad: bytes) -> stream.StreamEncryptor:
        if self._dek is None:
            raise ValueError("this StreamSealer is closed")
        return stream.StreamEncryptor(
            dst, self._dek, aad, suite=self.suite, kek_id=self.data_key.kek_id, kek_version=self._kek_version
        )

    def close(self) -> None:
        self._dek = None

    def __enter__(self) -> StreamSealer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextmanager
def _opened(data_key: DataKey):
    """The data key unwrapped through the KEK provider, for one use: 409 `data_key_destroyed` after
    a shred, 503 `kek_unavailable` (or the provider's code); a stream that does not authenticate
    inside the block becomes 400 `ciphertext_invalid`. The plaintext key is dropped on exit."""
    if data_key.is_destroyed:
        raise Conflict(
            "data_key_destroyed",
            _("data key #%(data_key)s was destroyed; its ciphertext cannot be opened") % {"data_key": data_key.pk},
        )
    try:
        dek = get_kek_provider().unwrap(bytes(data_key.wrapped), data_key.kek_id)
    except KekError as err:
        raise _kek_error(err) from err
    try:
        yield dek
    except stream.StreamError as err:
        raise ServiceError(
            "ciphertext_invalid", _("the ciphertext does not authenticate: %(err)s") % {"err": err}
        ) from err
    finally:
        del dek


def open_stream(src, dst, aad: bytes, *, data_key: DataKey) -> int:
    """Decrypt a segmented-format stream into `dst` (each segment authenticated before it is
    written; on failure the caller discards `dst`). `data_key` may be unsaved (an ephemeral key
    whose wrapped bytes were kept elsewhere). 409 `data_key_destroyed` after a shred; 400
    `ciphertext_invalid` when the stream does not authenticate."""
    with _opened(data_key) as dek:
        return stream.decrypt_stream(src, dst, dek, aad)


def authenticate_head(src, aad: bytes, *, data_key: DataKey, keep: int = 0) -> tuple[int, bytes]:
    """Unwrap the data key through the KEK provider and authenticate the first segment of a
    segmented-format file (stream.authenticate_first_segment); the plaintext is discarded. For
    the compliance checks: proves a stored file is ciphertext of this key without reading it all.
    Returns segment 0's plaintext length and its first `keep` bytes (to tell the file's format).
    409 `data_key_destroyed`, 400 `ciphertext_invalid`, 503 `kek_unavailable`."""
    with _opened(data_key) as dek:
        return stream.authenticate_first_segment(src, dek, aad, keep)


def kek_refuses(kek_id: str) -> bool:
    """Does the key provider refuse to use KEK version `kek_id`? A probe for the disposal check: it
    asks the provider (the HSM) to wrap a throw-away all-zero key with that version; a retired
    (destroyed) version must be refused. Nothing is stored; the provider's words go to no answer."""
    try:
        get_kek_provider().wrap(bytes(32), kek_id)
    except KekError:
        return True
    return False


def store_data_key(data_key: DataKey, *, actor, source: Source = SYSTEM) -> DataKey:
    """Inside the caller's transaction: save a key from `seal` (`keys.dek.create`). Its KEK version
    is locked until that transaction ends; if a rotation deactivated it meanwhile, the key is first
    re-wrapped with the active version, so no new key commits under a version being rotated out."""
    if data_key.pk is not None:
        raise ValueError("this data key is already stored")
    kek = KeyEncryptionKey.objects.select_for_update(no_key=True).filter(kek_id=data_key.kek_id).first()
    if kek is None or kek.state != KekState.ACTIVE:
        active = KeyEncryptionKey.objects.select_for_update(no_key=True).get(state=KekState.ACTIVE)
        provider = get_kek_provider()
        try:
            data_key.wrapped = provider.wrap(provider.unwrap(bytes(data_key.wrapped), data_key.kek_id), active.kek_id)
        except KekError as err:
            raise _kek_error(err) from err
        data_key.kek_id = active.kek_id
    data_key.save()
    record_event(
        "keys.dek.create",
        actor=actor,
        source=source,
        target=data_key,
        details={"purpose": data_key.purpose, "suite": data_key.suite, "kek_id": data_key.kek_id},
    )
    return data_key


def open_sealed(ciphertext: bytes, aad: bytes, *, data_key: DataKey) -> bytes:
    """Decrypt in memory (integrity checks; deploys never decrypt in the portal: the Triton host
    unwraps with its own access to the KEK). 409 `data_key_destroyed` after a shred."""
    if data_key.is_destroyed:
        raise Conflict(
            "data_key_destroyed",
            _("data key #%(data_key)s was destroyed; its ciphertext cannot be opened") % {"data_key": data_key.pk},
        )
    try:
        return providers.decrypt(ciphertext, bytes(data_key.wrapped), data_key.kek_id, aad)
    except KekError as err:
        raise _kek_error(err) from err


def destroy_data_key(
    *, data_key_id: int, reason: str, actor, source: Source = SYSTEM, target=None, details: dict | None = None
) -> DataKey:
    """Crypto-shred: wipe the wrapped key so whatever it encrypted can never be decrypted again,
    and record `keys.dek.destroy` (on `target`, the row the key protects, if the caller names it;
    with the caller's `details`, the KEK id and the reason, never key bytes). 409
    `already_shredded` the second time. Runs in the caller's transaction when there is one."""
    with transaction.atomic():
        key = DataKey.objects.select_for_update().filter(pk=data_key_id).first()
        if key is None:
            raise NotFound(
                "data_key_not_found", _("no data key with id %(data_key_id)s") % {"data_key_id": data_key_id}
            )
        if key.is_destroyed:
            raise Conflict("already_shredded", _("data key #%(key)s was already destroyed") % {"key": key.pk})
        key.wrapped, key.destroyed_at = b"", timezone.now()
        key.save(update_fields=["wrapped", "destroyed_at"])
        record_event(
            "keys.dek.destroy",
            actor=actor,
            source=source,
            target=target if target is not None else key,
            details={
                **(details or {}),
                "data_key": key.pk,
                "purpose": key.purpose,
                "kek_id": key.kek_id,
                "reason": reason,
            },
        )
    return key


def pseudonym_key() -> bytes:
    """The installation's pseudonymisation key (apps/keys/pseudonym.py), unwrapped once per process."""
    return pseudonym.pseudonym_key()


def _data_keys_to_rewrap(to_kek: KeyEncryptionKey):
    return DataKey.objects.live().exclude(kek_id=to_kek.kek_id)


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
                raise Conflict("rotation_in_progress", _("a KEK rotation is already running; wait for it or resume it"))
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
        raise Conflict("rotation_in_progress", _("a KEK rotation is already running")) from err
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
    return str(cause)[:2000] if isinstance(cause, KekError) else err.detail_en


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
            _("no KEK rotation with id %(rotation_id)s") % {"rotation_id": rotation_id},
            pk=rotation_id,
        )
        if rotation.state == RotationState.DONE:
            raise Conflict(
                "rotation_done", _("rotation #%(rotation_id)s already finished") % {"rotation_id": rotation_id}
            )
        if rotation.to_kek.state != KekState.ACTIVE:
            raise Conflict(
                "rotation_superseded",
                _("rotation #%(rotation_id)s targets a KEK version that is no longer active")
                % {"rotation_id": rotation_id},
            )
        rotation.state, rotation.lease_until, rotation.last_error = RotationState.RUNNING, None, ""
        try:
            with transaction.atomic():
                rotation.save(update_fields=["state", "lease_until", "last_error"])
        except IntegrityError as err:
            raise Conflict("rotation_in_progress", _("another KEK rotation is running")) from err
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
            keys = list(_data_keys_to_rewrap(to).select_for_update().order_by("pk")[:batch])
            if not keys:
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
                for key in keys:
                    key.wrapped = provider.wrap(provider.unwrap(bytes(key.wrapped), key.kek_id), to.kek_id)
                    moved.append({"data_key": key.pk, "purpose": key.purpose, "from": key.kek_id})
                    key.kek_id = to.kek_id
            except KekError as err:
                failure = f"data key {key.pk} ({key.purpose}): {err}"
            else:
                DataKey.objects.bulk_update(keys, ["wrapped", "kek_id"])
                labels = data_key_labels(keys)
                for entry in moved:
                    if entry["data_key"] in labels:
                        entry["protects"] = labels[entry["data_key"]]
                rotation.rewrapped += len(keys)
                rotation.lease_until = timezone.now() + LEASE
                rotation.save(update_fields=["rewrapped", "lease_until"])
                record_event(
                    "keys.dek.rewrap",
                    actor=None,
                    target=rotation,
                    details={"to": to.kek_id, "count": len(moved), "data_keys": moved},
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
    live data key is still wrapped by it (`kek_in_use`, with the count)."""
    with transaction.atomic():
        kek = get_or_404(
            KeyEncryptionKey.objects.select_for_update(),
            "kek_not_found",
            _("no KEK version with id %(kek_pk)s") % {"kek_pk": kek_pk},
            pk=kek_pk,
        )
        if kek.state == KekState.RETIRED:
            raise Conflict("kek_retired", _("%(kek_id)s was already retired") % {"kek_id": kek.kek_id})
        if kek.state == KekState.ACTIVE:
            raise Conflict("kek_active", _("%(kek_id)s is the active version; rotate first") % {"kek_id": kek.kek_id})
        in_use = DataKey.objects.live().filter(kek_id=kek.kek_id).count()
        if pseudonym.wrapping_kek_id() == kek.kek_id:
            in_use += 1
        if in_use:
            raise Conflict(
                "kek_in_use",
                _("%(kek_id)s still wraps %(in_use)s data key(s); finish the rotation before retiring it")
                % {"kek_id": kek.kek_id, "in_use": in_use},
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
    "KekError",
    "Sealed",
    "active_kek",
    "destroy_data_key",
    "open_sealed",
    "pseudonym_key",
    "seal",
    "store_data_key",
    "resume_rotation",
    "retire_kek",
    "run_rotation",
    "stalled_rotations",
    "start_rotation",
]


# --- Data keys used for many small ciphertexts (issue 13: retained chat exchanges) ---------------


def create_data_key(*, purpose: str, actor, source: Source = SYSTEM) -> DataKey:
    """Inside the caller's transaction: a fresh data key, wrapped by the active KEK version and
    stored (`keys.dek.create`), for a caller that encrypts many small values under it later with
    `seal_with`. The plaintext key exists only in this frame."""
    if purpose not in Purpose.values:
        raise ValueError(f"unknown data key purpose {purpose!r}")
    kek = active_kek()
    dek = envelope.generate_dek()
    try:
        wrapped = get_kek_provider().wrap(dek, kek.kek_id)
    except KekError as err:
        raise _kek_error(err) from err
    finally:
        del dek
    key = DataKey(purpose=purpose, suite=settings.ARTIFACT_SUITE, kek_id=kek.kek_id, wrapped=wrapped)
    return store_data_key(key, actor=actor, source=source)


def seal_with(plaintext: bytes, aad: bytes, *, data_key: DataKey) -> bytes:
    """Encrypt under an existing, live data key (unwrapped for this call only, never cached), in the
    segmented format `open_sealed` reads. 409 `data_key_destroyed` after a shred."""
    if data_key.is_destroyed:
        raise Conflict(
            "data_key_destroyed",
            _("data key #%(data_key)s was destroyed; nothing can be sealed with it") % {"data_key": data_key.pk},
        )
    try:
        dek = get_kek_provider().unwrap(bytes(data_key.wrapped), data_key.kek_id)
        try:
            kek = KeyEncryptionKey.objects.filter(kek_id=data_key.kek_id).only("version").first()
            version = str(kek.version) if kek is not None else ""
            return providers.encrypt(
                plaintext, aad, dek, suite=data_key.suite, kek_id=data_key.kek_id, kek_version=version
            )
        finally:
            del dek
    except KekError as err:
        raise _kek_error(err) from err
