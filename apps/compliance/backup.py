"""Backup and recovery, as the system can see it (HIPAA 164.308(a)(7)(ii)(A,B,D), 等保 8.1.4.9).

`probe_wal_archiving` asks a PostgreSQL server whether continuous archiving works (archive_mode,
archive_command, pg_stat_archiver); it takes any DB-API connection so it can be pointed at the
portal's database or at a server a test starts itself.

`run_restore_drill` proves that a backup can be restored and is intact: pg_dump of the live
database, pg_restore into a scratch database, the audit chain verified on the restored copy with
the portal's own verifier (`apps.audit.selectors.verify_chain`), the scratch database dropped,
the outcome recorded by an audited service. Nothing of the dump is kept: it lives in a 0700
temporary directory that is removed with it.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.utils import timezone

from apps.audit.services import SYSTEM, Source

TOOL_TIMEOUT = 3600  # seconds for one pg_dump or pg_restore


# --- WAL archiving ------------------------------------------------------------------------------


def probe_wal_archiving(conn, *, now: datetime, max_age: timedelta) -> dict:
    """archive_mode, archive_command / archive_library and pg_stat_archiver of the server behind
    `conn` (a DB-API connection), and one sentence per problem: archiving off, no command, never
    archived, last archive older than `max_age`, failures since the last success."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode', 'archive_command', 'archive_library')"
        )
        gucs = dict(cursor.fetchall())
        cursor.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, "
            "last_failed_time, stats_reset FROM pg_stat_archiver"
        )
        row = cursor.fetchone()
    keys = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count", "last_failed_wal")
    stats = dict(zip((*keys, "last_failed_time", "stats_reset"), row, strict=True))
    facts = {
        "archive_mode": gucs.get("archive_mode"),
        "archive_command": gucs.get("archive_command"),
        "archive_library": gucs.get("archive_library") or "",
        **{k: _iso(v) for k, v in stats.items()},
        "max_age_hours": max_age.total_seconds() / 3600,
        "probed_at": now.isoformat(),
    }
    facts["problems"] = _archiving_problems(facts, stats, now, max_age)
    return facts


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _archiving_problems(facts: dict, stats: dict, now: datetime, max_age: timedelta) -> list[str]:
    if facts["archive_mode"] not in ("on", "always"):
        return [f"WAL archiving is off (archive_mode={facts['archive_mode']})"]
    out = []
    command = (facts["archive_command"] or "").strip()
    if not facts["archive_library"] and command in ("", "(disabled)"):
        out.append("archive_mode is on but no archive_command or archive_library is set")
    last, failed = stats["last_archived_time"], stats["last_failed_time"]
    if last is None:
        out.append("no WAL segment has ever been archived (pg_stat_archiver.last_archived_time is empty)")
    elif now - last > max_age:
        hours = (now - last).total_seconds() / 3600
        out.append(f"the last WAL segment was archived {hours:.1f} h ago (limit {facts['max_age_hours']:g} h)")
    if failed is not None and (last is None or failed > last):
        out.append(
            f"archiving is failing: {stats['failed_count']} failure(s), the last at {failed.isoformat()} "
            f"({stats['last_failed_wal']}) after the last success"
        )
    return out


# --- Restore drill ------------------------------------------------------------------------------


class DrillError(RuntimeError):
    """A step of the drill failed; the message says which and why (no secret in it)."""


def tool(name: str) -> str:
    """The path of a PostgreSQL client program (SOVEREIGN_PG_BIN_DIR, else PATH)."""
    path = shutil.which(name, path=settings.PG_BIN_DIR or None)
    if path is None:
        raise DrillError(f"{name} not found (install postgresql-client or set SOVEREIGN_PG_BIN_DIR)")
    return path


def _client_env(db: dict) -> dict:
    """libpq environment for the client programs: the password travels in the environment of the
    child process, never on its command line."""
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if db.get(key):
            env[var] = str(db[key])
    return env


