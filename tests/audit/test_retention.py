"""Retention: only whole sealed ranges older than retention are purged, archived first, and what
remains still verifies."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
import time_machine
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditCheckpoint, AuditEvent
from apps.audit.offline_verify import load_public_keys, verify_export
from apps.audit.retention import purge_expired, retention_days
from apps.audit.signing import get_signer, public_pem
from apps.audit.verify import verify_chain
from tests.audit.chain_helpers import fill

pytestmark = pytest.mark.django_db


def test_default_retention_is_six_years():
    assert retention_days() == 2192


def test_purge_archives_then_leaves_a_verifiable_remainder():
    with time_machine.travel(datetime(2015, 3, 1, tzinfo=UTC)):
        fill(3)
        fill(2)
    fill(2)  # young: kept, and so is everything after the last old checkpoint

    result = purge_expired()

    assert (result.through_sequence, result.events) == (5, 5)
    assert list(AuditEvent.objects.filter(sequence__lte=5)) == []
    assert list(AuditCheckpoint.objects.order_by("sequence").values_list("sequence", flat=True))[:2] == [5, 7]
    report = verify_chain()
    assert report["ok"] and report["first_sequence"] == 6, report
    purge = AuditEvent.objects.get(event_type="audit.purge")
    assert purge.details["through_sequence"] == 5 and purge.details["archive_sha256"] == result.archive_sha256
    keys = load_public_keys([public_pem(get_signer()).encode()])
    with open(result.archive, encoding="utf-8") as fh:
        archived = verify_export(fh, keys)
    assert archived["ok"] and (archived["first_sequence"], archived["last_sequence"]) == (1, 5)
    assert result.archive.stat().st_mode & 0o777 == 0o600

    assert purge_expired() is None  # nothing older left


def test_the_archive_is_owner_only_whatever_the_umask():
    with time_machine.travel(datetime(2015, 3, 1, tzinfo=UTC)):
        fill(3)
    fill(1)
    old = os.umask(0)
    try:
        result = purge_expired()
    finally:
        os.umask(old)

    assert result.archive.stat().st_mode & 0o777 == 0o600


def test_only_whole_ranges_up_to_a_checkpoint(settings):
    with time_machine.travel(datetime(2015, 3, 1, tzinfo=UTC)):
        fill(3)
        fill(2, checkpoint=False)  # old, but after the last old checkpoint
    fill(1)  # the checkpoint covering 4..6 is young

    result = purge_expired()

    assert result.through_sequence == 3
    assert AuditEvent.objects.filter(sequence__in=[4, 5]).count() == 2
    assert verify_chain()["ok"]


def test_nothing_old_nothing_purged():
    fill(3)

    assert purge_expired() is None
    assert AuditEvent.objects.count() == 3


def test_database_refuses_a_purge_of_young_events():
    fill(3)

    with pytest.raises(DatabaseError, match="younger than 2192 days"), transaction.atomic(), connection.cursor() as c:
        c.execute("SELECT sovereign_audit_purge(3, now())")
    assert AuditEvent.objects.count() == 3


def test_a_short_retention_setting_never_goes_below_the_purge_floor(settings):
    """SOVEREIGN_AUDIT_RETENTION_DAYS=183 with no profile: a year-old range stays, because the floor
    (six years from the migration, raised by every attached profile) is longer; the owner lowering
    the floor is what lets it go."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.audit.models import AuditPurgeFloor

    settings.AUDIT_RETENTION_DAYS, settings.AUDIT_RETENTION_HOOKS = 183, []
    with time_machine.travel(timezone.now() - timedelta(days=365)):
        fill(3)
    fill(1)

    assert purge_expired() is None
    assert AuditEvent.objects.count() == 4

    AuditPurgeFloor.objects.update(days=183)  # the owner's act (the test connects as the owner)
    assert purge_expired().through_sequence == 3
