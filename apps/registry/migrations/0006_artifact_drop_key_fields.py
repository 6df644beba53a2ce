# After 0005 every artifact references its keys.DataKey: the artifact's own copies of the suite,
# KEK id, wrapped key and shredding time go, and the reference becomes required.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0005_move_data_keys"),
    ]

    operations = [
        migrations.RemoveField(model_name="artifact", name="suite"),
        migrations.RemoveField(model_name="artifact", name="kek_id"),
        migrations.RemoveField(model_name="artifact", name="wrapped_dek"),
        migrations.RemoveField(model_name="artifact", name="shredded_at"),
        migrations.AlterField(
            model_name="artifact",
            name="data_key",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT, related_name="+", to="keys.datakey"
            ),
        ),
    ]
