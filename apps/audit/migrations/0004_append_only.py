"""PostgreSQL: audit rows are append-only.

A trigger refuses UPDATE and DELETE on audit events and checkpoints, with two exceptions:
the sealer may fill an event's chain columns (sequence, prev_hash, hash) once, while they are
empty, changing nothing else; and the retention purge function (SECURITY DEFINER, run as its
owner) may delete whole sealed ranges older than retention. docs/audit.md lists the grants an
operator applies so that the application role cannot get around this.
"""

from django.db import migrations

GUARD = """
CREATE OR REPLACE FUNCTION sovereign_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF current_setting('sovereign.audit_purge', true) = 'on' AND current_user = (
            SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'sovereign_audit_purge' LIMIT 1
        ) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit rows cannot be deleted: only the retention purge removes sealed ranges'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Nested IFs: PL/pgSQL does not promise to stop at the first false AND operand, and the
    -- checkpoint table has no `hash` column.
    IF TG_TABLE_NAME = 'audit_auditevent' THEN
        IF OLD.hash = '' AND OLD.sequence IS NULL AND NEW.hash <> '' AND NEW.sequence IS NOT NULL
            AND (to_jsonb(NEW) - 'sequence' - 'prev_hash' - 'hash') = (to_jsonb(OLD) - 'sequence' - 'prev_hash' - 'hash')
        THEN
            RETURN NEW;  -- the sealer filling the chain columns, once
        END IF;
    END IF;
    RAISE EXCEPTION 'audit rows cannot be changed (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS audit_event_guard ON audit_auditevent;

CREATE TRIGGER audit_event_guard BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION sovereign_audit_guard();
DROP TRIGGER IF EXISTS audit_checkpoint_guard ON audit_auditcheckpoint;

CREATE TRIGGER audit_checkpoint_guard BEFORE UPDATE OR DELETE ON audit_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION sovereign_audit_guard();

CREATE OR REPLACE FUNCTION sovereign_audit_purge(p_through bigint, p_cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    purged bigint;
BEGIN
    -- The shortest retention any profile allows (等保: 6 months); the portal asks for its own,
    -- longer, period, but an application role calling this directly cannot go below the floor.
    IF p_cutoff > now() - interval '183 days' THEN
        RAISE EXCEPTION 'refusing to purge audit events younger than 183 days' USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_auditcheckpoint WHERE sequence = p_through) THEN
        RAISE EXCEPTION 'no checkpoint at sequence %: only whole sealed ranges are purged', p_through
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM audit_auditevent WHERE sequence <= p_through AND "timestamp" >= p_cutoff) THEN
        RAISE EXCEPTION 'events up to sequence % are not all older than %', p_through, p_cutoff
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM set_config('sovereign.audit_purge', 'on', true);
    DELETE FROM audit_auditevent WHERE sequence <= p_through;
    GET DIAGNOSTICS purged = ROW_COUNT;
    DELETE FROM audit_auditcheckpoint WHERE sequence < p_through;
    PERFORM set_config('sovereign.audit_purge', 'off', true);
    RETURN purged;
END $$;
"""

UNGUARD = """
DROP TRIGGER IF EXISTS audit_event_guard ON audit_auditevent;

DROP TRIGGER IF EXISTS audit_checkpoint_guard ON audit_auditcheckpoint;

DROP FUNCTION IF EXISTS sovereign_audit_purge(bigint, timestamptz);

DROP FUNCTION IF EXISTS sovereign_audit_guard();
"""


def _statements(sql):
    """Split on the blank lines between statements (function bodies contain semicolons)."""
    return [part.strip() for part in sql.split("\n\n") if part.strip()]


def _run(sql):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        with schema_editor.connection.cursor() as cursor:
            for statement in _statements(sql):
                cursor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_chain")]

    operations = [migrations.RunPython(_run(GUARD), _run(UNGUARD))]
