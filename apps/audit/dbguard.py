"""What PostgreSQL says about the append-only guarantee, and the SQL that sets it up.

The trigger of migration 0004 refuses UPDATE and DELETE on audit rows, but only against a role
that cannot switch it off. `probe_append_only` asks the server, as the connection's own role
(`current_user`), everything that would let it get around the trigger: superuser, BYPASSRLS,
membership in the owner of an audit table or of a guard function (an owner may ALTER TABLE ...
DISABLE TRIGGER, DROP the trigger or CREATE OR REPLACE the function), TRUNCATE / DELETE / UPDATE /
TRIGGER on the tables, the right to set `session_replication_role`, and whether both triggers are
enabled. `role_setup_sql` prints the grants that make the answer clean (docs/audit.md).
"""

from __future__ import annotations

AUDIT_TABLES = ("audit_auditevent", "audit_auditcheckpoint", "audit_auditpurgefloor")
TRIGGERS = {
    "audit_event_guard": "audit_auditevent",
    "audit_checkpoint_guard": "audit_auditcheckpoint",
    "audit_purge_floor_guard": "audit_auditpurgefloor",
}
GUARD_FUNCTIONS = ("sovereign_audit_guard", "sovereign_audit_purge", "sovereign_audit_floor_guard")
# The sealer fills these once (the trigger checks that it changes nothing else); the purge floor
# may be raised (the trigger refuses lowering it). Any other UPDATE is a problem.
ALLOWED_UPDATE_COLUMNS = {
    "audit_auditevent": ("sequence", "prev_hash", "hash"),
    "audit_auditpurgefloor": ("days", "updated_at"),
}
FORBIDDEN_TABLE_PRIVILEGES = ("TRUNCATE", "DELETE", "TRIGGER")


def probe_append_only(connection) -> dict:
    """The facts as PostgreSQL reports them for `current_user`, and one sentence per problem.
    Read-only: catalogue queries and has_*_privilege functions."""
    with connection.cursor() as cursor:
        facts = _role(cursor)
        facts["tables"] = {table: _table(cursor, table) for table in AUDIT_TABLES}
        facts["functions"] = {name: _function(cursor, name) for name in GUARD_FUNCTIONS}
        facts["triggers"] = _triggers(cursor)
        facts["session_replication_role_settable"] = _can_set_replication_role(cursor, facts)
    facts["problems"] = problems_of(facts)
    return facts


def _role(cursor) -> dict:
    cursor.execute(
        "SELECT current_user, session_user, rolsuper, rolbypassrls, rolcreaterole, rolreplication "
        "FROM pg_roles WHERE rolname = current_user"
    )
    user, session, superuser, bypassrls, createrole, replication = cursor.fetchone()
    return {
        "role": user,
        "session_user": session,
        "superuser": superuser,
        "bypassrls": bypassrls,
        "createrole": createrole,
        "replication": replication,
    }


def _table(cursor, table: str) -> dict:
    cursor.execute(
        "SELECT pg_get_userbyid(c.relowner), pg_has_role(current_user, c.relowner, 'MEMBER') "
        "FROM pg_class c WHERE c.oid = to_regclass(%s)",
        [table],
    )
    row = cursor.fetchone()
    if row is None:
        return {"exists": False}
    owner, member_of_owner = row
    privileges = []
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"):
        cursor.execute("SELECT has_table_privilege(current_user, %s, %s)", [table, privilege])
        if cursor.fetchone()[0]:
            privileges.append(privilege)
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped "
        "AND has_column_privilege(current_user, attrelid, attnum, 'UPDATE') ORDER BY attnum",
        [table],
    )
    return {
        "exists": True,
        "owner": owner,
        "role_is_owner_or_member": member_of_owner,
        "privileges": privileges,
        "updatable_columns": [r[0] for r in cursor.fetchall()],
    }


def _function(cursor, name: str) -> dict:
    cursor.execute(
        "SELECT pg_get_userbyid(p.proowner), pg_has_role(current_user, p.proowner, 'MEMBER') "
        "FROM pg_proc p WHERE p.proname = %s ORDER BY p.oid LIMIT 1",
        [name],
    )
    row = cursor.fetchone()
    if row is None:
        return {"exists": False}
    return {"exists": True, "owner": row[0], "role_is_owner_or_member": row[1]}


def _triggers(cursor) -> dict:
    cursor.execute(
        "SELECT t.tgname, c.relname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND t.tgname = ANY(%s)",
        [list(TRIGGERS)],
    )
    found = {name: {"table": table, "enabled": enabled} for name, table, enabled in cursor.fetchall()}
    # 'O' fires in the normal (origin) mode, 'A' always; 'D' is disabled and 'R' fires only for
    # replication sessions, i.e. never for the application.
    return {
        name: {
            "present": name in found and found[name]["table"] == table,
            "enabled": name in found and found[name]["table"] == table and found[name]["enabled"] in ("O", "A"),
            "tgenabled": found.get(name, {}).get("enabled"),
        }
        for name, table in TRIGGERS.items()
    }


