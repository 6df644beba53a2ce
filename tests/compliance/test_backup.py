"""Backup and disaster recovery checks against the real thing: WAL archiving read from
pg_stat_archiver (of the shared cluster, where it is off, and of a server this test starts with
archiving on), and restore drills with the real pg_dump and pg_restore whose restored copy is
verified by the audit verifier — a tampered copy fails the drill."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from apps.compliance.backup import probe_wal_archiving, run_restore_drill
from apps.compliance.models import RestoreDrill
from apps.compliance.services import record_restore_drill
from tests.audit.chain_helpers import fill
from tests.compliance.conftest import check_of, evaluate
from tests.compliance.own_postgres import OwnPostgres
from tests.waiting import wait_for

HIPAA_CP = "164.308(a)(7)(ii)(A),(B),(D)"
postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="WAL archiving and pg_dump exist only on PostgreSQL"
)


def _check(name: str, control: str = HIPAA_CP, profile: str = "hipaa") -> dict:
    return check_of(evaluate(profile, control)[1], name)


@postgres_only
@pytest.mark.django_db
def test_wal_archiving_off_on_the_shared_cluster_fails():
    with connection.cursor() as cursor:
        cursor.execute("SHOW archive_mode")
        mode = cursor.fetchone()[0]
    check = _check("backup.wal_archiving", "8.1.4.9", "dengbao-l3")
    if mode == "off":  # the shared development cluster: archiving is off and must never be turned on here
        assert check["status"] == "fail"
        assert check["problems"] == ["WAL archiving is off (archive_mode=off)"] and check["archive_mode"] == "off"
    else:
        assert check["archive_mode"] == mode  # what the server says, whatever it is


@pytest.mark.skipif("connection.vendor == 'postgresql'", reason="the SQLite answer")
@pytest.mark.django_db
def test_sqlite_has_no_wal_archiving_and_no_drill():
    check = _check("backup.wal_archiving")
    assert check["status"] == "fail" and "no WAL archiving" in check["summary"]
    drill = run_restore_drill(actor=None)
    assert drill.ok is False and "only a PostgreSQL database" in drill.detail


@pytest.fixture
def own_postgres():
    server = OwnPostgres().start()
    yield server
    server.stop()


def _stats(conn) -> dict:
    row = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
    return {"archived": row[0], "failed": row[1]}


def _switch(conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    conn.execute("SELECT pg_switch_wal()")


def _set_archive_command(conn, command: str) -> None:
    conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
    conn.execute("SELECT pg_reload_conf()")
    wait_for(lambda: conn.execute("SHOW archive_command").fetchone()[0] == command, 30, "the reload")


def _until(conn, key: str, above: int, what: str) -> None:
    """Switch WAL segments until the archiver's counter `key` passes `above` (the archiver picks up
    a reload on its own schedule, so one switch may still go to the previous command)."""

    def moved():
        _switch(conn)
        return _stats(conn)[key] > above

    wait_for(moved, 90, what, interval=0.5)


def test_wal_archiving_probe_on_a_server_with_archiving(own_postgres):
    """archive_mode=on on a server of the test's own: never archived -> fail; a working
    archive_command and a WAL switch -> pass; 25 h later -> too old; the command failing -> fail;
    fixed -> pass."""
    limit = timedelta(hours=24)
    with own_postgres.connect() as conn:
        facts = probe_wal_archiving(conn, now=timezone.now(), max_age=limit)
        assert facts["archive_mode"] == "on" and facts["archived_count"] == 0
        assert any("no WAL segment has ever been archived" in p for p in facts["problems"]), facts["problems"]

        _set_archive_command(conn, own_postgres.copy_command)
        _until(conn, "archived", 0, "the archiver to copy a WAL segment")
        facts = probe_wal_archiving(conn, now=timezone.now(), max_age=limit)
        assert facts["problems"] == [], facts["problems"]
        assert str(own_postgres.archive) in facts["archive_command"]
        assert facts["last_archived_wal"] in {p.name for p in own_postgres.archive.iterdir()}

        later = probe_wal_archiving(conn, now=timezone.now() + timedelta(hours=25), max_age=limit)
        assert any("archived 25.0 h ago (limit 24 h)" in p for p in later["problems"]), later["problems"]

        _set_archive_command(conn, "false")
        _until(conn, "failed", _stats(conn)["failed"], "the archiver to fail")
        facts = probe_wal_archiving(conn, now=timezone.now(), max_age=limit)
        assert any(p.startswith("archiving is failing") for p in facts["problems"]), facts["problems"]

        _set_archive_command(conn, own_postgres.copy_command)
        _until(conn, "archived", _stats(conn)["archived"], "the archiver to catch up")
        assert probe_wal_archiving(conn, now=timezone.now(), max_age=limit)["problems"] == []


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_restore_drill_good_copy_passes_tampered_copy_fails():
    assert _check("backup.restore_drill")["summary"] == "no restore drill has been recorded"
    fill(4)
    fill(2)

    drill = run_restore_drill(actor=None)
    assert drill.ok, drill.detail
    assert drill.events_verified >= 6 and drill.last_sequence >= 6 and drill.dump_bytes > 0
    assert "pg_dump (PostgreSQL)" in drill.tool and len(drill.dump_sha256) == 64
    check = _check("backup.restore_drill")
    assert check["status"] == "pass" and check["last_drill"]["id"] == drill.pk
    assert _scratch_databases(drill) == []  # the copy is dropped

    def tamper(alias):  # an altered backup: one audited row changed in the restored copy
        with connections[alias].cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
            cursor.execute("UPDATE audit_auditevent SET actor_name = 'mallory' WHERE sequence = 2")

    bad = run_restore_drill(actor=None, after_restore=tamper)
    assert bad.ok is False and "does not verify" in bad.detail and "sequence 2" in bad.detail
    check = _check("backup.restore_drill")
    assert check["status"] == "fail" and "failed" in check["summary"]
    assert _scratch_databases(bad) == []
    from apps.audit.models import AuditEvent

    recorded = AuditEvent.objects.filter(event_type="compliance.restore_drill").order_by("id")
    assert [e.outcome for e in recorded] == ["success", "failure"]

    assert run_restore_drill(actor=None).ok  # the live log was never touched
    assert _check("backup.restore_drill")["status"] == "pass"


def _scratch_databases(drill) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname = %s", [drill.scratch_database])
        return [r[0] for r in cursor.fetchall()]


@pytest.mark.django_db
def test_an_old_drill_no_longer_counts(settings):
    now = timezone.now()
    record_restore_drill(
        outcome={
            "started_at": now - timedelta(days=100),
            "finished_at": now - timedelta(days=100),
            "ok": True,
            "events_verified": 3,
            "last_sequence": 3,
            "source_database": "x",
            "detail": "ok",
        },
        actor=None,
    )
    check = _check("backup.restore_drill")
    assert check["status"] == "fail" and "100 days old (limit 90)" in check["summary"]
    settings.RESTORE_DRILL_MAX_AGE_DAYS = 120
    assert _check("backup.restore_drill")["status"] == "pass"
    assert RestoreDrill.objects.count() == 1
