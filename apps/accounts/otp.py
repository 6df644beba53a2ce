"""When a session last passed its second factor. A privileged person (or the superuser) issues an
API token only within SOVEREIGN_TOKEN_OTP_FRESH_MINUTES of that (apps.accounts.services.tokens):
a session left open, or stolen, is not enough to mint a long-lived credential."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp import login as otp_login

OTP_AT = "sv_otp_at"


def verified(request, device) -> None:
    """django_otp.login (the session has passed the second factor), plus the time it did."""
    otp_login(request, device)
    session = getattr(request, "session", None)
    if session is not None and device is not None and session.get(DEVICE_ID_SESSION_KEY) == device.persistent_id:
        session[OTP_AT] = timezone.now().timestamp()


def second_factor_at(request) -> datetime | None:
    """The time the session last passed the second factor, or None (never, or no session)."""
    session = getattr(request, "session", None)
    stamp = session.get(OTP_AT) if session is not None else None
    return datetime.fromtimestamp(stamp, UTC) if stamp else None


TOTP_SHA1, SM3 = "TOTP-SHA1", "SM3"


def otp_algorithm() -> str:
    """The one-time-password algorithm new enrolments get: SOVEREIGN_OTP_ALGORITHM if set, else SM3
    (GM/T 0021) in 国密 mode (SOVEREIGN_ARTIFACT_SUITE=SM4-GCM) and HMAC-SHA1 TOTP otherwise."""
    from django.conf import settings

    chosen = getattr(settings, "OTP_ALGORITHM", "") or ""
    if chosen:
        return chosen
    return SM3 if settings.ARTIFACT_SUITE == "SM4-GCM" else TOTP_SHA1


def enrol_model():
    """The device model a new enrolment creates (apps.accounts.otp.otp_algorithm())."""
    if otp_algorithm() == SM3:
        from .models import SM3OTPDevice

        return SM3OTPDevice
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice


def device_models() -> tuple:
    """Every one-time-password device model a person may hold."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from .models import SM3OTPDevice

    return (TOTPDevice, SM3OTPDevice)


def confirmed_devices(user) -> list:
    return [d for model in device_models() for d in model.objects.filter(user=user, confirmed=True)]


def has_confirmed_device(user) -> bool:
    return any(model.objects.filter(user=user, confirmed=True).exists() for model in device_models())


def users_with_confirmed_device() -> set[int]:
    return {
        pk for model in device_models() for pk in model.objects.filter(confirmed=True).values_list("user_id", flat=True)
    }


def device_algorithm(device) -> str:
    return SM3 if getattr(device, "algorithm", "") == SM3 else TOTP_SHA1


# django-otp throttles a device after every wrong code: 1 s after the first, then 2, 4, 8 ... and it
# refuses even the right code while it waits — so one typo made the right code typed straight after
# it fail as "not valid" (issue 17). The first THROTTLE_GRACE wrong codes in a row cost no wait; from
# the next one the doubling starts at 1 s as before (with django-otp's cap). Guessing stays hopeless:
# a few free tries at ~3 in 10^6 each, then exponential back-off; a right code resets the count.
THROTTLE_GRACE = 3


def grace_throttle_factor(device) -> float:
    """The throttle factor django-otp multiplies by 2**(failures - 1): 0 (no wait) within the grace,
    then scaled so that the first wait after the grace is OTP_TOTP_THROTTLE_FACTOR seconds."""
    from django.conf import settings

    grace = getattr(settings, "OTP_THROTTLE_GRACE", THROTTLE_GRACE)
    if device.throttling_failure_count <= grace:
        return 0
    return getattr(settings, "OTP_TOTP_THROTTLE_FACTOR", 1) / 2**grace
