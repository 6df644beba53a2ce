"""The SQL one gateway call costs, pinned: none but its audit event. The data plane authenticates
and routes from the policy snapshot in memory (apps/gateway/dataplane/snapshot.py), and a change
that adds a query per call (an ORM selector on the hot path, a lazy attribute read) must show up
here, not only in the benchmark.

Personas: alice, an analyst granted invoke on triage (deployed on a fake Triton); ranker is deployed
too but not hers.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.gateway.dataplane.snapshot import SnapshotHolder, load_snapshot
from tests.conftest import grant
from tests.factories import ModelVersionFactory, token_for

from .dataplane_client import DataPlaneClient
from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(plain_user, model_version, staff_user, fake_triton):
    deploy(model_version, url=fake_triton.url)
    deploy(ModelVersionFactory(model_name="ranker", actor=staff_user), url=fake_triton.url)
    grant(plain_user, model_version.model)
    client = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    snapshot = load_snapshot()  # read once, as a running data plane holds it between changes
    client.policy = SnapshotHolder(refresh="always", loader=lambda: snapshot)
    return client


def sql(queries) -> list[str]:
    """The statements, but for the savepoint the audit batch takes inside the test's transaction
    (in the data plane's autocommit the COPY is its own transaction)."""
    return [q["sql"] for q in queries if q["sql"].split(None, 1)[0] not in ("SAVEPOINT", "RELEASE")]


@pytest.mark.parametrize(
    ("name", "code"), [("triage", None), ("ranker", "model_not_found"), ("nope", "model_not_found")]
)
def test_a_call_reads_nothing_and_writes_only_its_event(alice_client, name, code):
    """Served or refused (404, as for a model that does not exist: decided on the snapshot's facts),
    the call asks the database nothing; its one write is the audit batch (a COPY, which Django's
    query capture does not list, so the event itself is counted)."""
    before = AuditEvent.objects.count()
    with CaptureQueriesContext(connection) as queries:
        resp = infer(alice_client, valid_request(), name=name)

    assert resp.status_code == (200 if code is None else 404), resp.content
    assert code is None or resp.json()["code"] == code
    assert sql(queries) == []
    assert AuditEvent.objects.count() == before + 1
