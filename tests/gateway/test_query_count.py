"""The number of SQL statements one gateway call costs, pinned: the data plane's budget is a token
lookup, a route lookup and the audit insert, and a change that adds a query per call (an ORM
selector on the hot path, a lazy attribute read) must show up here, not only in the benchmark.

Personas: alice, an analyst granted invoke on triage (deployed on a fake Triton); ranker is deployed
too but not hers.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.conftest import grant
from tests.factories import ModelVersionFactory, token_for

from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(plain_user, model_version, staff_user, fake_triton):
    deploy(model_version, url=fake_triton.url)
    deploy(ModelVersionFactory(model_name="ranker", actor=staff_user), url=fake_triton.url)
    grant(plain_user, model_version.model)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    assert infer(client, valid_request()).status_code == 200  # last_used_at is now fresh: no UPDATE below
    return client


def statements(queries) -> list[str]:
    return [q["sql"].split(None, 1)[0].upper() for q in queries]


def test_successful_infer(alice_client):
    with CaptureQueriesContext(connection) as queries:
        resp = infer(alice_client, valid_request())

    assert resp.status_code == 200, resp.content
    assert statements(queries) == ["SELECT", "SELECT", "INSERT"]  # token lookup, route, audit event


def test_refused_infer(alice_client):
    """The refusal (404, as for a model that does not exist) is decided on the route statement's
    facts: no second lookup to tell "not deployed" from "not allowed" from "unknown"."""
    with CaptureQueriesContext(connection) as queries:
        resp = infer(alice_client, valid_request(), name="ranker")

    assert resp.json()["code"] == "model_not_found", resp.content
    assert statements(queries) == ["SELECT", "SELECT", "INSERT"]
