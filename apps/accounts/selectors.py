"""Read-only questions other apps may ask about accounts: people's second-factor devices and the
one-time-password algorithm (apps.accounts.otp)."""

from __future__ import annotations

from .otp import (
    SM3,
    TOTP_SHA1,
    confirmed_devices,
    device_algorithm,
    has_confirmed_device,
    otp_algorithm,
    users_with_confirmed_device,
)

__all__ = [
    "SM3",
    "TOTP_SHA1",
    "confirmed_devices",
    "device_algorithm",
    "has_confirmed_device",
    "otp_algorithm",
    "users_with_confirmed_device",
]
