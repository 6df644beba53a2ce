# After 0005 every artifact references its keys.DataKey: the artifact's own copies of the suite,
# KEK id, wrapped key and shredding time go, and the reference becomes required.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0005_move_data_keys"),
    ]

    operations = [
        # Defaults first, so that migrating back re-adds the columns to existing rows (0005's reverse
        # then fills them in).
        migrations.AlterField(model_name="artifact", name="suite", field=models.CharField(max_length=32, default="")),
        migrations.AlterField(model_name="artifact", name="kek_id", field=models.CharField(max_length=128, default="")),
        migrations.AlterField(model_name="artifact", name="wrapped_dek", field=models.BinaryField(default=b"")),
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
