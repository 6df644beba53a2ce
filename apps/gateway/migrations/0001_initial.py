from django.db import migrations, models


def first_epoch(apps, schema_editor):
    apps.get_model("gateway", "PolicyEpoch").objects.using(schema_editor.connection.alias).get_or_create(id=1)


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="PolicyEpoch",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, editable=False, primary_key=True, serialize=False)),
                ("epoch", models.BigIntegerField(default=0)),
            ],
            options={"verbose_name": "policy epoch"},
        ),
        migrations.RunPython(first_epoch, migrations.RunPython.noop),
    ]
