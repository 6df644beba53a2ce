"""registry 0004-0006 move each artifact's wrapped data key into keys.DataKey, and back again:
migrate to before the move, create artifacts the old way, migrate forward, check the keys (runs
on PostgreSQL and, with DATABASE_URL=sqlite://..., on SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("registry", "0003_artifact_shredded_at"), ("keys", "0002_data_keys")]
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2025, 6, 7, 8, 9, 10, tzinfo=UTC)


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def _leaves():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.fixture
def old_schema():
    leaves = _leaves()
    old_apps = _migrate(BEFORE)
    yield old_apps
    _migrate(leaves)  # whatever happened, leave the schema the other tests expect


def _old_artifact(apps, name, *, wrapped, kek_id, suite="AES-256-GCM", shredded_at=None):
    Model = apps.get_model("registry", "Model")
    ModelVersion = apps.get_model("registry", "ModelVersion")
    Artifact = apps.get_model("registry", "Artifact")
    mv = ModelVersion.objects.create(
        model=Model.objects.create(name=name), version=1, sha256="0" * 64, size_bytes=1, signature={}
    )
    art = Artifact.objects.create(
        version=mv,
        storage_name=f"{name}.enc",
        suite=suite,
        kek_id=kek_id,
        wrapped_dek=wrapped,
        aad=f"sovereign:artifact:{name}.enc:{name}:1",
        ciphertext_sha256="1" * 64,
        ciphertext_bytes=10,
        shredded_at=shredded_at,
    )
    Artifact.objects.filter(pk=art.pk).update(created_at=T0)  # auto_now_add: set the past afterwards
    return art.pk


def test_existing_artifacts_move_to_data_keys_and_back(old_schema):
    live = _old_artifact(old_schema, "live", wrapped=b"\x01" * 40, kek_id="local:aaaa", suite="SM4-GCM")
    shredded = _old_artifact(old_schema, "shredded", wrapped=b"", kek_id="pkcs11:tok:kek-v1", shredded_at=T1)
    emptied = _old_artifact(old_schema, "emptied", wrapped=b"", kek_id="local:aaaa")  # before shredded_at existed

    new_apps = _migrate(_leaves())

    Artifact = new_apps.get_model("registry", "Artifact")
    keys = {a.pk: a.data_key for a in Artifact.objects.select_related("data_key")}
    assert {k.purpose for k in keys.values()} == {"artifact"}
    assert (keys[live].suite, keys[live].kek_id, bytes(keys[live].wrapped)) == ("SM4-GCM", "local:aaaa", b"\x01" * 40)
    assert (keys[live].created_at, keys[live].destroyed_at) == (T0, None)
    assert (keys[shredded].kek_id, bytes(keys[shredded].wrapped), keys[shredded].destroyed_at) == (
        "pkcs11:tok:kek-v1",
        b"",
        T1,
    )
    assert (bytes(keys[emptied].wrapped), keys[emptied].destroyed_at) == (b"", T0)  # counted as destroyed
    assert Artifact.objects.filter(data_key__destroyed_at__isnull=True).count() == 1

    back = _migrate(BEFORE)

    OldArtifact = back.get_model("registry", "Artifact")
    rows = {a.pk: a for a in OldArtifact.objects.all()}
    assert (rows[live].suite, rows[live].kek_id, bytes(rows[live].wrapped_dek), rows[live].shredded_at) == (
        "SM4-GCM",
        "local:aaaa",
        b"\x01" * 40,
        None,
    )
    assert (bytes(rows[shredded].wrapped_dek), rows[shredded].shredded_at) == (b"", T1)
    assert not back.get_model("keys", "DataKey").objects.exists()


def test_the_moved_rows_satisfy_the_wiped_when_destroyed_constraint(old_schema):
    """A shredded row whose bytes were somehow left behind is wiped by the move, never copied."""
    pk = _old_artifact(old_schema, "leftover", wrapped=b"\x02" * 40, kek_id="local:aaaa", shredded_at=T1)

    new_apps = _migrate(_leaves())

    key = new_apps.get_model("registry", "Artifact").objects.select_related("data_key").get(pk=pk).data_key
    assert (bytes(key.wrapped), key.destroyed_at) == (b"", T1)
