"""The OpenAPI schema generates without warnings, and the docs render."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_endpoint(user_client):
    resp = user_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert resp.status_code == 200
    schema = resp.json()
    assert schema["info"]["title"] == "Sovereign API"
    for path in (
        "/api/v1/registry/models/{model_name}/versions/",
        "/api/v1/deployments/deployments/{id}/undeploy/",
        "/api/v1/accounts/tokens/{id}/revoke/",
        "/api/v1/audit/events/",
    ):
        assert path in schema["paths"], path
    upload = schema["paths"]["/api/v1/registry/models/{model_name}/versions/"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert schema["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"


def test_spectacular_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.")
    assert schema["paths"]


def test_docs_render_for_authenticated_user(user_client):
    resp = user_client.get("/api/docs/")

    assert resp.status_code == 200
    assert "swagger" in resp.content.decode().lower()
    assert "/api/schema/" in resp.content.decode()