def _can_set_replication_role(cursor, facts: dict) -> bool:
    if facts["superuser"]:
        return True
    cursor.execute("SELECT to_regproc('pg_catalog.has_parameter_privilege') IS NOT NULL")
    if not cursor.fetchone()[0]:  # before PostgreSQL 15 only a superuser may set it
        return False
    cursor.execute("SELECT has_parameter_privilege(current_user, 'session_replication_role', 'SET')")
    return bool(cursor.fetchone()[0])


def problems_of(facts: dict) -> list[str]:
    """One precise sentence per way the role could change or remove audit rows."""
    role = facts["role"]
    out = []
    if facts["superuser"]:
        out.append(f"the application role {role} is a superuser: it can disable triggers and delete audit rows")
    if facts["bypassrls"]:
        out.append(f"the application role {role} has BYPASSRLS")
    if facts["session_replication_role_settable"] and not facts["superuser"]:
        out.append(f"the application role {role} may SET session_replication_role (replica mode skips the triggers)")
    for table, info in facts["tables"].items():
        out.extend(_table_problems(role, table, info))
    for name, info in facts["functions"].items():
        if not info["exists"]:
            out.append(f"the guard function {name}() is missing")
        elif info["role_is_owner_or_member"]:
            out.append(
                f"the application role {role} owns (or is a member of the owner {info['owner']} of) function "
                f"{name}(): it can replace it"
            )
    for name, info in facts["triggers"].items():
        if not info["present"]:
            out.append(f"the trigger {name} on {TRIGGERS[name]} is missing")
        elif not info["enabled"]:
            out.append(f"the trigger {name} on {TRIGGERS[name]} is disabled (tgenabled={info['tgenabled']})")
    return out


def _table_problems(role: str, table: str, info: dict) -> list[str]:
    if not info["exists"]:
        return [f"the audit table {table} is missing"]
    out = []
    if info["role_is_owner_or_member"]:
        out.append(
            f"the application role {role} owns {table} (owner {info['owner']}): it can ALTER it, "
            "disable or drop the trigger"
        )
    held = [p for p in FORBIDDEN_TABLE_PRIVILEGES if p in info["privileges"]]
    if held:
        out.append(f"the application role {role} holds {', '.join(held)} on {table}")
    extra = sorted(set(info["updatable_columns"]) - set(ALLOWED_UPDATE_COLUMNS.get(table, ())))
    if "UPDATE" in info["privileges"]:
        out.append(f"the application role {role} holds UPDATE on the whole of {table}")
    elif extra:
        out.append(f"the application role {role} may UPDATE columns {', '.join(extra)} of {table}")
    return out


def role_setup_sql(owner: str, app: str, tables: list[str], sequences: list[str]) -> str:
    """SQL, run as a superuser after `manage.py migrate` (as the owner role), that gives the
    application role what the portal needs and nothing that reaches around the audit trigger."""
    audit = set(AUDIT_TABLES)
    other = [t for t in tables if t not in audit]
    lines = [
        f"-- owner: {owner} (runs migrations, owns every table and the guard functions)",
        f"-- application: {app} (DATABASE_URL of the web, data-plane and worker processes)",
        f"DO $$ BEGIN CREATE ROLE {owner} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
        f"DO $$ BEGIN CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
        f"ALTER ROLE {app} NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;",
        f"REVOKE {owner} FROM {app};",
        "-- then: ALTER ROLE " + app + " PASSWORD '...';  (typed by the operator, never stored here)",
        f"GRANT USAGE ON SCHEMA public TO {app};",
    ]
    for table in tables:
        lines.append(f"ALTER TABLE {table} OWNER TO {owner};")
        lines.append(f"REVOKE ALL ON {table} FROM {app};")
    for name, args in (
        ("sovereign_audit_guard", ""),
        ("sovereign_audit_purge", "bigint, timestamptz"),
        ("sovereign_audit_floor_guard", ""),
    ):
        lines.append(f"ALTER FUNCTION {name}({args}) OWNER TO {owner};")
    lines.append("REVOKE ALL ON FUNCTION sovereign_audit_purge(bigint, timestamptz) FROM PUBLIC;")
    lines.append(f"GRANT EXECUTE ON FUNCTION sovereign_audit_purge(bigint, timestamptz) TO {app};")
    if other:
        lines.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(other)} TO {app};")
    lines.append(f"GRANT SELECT, INSERT ON {', '.join(AUDIT_TABLES[:2])} TO {app};")
    cols = ", ".join(ALLOWED_UPDATE_COLUMNS["audit_auditevent"])
    lines.append(f"GRANT UPDATE ({cols}) ON audit_auditevent TO {app};")
    floor_cols = ", ".join(ALLOWED_UPDATE_COLUMNS["audit_auditpurgefloor"])
    lines.append(f"GRANT SELECT, UPDATE ({floor_cols}) ON audit_auditpurgefloor TO {app};")
    for sequence in sequences:  # identity sequences follow their table's owner
        lines.append(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {app};")
    lines.append(f"-- {app}: no DELETE, TRUNCATE, TRIGGER or whole-table UPDATE on audit tables, not an owner.")
    lines.append("-- Check with: manage.py evaluate_compliance (control audit.append_only) as the application role.")
    return "\n".join(lines) + "\n"
