"""Removing a person's second factor: a security event, so only a security officer (or the sealed
superuser, as everywhere in apps/accounts/services/policy.py) may do it, never on their own
account and never on the superuser's (that one is reset on the host). A
privileged person left without a confirmed device gets a one-time enrolment code, shown once to
the officer, since the password alone never enrols a privileged person's authenticator."""

from __future__ import annotations

from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.audit.services import SYSTEM, Source, record_event
from apps.core.errors import _, get_or_404

from ..otp import has_confirmed_device
from .enrolment import issue_enrolment_code
from .policy import Forbidden, is_officer, is_privileged, is_system


def require_security_officer(actor, target_user, *, what: str) -> None:
    """The checks shared by the officer's account-security writes (second factor, lockout): a
    security officer (standing or break-glass) or the superuser, never on their own account; or
    the host (actor None, trusted and recorded as the system)."""
    if is_system(actor):
        return
    if not is_officer(actor):
        raise Forbidden("security_officer_required", _("only a security officer may %(what)s") % {"what": what})
    if target_user is not None and target_user.pk == actor.pk:
        raise Forbidden(
            "self_change_forbidden", _("nobody may %(what)s on their own account; ask another officer") % {"what": what}
        )


def remove_second_factor(
    *, device_id: int, actor, source: Source = SYSTEM, device_model=TOTPDevice
) -> tuple[TOTPDevice, str | None]:
    """Delete one one-time-password device (`device_model`: TOTPDevice, or SM3OTPDevice in 国密
    mode). The person's sessions verified by it stop being verified at their next request
    (django-otp finds no device). Alerting. Returns the removed device and, when a privileged
    person has no confirmed device left, the plaintext of their new enrolment code (else None)."""
    with transaction.atomic():
        device = get_or_404(
            device_model.objects.select_for_update().select_related("user"),
            "device_not_found",
            _("no second-factor device with id %(device_id)s") % {"device_id": device_id},
            pk=device_id,
        )
        owner = device.user
        require_security_officer(actor, owner, what="remove a second factor")
        if owner.is_superuser:
            raise Forbidden(
                "superuser_target_forbidden", _("the superuser's second factor is reset on the host, not here")
            )
        removed = {"id": device.pk, "name": device.name, "confirmed": device.confirmed}
        device.delete()
        record_event(
            "auth.2fa.remove",
            actor=actor,
            source=source,
            target=owner,
            details={"alert": True, "device": removed, "deleted": {device_model._meta.label_lower: [removed["id"]]}},
        )
        code = None
        if is_privileged(owner) and not has_confirmed_device(owner):
            _code_row, code = issue_enrolment_code(user=owner, actor=actor, source=source)
    device.pk = removed["id"]
    return device, code
