"""Ending a person's portal sessions (database sessions: the user id is inside each session's
signed data, so every unexpired session is decoded)."""

from __future__ import annotations

from django.contrib.sessions.models import Session
from django.utils import timezone


def end_sessions(user) -> int:
    """Delete every unexpired session of `user`; returns how many. Called inside the transaction
    that disables the account or resets its password."""
    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            session.delete()
            ended += 1
    return ended
