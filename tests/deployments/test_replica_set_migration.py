"""deployments 0006 attaches every existing deployment to a replica set: one per version, active
when a replica is desired active, the model's newest live set at weight 100 (docs/fleet.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.deployments.models import Deployment, Desired, Observed, ReplicaSet
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory

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


def test_existing_deployments_join_sets_and_the_newest_live_one_takes_the_traffic(before, staff_user):
    v1 = ModelVersionFactory(model_name="triage", actor=staff_user)
    v2 = ModelVersionFactory(model_name="triage", actor=staff_user)
    gone = ModelVersionFactory(model_name="old", actor=staff_user)
    a, b = InferenceServerFactory(), InferenceServerFactory()
    d1a = DeploymentFactory(model_version=v1, server=a)
    d1b = DeploymentFactory(model_version=v1, server=b)
    d2 = DeploymentFactory(model_version=v2, server=InferenceServerFactory())
    Deployment.objects.filter(pk=d1a.pk).update(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    Deployment.objects.filter(pk=d1b.pk).update(created_at=datetime(2026, 1, 2, tzinfo=UTC))
    Deployment.objects.filter(pk=d2.pk).update(created_at=datetime(2026, 2, 1, tzinfo=UTC))
    d_gone = DeploymentFactory(model_version=gone, desired_state=Desired.INACTIVE, observed_state=Observed.INACTIVE)

    _migrate(AFTER)

    s1, s2, s_gone = (ReplicaSet.objects.get(model_version=mv) for mv in (v1, v2, gone))
    assert (s1.state, s1.replicas, s1.traffic_weight) == ("active", 2, 0)
    assert (s2.state, s2.replicas, s2.traffic_weight) == ("active", 1, 100)  # the newest live set
    assert (s_gone.state, s_gone.replicas, s_gone.traffic_weight) == ("retired", 0, 0)
    assert {d.replica_set_id for d in Deployment.objects.filter(pk__in=[d1a.pk, d1b.pk])} == {s1.pk}
    assert Deployment.objects.get(pk=d2.pk).replica_set_id == s2.pk
    assert Deployment.objects.get(pk=d_gone.pk).replica_set_id == s_gone.pk
