"""Helpers for the hot path's fixed SQL statements (the gateway's token and route lookups)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone


def aware(value):
    """A datetime column read by a raw query, as the ORM would return it: SQLite hands raw queries
    naive UTC datetimes as text, PostgreSQL aware datetimes. None stays None."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
