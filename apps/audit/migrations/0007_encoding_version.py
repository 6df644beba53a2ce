"""Each audit event records the encoding version its hash was computed with.

Every event written before this migration was hashed with today's field list, which is encoding 1
(apps/audit/offline_verify.py, ENCODING_V1): the column is added with the literal default 1, so
existing rows become version 1 without an UPDATE (PostgreSQL adds a column with a constant default
without rewriting rows, and the append-only trigger fires on no row). When a later version becomes
current, its migration changes only the column's default; rows keep the version they were hashed with.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_request_id_index")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="encoding_version",
            field=models.PositiveSmallIntegerField(
                db_default=1,
                default=1,
                help_text="Encoding version of the hashed record (docs/audit.md, 'Event encoding versions')",
            ),
        ),
    ]