def _run(args: list[str], env: dict, step: str) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)  # noqa: S603
    if result.returncode != 0:
        raise DrillError(f"{step} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


def _admin(db: dict, sql: str) -> None:
    """CREATE / DROP DATABASE: outside any transaction, on the server's maintenance database."""
    import psycopg

    params = {"dbname": "postgres", "autocommit": True, "connect_timeout": 10}
    for key, name in (("HOST", "host"), ("PORT", "port"), ("USER", "user"), ("PASSWORD", "password")):
        if db.get(key):
            params[name] = db[key]
    with psycopg.connect(**params) as conn:
        conn.execute(sql)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _open_alias(db: dict, scratch: str) -> str:
    """A connection to the restored copy under an alias of its own. It is created from the default
    database's settings and then taken out of the configured set again, so that nothing else (a
    router, a `migrate --database`, Django's test isolation) ever sees it as one of the portal's
    databases; `.using(alias)` reaches it through the handler's cache."""
    alias = f"restore_drill_{scratch[-8:]}"
    connections.databases[alias] = {**db, "NAME": scratch, "TEST": {**db.get("TEST", {}), "NAME": scratch}}
    try:
        connections[alias]  # noqa: B018 - create and cache the wrapper
    finally:
        del connections.databases[alias]
    return alias


def _close_alias(alias: str) -> None:
    connections[alias].close()
    del connections[alias]


def _live_last_sequence() -> int | None:
    from apps.audit.models import AuditEvent

    return (
        AuditEvent.objects.filter(sequence__isnull=False)
        .order_by("-sequence")
        .values_list("sequence", flat=True)
        .first()
    )


def drill(*, after_restore: Callable[[str], None] | None = None) -> dict:
    """Dump, restore, verify, drop. Returns the outcome fields of RestoreDrill (ok False with the
    reason when any step fails); the scratch database is dropped whatever happens.
    `after_restore(alias)` runs on the restored copy before verification (tests use it to tamper)."""
    db = connections["default"].settings_dict
    out = {"started_at": timezone.now(), "source_database": str(db.get("NAME", "")), "ok": False}
    if connections["default"].vendor != "postgresql":
        out["detail"] = "only a PostgreSQL database can be dumped and restored by the drill (this one is not)"
        return {**out, "finished_at": timezone.now()}
    scratch = f"{out['source_database'][:40]}_drill_{secrets.token_hex(4)}"
    out["scratch_database"] = scratch
    alias, env = None, _client_env(db)
    try:
        with tempfile.TemporaryDirectory(prefix="sovereign-drill-") as tmp:  # mode 0700
            dump = Path(tmp) / "database.dump"
            live_last = _live_last_sequence()
            out["tool"] = _run([tool("pg_dump"), "--version"], env, "pg_dump --version").strip()
            _run([tool("pg_dump"), "--format=custom", "--file", str(dump), out["source_database"]], env, "pg_dump")
            out["dump_bytes"] = dump.stat().st_size
            out["dump_sha256"] = _sha256(dump)
            _admin(db, f"CREATE DATABASE {_quoted(scratch)}")
            restore = [tool("pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges", "--dbname", scratch]
            _run([*restore, str(dump)], env, "pg_restore")
        alias = _open_alias(db, scratch)
        if after_restore is not None:
            after_restore(alias)
        out.update(_verify_copy(alias, live_last))
    except (DrillError, subprocess.TimeoutExpired, OSError) as exc:
        out["detail"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a database error in the copy is the drill's finding
        out["detail"] = f"{type(exc).__name__}: {exc}"
    finally:
        if alias:
            _close_alias(alias)
        _drop(db, scratch, out)
    out["finished_at"] = timezone.now()
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_copy(alias: str, live_last: int | None) -> dict:
    from apps.audit.selectors import verify_chain

    report = verify_chain(using=alias)
    found = {"events_verified": report.get("events_checked") or 0, "last_sequence": report.get("last_sequence")}
    if not report["ok"]:
        return {**found, "ok": False, "detail": f"the restored audit chain does not verify: {report['detail']}"}
    if live_last is not None and (found["last_sequence"] or 0) < live_last:
        detail = f"the restored copy ends at sequence {found['last_sequence']}, the live log was at {live_last}"
        return {**found, "ok": False, "detail": detail}
    if not found["events_verified"]:
        return {**found, "ok": False, "detail": "the restored copy holds no sealed audit event: nothing was verified"}
    return {**found, "ok": True, "detail": f"restored copy: {report['detail']}"}


def _drop(db: dict, scratch: str, out: dict) -> None:
    try:
        _admin(db, f"DROP DATABASE IF EXISTS {_quoted(scratch)} WITH (FORCE)")
    except Exception as exc:  # noqa: BLE001 - reported, and the drill does not count as a success
        out["ok"] = False
        out["detail"] = f"{out.get('detail', '')}; the scratch database {scratch} could not be dropped: {exc}".lstrip(
            "; "
        )


def run_restore_drill(*, actor, source: Source = SYSTEM, after_restore=None):
    """Run a drill and record it (apps.compliance.services.record_restore_drill, audited)."""
    from .services import record_restore_drill

    return record_restore_drill(outcome=drill(after_restore=after_restore), actor=actor, source=source)
