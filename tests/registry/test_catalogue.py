"""Reading the catalogue: roles with the catalogue (guest and up) see every model's name,
description and status; versions need the model to be visible (a grant, or a global view)."""

from __future__ import annotations

import pytest

from apps.registry.models import Model
from tests.conftest import grant
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/registry/models/"


@pytest.fixture
def catalogue(staff_user):
    ModelVersionFactory(model_name="triage", actor=staff_user, description="first")
    ModelVersionFactory(model_name="triage", actor=staff_user)
    ModelVersionFactory(model_name="ranker", actor=staff_user)


@pytest.fixture
def reader(user_client, plain_user, catalogue):
    """An analyst granted view_model on every model of the catalogue."""
    for model in Model.objects.all():
        grant(plain_user, model, "view_model")
    return user_client


class TestCatalogue:
    def test_models_with_latest_version(self, guest_client, catalogue):
        resp = guest_client.get(MODELS)

        assert resp.status_code == 200
        rows = {m["name"]: m for m in resp.json()["results"]}
        assert set(rows) == {"ranker", "triage"}
        assert (rows["triage"]["latest_version"], rows["triage"]["description"]) == (2, "first")
        assert rows["triage"]["status"] == "not deployed"

    def test_model_detail_by_name(self, guest_client, catalogue):
        assert guest_client.get(f"{MODELS}triage/").json()["name"] == "triage"
        missing = guest_client.get(f"{MODELS}nope/")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")

    def test_filter_by_name(self, guest_client, catalogue):
        resp = guest_client.get(MODELS, {"name__icontains": "RANK"})

        assert [m["name"] for m in resp.json()["results"]] == ["ranker"]

    def test_versions_of_one_model(self, reader):
        resp = reader.get(f"{MODELS}triage/versions/")

        assert resp.status_code == 200
        assert [(v["model"], v["version"]) for v in resp.json()["results"]] == [("triage", 2), ("triage", 1)]
        assert all("wrapped_dek" not in v["artifact"] for v in resp.json()["results"])

    def test_version_detail(self, reader):
        resp = reader.get(f"{MODELS}triage/versions/1/")

        assert resp.status_code == 200
        assert resp.json()["signature"]["inputs"][0]["name"] == "INPUT"
        assert reader.get(f"{MODELS}triage/versions/3/").status_code == 404
        assert reader.get(f"{MODELS}ranker/versions/2/").status_code == 404

    def test_versions_of_unknown_model(self, user_client):
        resp = user_client.get(f"{MODELS}nope/versions/")

        assert (resp.status_code, resp.json()["code"]) == (404, "model_not_found")

    def test_guest_sees_names_not_versions(self, guest_client, catalogue):
        listing = guest_client.get(f"{MODELS}triage/versions/")
        detail = guest_client.get(f"{MODELS}triage/versions/1/")

        assert (listing.status_code, listing.json()["code"]) == (404, "model_not_found")
        assert detail.status_code == 404

    def test_analyst_without_grants_sees_nothing(self, user_client, catalogue):
        resp = user_client.get(MODELS)

        assert resp.status_code == 200
        assert resp.json()["results"] == []
        assert user_client.get(f"{MODELS}triage/").status_code == 404

    def test_anonymous_is_401(self, anon_client, catalogue):
        assert anon_client.get(MODELS).status_code == 401
        assert anon_client.get(f"{MODELS}triage/versions/").status_code == 401
