"""deployments 0006 attaches every existing deployment to a replica set: one per version, active
when a replica is desired active, the model's newest live set at weight 100 (docs/fleet.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.deployments.models import Deployment, Desired, Observed, ReplicaSet
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("deployments", "0006_rollouts")]
AFTER = [("deployments", "0007_attach_deployments_to_replica_sets")]


def _migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.fixture
def before():
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    _migrate(BEFORE)
    yield
    _migrate(leaves)


def _old(model: str):
    """0006's model class: today's have later columns (servers' health counts, deployments' retries)."""
    return MigrationExecutor(connection).loader.project_state(BEFORE).apps.get_model("deployments", model)


def _server():
    n = _old("InferenceServer").objects.count() + 1
    return _old("InferenceServer").objects.create(name=f"server-{n}", http_url=f"http://127.0.0.1:{18000 + n}")


def _deployment(version, server=None, **states):
    """A deployment row as 0006's schema has it."""
    old = _old("Deployment")
    states = {"desired_state": Desired.ACTIVE, "observed_state": Observed.ACTIVE, **states}
    server = server or _server()
    return old.objects.create(model_id=version.model_id, model_version_id=version.pk, server_id=server.pk, **states)


def _set(version) -> tuple:
    """(state, replicas, traffic_weight, id) of the version's set, read with 0007's columns only."""
    return (
        ReplicaSet.objects.filter(model_version=version).values_list("state", "replicas", "traffic_weight", "id").get()
    )


def _set_of(deployment) -> int:
    return Deployment.objects.filter(pk=deployment.pk).values_list("replica_set_id", flat=True).get()


def test_existing_deployments_join_sets_and_the_newest_live_one_takes_the_traffic(before, staff_user):
    v1 = ModelVersionFactory(model_name="triage", actor=staff_user)
    v2 = ModelVersionFactory(model_name="triage", actor=staff_user)
    gone = ModelVersionFactory(model_name="old", actor=staff_user)
    a, b = _server(), _server()
    d1a = _deployment(v1, a)
    d1b = _deployment(v1, b)
    d2 = _deployment(v2)
    Deployment.objects.filter(pk=d1a.pk).update(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    Deployment.objects.filter(pk=d1b.pk).update(created_at=datetime(2026, 1, 2, tzinfo=UTC))
    Deployment.objects.filter(pk=d2.pk).update(created_at=datetime(2026, 2, 1, tzinfo=UTC))
    d_gone = _deployment(gone, desired_state=Desired.INACTIVE, observed_state=Observed.INACTIVE)

    _migrate(AFTER)

    s1, s2, s_gone = (_set(mv) for mv in (v1, v2, gone))
    assert s1[:3] == ("active", 2, 0)
    assert s2[:3] == ("active", 1, 100)  # the newest live set
    assert s_gone[:3] == ("retired", 0, 0)
    assert _set_of(d1a) == _set_of(d1b) == s1[3]
    assert _set_of(d2) == s2[3]
    assert _set_of(d_gone) == s_gone[3]
