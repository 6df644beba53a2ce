"""Move each artifact's wrapped data key into a keys.DataKey row (purpose "artifact"), keeping its
suite, KEK id, creation time and shredding time; and back again on reverse. Plain ORM updates on
historical models, so it runs the same on PostgreSQL and SQLite."""

from django.db import migrations

BATCH = 500


def _batches(queryset):
    pks = list(queryset.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), BATCH):
        yield queryset.filter(pk__in=pks[start : start + BATCH]).order_by("pk")


def forward(apps, schema_editor):
    db = schema_editor.connection.alias
    Artifact = apps.get_model("registry", "Artifact")
    DataKey = apps.get_model("keys", "DataKey")
    for batch in _batches(Artifact.objects.using(db).filter(data_key__isnull=True)):
        for art in batch:
            wrapped = bytes(art.wrapped_dek or b"")
            destroyed = art.shredded_at
            if destroyed is None and not wrapped:
                destroyed = art.created_at  # emptied before shredding times were recorded
            key = DataKey.objects.using(db).create(
                purpose="artifact",
                suite=art.suite,
                kek_id=art.kek_id,
                wrapped=b"" if destroyed is not None else wrapped,
                created_at=art.created_at,
                destroyed_at=destroyed,
            )
            Artifact.objects.using(db).filter(pk=art.pk).update(data_key=key)


def backward(apps, schema_editor):
    db = schema_editor.connection.alias
    Artifact = apps.get_model("registry", "Artifact")
    DataKey = apps.get_model("keys", "DataKey")
    for batch in _batches(Artifact.objects.using(db).filter(data_key__isnull=False)):
        for art in batch.select_related("data_key"):
            key = art.data_key
            Artifact.objects.using(db).filter(pk=art.pk).update(
                suite=key.suite,
                kek_id=key.kek_id,
                wrapped_dek=bytes(key.wrapped),
                shredded_at=key.destroyed_at,
                data_key=None,
            )
            DataKey.objects.using(db).filter(pk=key.pk).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0002_data_keys"),
        ("registry", "0004_artifact_data_key"),
    ]

    operations = [migrations.RunPython(forward, backward)]
