"""Privileged enrolment without trust on first use: one-time enrolment codes, issued with a
privileged role (or by the host), spent by the TOTP enrolment they allow."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import SYSTEM, Source, acting_user, record_event
from apps.core.errors import ServiceError, _

from ..models import EnrolmentCode
from ..otp import device_algorithm

# No 0/O, 1/I/L: the code is read out or typed by a person. 16 characters: 80 bits.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_LENGTH = 16


def _normalise(code: str) -> str:
    return "".join(ch for ch in (code or "").upper() if ch.isalnum())


def _digest(code: str) -> str:
    return hashlib.sha256(_normalise(code).encode()).hexdigest()


def void_totp_devices(user, *, actor, source: Source = SYSTEM) -> int:
    """Forget the user's TOTP devices (audited when there were any): the next enrolment needs an
    enrolment code. Called inside the transaction of the role or break-glass change that needs it."""
    from ..otp import device_models

    voided = sum(model.objects.filter(user=user).delete()[0] for model in device_models())
    if voided:
        record_event("auth.2fa.void", actor=actor, source=source, target=user, details={"devices": voided})
    return voided


def issue_enrolment_code(*, user, actor, source: Source = SYSTEM) -> tuple[EnrolmentCode, str]:
    """A new one-time code for `user` (any earlier unspent one is voided); return it with its
    plaintext, shown once. Callers decide who may issue (assign_role, grant_emergency_access,
    bootstrap_officer, the host command)."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))
    plaintext = "-".join(raw[i : i + 4] for i in range(0, _LENGTH, 4))
    now = timezone.now()
    with transaction.atomic():
        EnrolmentCode.objects.filter(user=user, used_at__isnull=True, voided_at__isnull=True).update(voided_at=now)
        code = EnrolmentCode.objects.create(
            user=user,
            digest=_digest(plaintext),
            issued_by=acting_user(actor),
            issued_at=now,
            expires_at=now + settings.ENROLMENT_CODE_LIFETIME,
        )
        record_event(
            "auth.enrolment.issue",
            actor=actor,
            source=source,
            target=user,
            details={"code_id": code.pk, "expires_at": code.expires_at.isoformat()},
        )
    return code, plaintext


def find_enrolment_code(user, plaintext: str) -> EnrolmentCode | None:
    """The usable code of `user` matching `plaintext`, or None (wrong, spent, voided or expired)."""
    if not _normalise(plaintext):
        return None
    code = EnrolmentCode.objects.filter(user=user, digest=_digest(plaintext)).first()
    return code if code is not None and code.is_usable() else None


def confirm_totp_enrolment(*, user, device, code_id: int | None, source: Source = SYSTEM) -> None:
    """Confirm a TOTP device whose code has just been verified, spending the enrolment code if
    one is needed: the device, the spent code and their audit events commit together or not at
    all (a second enrolment racing with the same code finds it spent)."""
    now = timezone.now()
    with transaction.atomic():
        if code_id is not None:
            spent = EnrolmentCode.objects.filter(
                pk=code_id, user=user, used_at__isnull=True, voided_at__isnull=True, expires_at__gt=now
            ).update(used_at=now)
            if not spent:
                raise ServiceError(
                    "enrolment_code_invalid",
                    _("the enrolment code is wrong, spent or expired; ask a security officer for a new one"),
                    403,
                    "enrolment_code",
                )
            record_event("auth.enrolment.use", actor=user, source=source, target=user, details={"code_id": code_id})
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        record_event(
            "auth.2fa.enrol",
            actor=user,
            source=source,
            target=user,
            details={"device": device.name, "algorithm": device_algorithm(device), "enrolment_code": code_id},
        )
