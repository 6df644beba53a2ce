# The artifact's data key moves to apps.keys (keys.DataKey): first the reference, nullable while
# 0005 fills it in, then 0006 drops the artifact's own key fields.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0002_data_keys"),
        ("registry", "0003_artifact_shredded_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="artifact",
            name="data_key",
            field=models.OneToOneField(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="keys.datakey"
            ),
        ),
    ]
