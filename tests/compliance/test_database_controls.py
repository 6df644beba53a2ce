"""audit.append_only and audit.retention ask PostgreSQL itself: who the application role is, what
it owns and holds on the audit tables, whether the triggers fire, and the purge floor the
database function enforces. Each test turns the control off on the real test database and back on."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.audit.dbguard import role_setup_sql
from apps.audit.models import AuditEvent, AuditPurgeFloor
from apps.audit.retention import purge_floor_days
from apps.compliance.services import attach_profile
from tests.compliance.conftest import check_of, evaluate

pytestmark = pytest.mark.django_db
postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="the append-only guarantee exists only on PostgreSQL"
)


def _append_only():
    status, evidence, _ = evaluate("hipaa", "164.316(b)(2)(i)")
    return check_of(evidence, "audit.append_only")


def _tables_and_sequences():
    tables = sorted(connection.introspection.table_names(include_views=False))
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace")
        return tables, [r[0] for r in cursor.fetchall()]


@pytest.fixture
def app_role():
    """The documented owner/application split (manage.py db_roles --print-sql), applied inside the
    test's transaction (roles, ownership and grants roll back with it), then SET ROLE to the
    application role. Yields a function that runs SQL as the superuser and returns to the role."""
    suffix = secrets.token_hex(4)
    owner, app = f"sov_test_owner_{suffix}", f"sov_test_app_{suffix}"
    with connection.cursor() as cursor:
        cursor.execute(role_setup_sql(owner, app, *_tables_and_sequences()))
        cursor.execute(f"SET ROLE {app}")

    def as_superuser(sql):
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
            cursor.execute(sql)
            cursor.execute(f"SET ROLE {app}")

    as_superuser.app, as_superuser.owner = app, owner
    yield as_superuser
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


@postgres_only
def test_superuser_connection_fails_with_the_reason():
    check = _append_only()
    assert check["status"] == "fail"
    assert check["superuser"] is True and check["role"] == "postgres"
    assert any("superuser" in p for p in check["problems"])
    assert any("owns audit_auditevent" in p for p in check["problems"])
    assert check["tables"]["audit_auditevent"]["owner"] == "postgres"


@postgres_only
def test_separate_app_role_passes_and_truncate_fails(app_role):
    check = _append_only()
    assert check["status"] == "pass", check["problems"]
    assert check["role"] == app_role.app and check["superuser"] is False
    event_table = check["tables"]["audit_auditevent"]
    assert event_table["owner"] == app_role.owner and event_table["role_is_owner_or_member"] is False
    assert event_table["privileges"] == ["SELECT", "INSERT"]
    assert event_table["updatable_columns"] == ["sequence", "prev_hash", "hash"]

    app_role(f"GRANT TRUNCATE ON audit_auditevent TO {app_role.app}")
    check = _append_only()
    assert check["status"] == "fail"
    assert f"the application role {app_role.app} holds TRUNCATE on audit_auditevent" in check["problems"]

    app_role(f"REVOKE TRUNCATE ON audit_auditevent FROM {app_role.app}")
    assert _append_only()["status"] == "pass"

    app_role(f"GRANT {app_role.owner} TO {app_role.app}")  # member of the owner: may ALTER and disable
    check = _append_only()
    assert check["status"] == "fail"
    assert any(f"owns audit_auditcheckpoint (owner {app_role.owner})" in p for p in check["problems"])
    app_role(f"REVOKE {app_role.owner} FROM {app_role.app}")

    app_role(f"GRANT UPDATE (actor_name) ON audit_auditevent TO {app_role.app}")
    assert "columns actor_name" in " ".join(_append_only()["problems"])
    app_role(f"REVOKE UPDATE (actor_name) ON audit_auditevent FROM {app_role.app}")

    app_role("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_guard")
    check = _append_only()
    assert check["status"] == "fail"
    assert "the trigger audit_event_guard on audit_auditevent is disabled (tgenabled=D)" in check["problems"]
    app_role("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_guard")
    assert _append_only()["status"] == "pass"


@postgres_only
def test_app_role_raises_the_floor_but_cannot_lower_it(app_role):
    from apps.audit.services import raise_purge_floor

    assert raise_purge_floor(3000, actor=None) == 3000
    assert AuditEvent.objects.filter(event_type="audit.purge_floor.raise").exists()
    with pytest.raises(DatabaseError, match="can only be raised"), transaction.atomic():
        AuditPurgeFloor.objects.update(days=183)
    assert purge_floor_days() == 3000


@postgres_only
def test_the_documented_grants_suffice_for_the_audit_log_and_nothing_more(app_role):
    """As the application role: record, seal and checkpoint work; DELETE, TRUNCATE, disabling the
    trigger and session_replication_role are refused by PostgreSQL."""
    from tests.audit.chain_helpers import fill

    fill(3)
    assert AuditEvent.objects.filter(sequence__isnull=False).count() >= 3
    for statement in (
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
        "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_guard",
        "SET session_replication_role = replica",
        "UPDATE audit_auditevent SET actor_name = 'x'",
    ):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEvent.objects.filter(sequence__isnull=False).count() >= 3


@pytest.mark.skipif("connection.vendor == 'postgresql'", reason="the SQLite answer")
def test_sqlite_is_an_honest_failure():
    check = _append_only()
    assert check["status"] == "fail"
    assert "only PostgreSQL can enforce append-only" in check["summary"]


@postgres_only
def test_purge_floor_off_fails_and_attaching_hipaa_raises_it(settings):
    """The owner lowers the floor to 等保's six months: with HIPAA attached, the check fails and the
    database function purges what HIPAA keeps no more; attaching raises it again."""
    settings.AUDIT_RETENTION_DAYS = 183
    AuditPurgeFloor.objects.update(days=183)  # as the owner (the test connects as superuser)
    attach_profile(profile="dengbao-l3", actor=None)
    status, evidence, remedy = evaluate("hipaa", "164.316(b)(2)(i)")
    check = check_of(evidence, "audit.retention")
    assert check["status"] == "fail"
    assert check["purge_floor_days"] == 183 and check["required_days"] == 2192
    assert "purge floor is 183 days" in check["summary"] and "audit_purge_floor --raise-to 2192" in remedy

    # the database function itself refuses a cutoff younger than the floor
    refused = pytest.raises(DatabaseError, match="younger than 183 days")
    with connection.cursor() as cursor, refused, transaction.atomic():
        cursor.execute("SELECT sovereign_audit_purge(1, %s)", [timezone.now() - timedelta(days=100)])

    attach_profile(profile="hipaa", actor=None)
    assert purge_floor_days() == 2192
    settings.AUDIT_RETENTION_DAYS = 2192
    status, evidence, _ = evaluate("hipaa", "164.316(b)(2)(i)")
    assert check_of(evidence, "audit.retention")["status"] == "pass"
    refused = pytest.raises(DatabaseError, match="younger than 2192 days")
    with connection.cursor() as cursor, refused, transaction.atomic():
        cursor.execute("SELECT sovereign_audit_purge(1, %s)", [timezone.now() - timedelta(days=2000)])


def test_retention_check_compares_with_every_attached_profile(settings):
    """A 等保 evaluation fails while HIPAA is attached beside it and the floor is 等保's; raising the
    floor (manage.py audit_purge_floor, audited) passes it."""
    from apps.compliance.models import ProfileAttachment

    settings.AUDIT_RETENTION_DAYS = 2192

    def retention() -> str:
        return check_of(evaluate("dengbao-l3", "8.1.5.4")[1], "audit.retention")["status"]

    AuditPurgeFloor.objects.update(days=183)
    attach_profile(profile="dengbao-l3", actor=None)
    assert retention() == "pass"  # 8.1.5.4's other check (central collection) is not the subject here

    ProfileAttachment.objects.create(profile="hipaa")  # attached before the floor existed
    _, evidence, _ = evaluate("dengbao-l3", "8.1.5.4")
    check = check_of(evidence, "audit.retention")
    assert check["status"] == "fail" and check["attached_profiles_days"] == {"dengbao-l3": 183, "hipaa": 2192}

    call_command("audit_purge_floor", "--raise-to", "2192")
    assert retention() == "pass"
    assert AuditEvent.objects.filter(event_type="audit.purge_floor.raise").exists()
