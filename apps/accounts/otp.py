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
