"""Platform events: audit events that belong to no governed object.

- `platform.process.restart` / `.giveup`: `make run`'s supervisor (deploy/run_local.py) restarted a
  process, or gave up on one (through `manage.py record_process_event`).
- `config.insecure_override`: production runs with weaknesses SOVEREIGN_INSECURE_OVERRIDE allows
  (apps/core/production.py decides which; this module records them, docs/production.md).
"""

from __future__ import annotations

import logging
import signal

from django.db import DEFAULT_DB_ALIAS, transaction

from apps.core.production import EVENT, OVERRIDE_VAR, in_effect, is_production, parse_override

from .models import AuditEvent, Outcome
from .selectors import latest_event
from .services import record_event

log = logging.getLogger(__name__)

_LOCK_KEY = 0x534F5645  # pg_advisory_xact_lock key: processes starting together record the change once


# --- Processes supervised by `make run` ------------------------------------------------------------


def _exit_details(exit_code: int) -> dict:
    details: dict = {"exit_code": exit_code}
    if exit_code < 0:  # killed by a signal (subprocess reports -SIGNUM)
        try:
            details["signal"] = signal.Signals(-exit_code).name
        except ValueError:
            details["signal"] = str(-exit_code)
    return details


def record_process_restart(*, process: str, exit_code: int, attempt: int, delay: float, pid: int | None):
    """A supervised process (triton, worker, web) exited and the launcher started it again."""
    details = {"process": process, **_exit_details(exit_code), "attempt": attempt, "backoff_seconds": delay}
    if pid is not None:
        details["pid"] = pid
    with transaction.atomic():
        return record_event(
            "platform.process.restart",
            actor=None,
            target_type="process",
            target_id=process,
            target_display=process,
            details=details,
        )


def record_process_giveup(*, process: str, exit_code: int, failures: int, window: float):
    """The launcher stopped restarting a process that kept failing, and stopped everything."""
    details = {"process": process, **_exit_details(exit_code), "failures": failures, "window_seconds": window}
    with transaction.atomic():
        return record_event(
            "platform.process.giveup",
            actor=None,
            target_type="process",
            target_id=process,
            target_display=process,
            outcome=Outcome.FAILURE,
            error_code="process_failing",
            details=details,
        )


# --- The insecure-settings override ------------------------------------------------------------------
# A system check and ready() run before the database may exist (migrate on a fresh database, the
# docker build's collectstatic) and must not write. The first database connection of each process
# is the earliest moment a write can succeed, and every process that serves anything makes one;
# post_migrate covers a fresh database whose audit table did not exist at that first connection.

_audited = False


def last_override_event():
    """The latest `config.insecure_override` event (id, timestamp, details), or None."""
    return latest_event(EVENT)


def audit_override(using: str = DEFAULT_DB_ALIAS):
    """Record `config.insecure_override` when the overrides in effect differ from the last
    recorded ones (an override set, changed or withdrawn); returns the event or None."""
    from django.conf import settings
    from django.db import connections

    current = sorted(in_effect(settings))
    with transaction.atomic(using=using):
        if connections[using].vendor == "postgresql":
            with connections[using].cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        last = last_override_event()
        previous = sorted((last["details"] or {}).get("in_effect", [])) if last else []
        if current == previous:
            return None
        allowed, _ = parse_override(settings)
        return record_event(
            EVENT,
            actor=None,
            details={
                "in_effect": current,
                "previous": previous,
                OVERRIDE_VAR: sorted(allowed),
                "problems": in_effect(settings),
            },
        )


def _audit_table_exists(connection) -> bool:
    return AuditEvent._meta.db_table in connection.introspection.table_names()


def on_connection_created(sender, connection, **kwargs) -> None:
    """connection_created receiver: once per process, in production, audit the override."""
    global _audited
    from django.conf import settings

    if _audited or connection.alias != DEFAULT_DB_ALIAS or not is_production(settings):
        return
    try:
        if not _audit_table_exists(connection):
            return  # before the first migrate: post_migrate records it
        _audited = True
        audit_override(connection.alias)
    except Exception:  # noqa: BLE001 - inside connect(): a failure here must not break the caller's query
        _audited = False
        log.exception("could not record %s; the next connection tries again", EVENT)


def on_post_migrate(sender, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate receiver: after `migrate` (sent once per app; the audit app's is the one used)."""
    global _audited
    from django.conf import settings

    if sender.label == "audit" and is_production(settings) and using == DEFAULT_DB_ALIAS:
        audit_override(using)
        _audited = True
