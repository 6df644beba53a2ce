"""The purge floor becomes data the profiles raise: was a constant 183 days (等保's six months)
in sovereign_audit_purge() while a HIPAA installation keeps six years.

`audit_auditpurgefloor` holds one row (2192 days to start with: HIPAA's six years, also the
default SOVEREIGN_AUDIT_RETENTION_DAYS). The purge function refuses a cutoff younger than the
largest value there (2192 days when it is empty, never below 183 days); a trigger refuses a DELETE, and an UPDATE that
lowers the floor, unless the current user is a member of the table's owner — so the application
role can raise it when a profile is attached but only the owner role can lower it.
"""

from django.db import migrations, models

INITIAL_FLOOR_DAYS = 2192

FLOOR = """
CREATE OR REPLACE FUNCTION sovereign_audit_floor_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'the audit purge floor cannot be deleted' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.days < OLD.days THEN
        RAISE EXCEPTION 'the audit purge floor can only be raised (% -> % days); the owner role lowers it',
            OLD.days, NEW.days USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS audit_purge_floor_guard ON audit_auditpurgefloor;

CREATE TRIGGER audit_purge_floor_guard BEFORE UPDATE OR DELETE ON audit_auditpurgefloor
    FOR EACH ROW EXECUTE FUNCTION sovereign_audit_floor_guard();

CREATE OR REPLACE FUNCTION sovereign_audit_purge(p_through bigint, p_cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    purged bigint;
    floor_days integer;
BEGIN
    -- The longest retention any attached profile requires (audit_auditpurgefloor, raised when a
    -- profile is attached), never less than 等保's six months: an application role calling this
    -- directly cannot go below it.
    SELECT greatest(183, coalesce(max(days), 2192)) INTO floor_days FROM audit_auditpurgefloor;
    IF p_cutoff > now() - make_interval(days => floor_days) THEN
        RAISE EXCEPTION 'refusing to purge audit events younger than % days (the purge floor)', floor_days
            USING ERRCODE = 'check_violation';
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

UNFLOOR = """
DROP TRIGGER IF EXISTS audit_purge_floor_guard ON audit_auditpurgefloor;

DROP FUNCTION IF EXISTS sovereign_audit_floor_guard();

CREATE OR REPLACE FUNCTION sovereign_audit_purge(p_through bigint, p_cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    purged bigint;
BEGIN
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


def _initial_floor(apps, schema_editor):
    apps.get_model("audit", "AuditPurgeFloor").objects.using(schema_editor.connection.alias).get_or_create(
        pk=1, defaults={"days": INITIAL_FLOOR_DAYS}
    )


class Migration(migrations.Migration):
    dependencies = [("audit", "0009_audit_shipment")]

    operations = [
        migrations.CreateModel(
            name="AuditPurgeFloor",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("days", models.PositiveIntegerField(help_text="Events younger than this many days are never purged")),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.RunPython(_initial_floor, migrations.RunPython.noop),
        migrations.RunPython(_run(FLOOR), _run(UNFLOOR)),
    ]
