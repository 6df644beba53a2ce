"""Every API endpoint: 401 without credentials, 200 for those in scope, 403 for those who are not."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

READABLE_BY_USERS = [
    "/api/v1/registry/models/",
    "/api/v1/deployments/servers/",
    "/api/v1/deployments/deployments/",
    "/api/v1/accounts/tokens/",
]
SUPERUSER_ONLY = ["/api/v1/audit/events/"]


@pytest.mark.parametrize("path", READABLE_BY_USERS + SUPERUSER_ONLY)
def test_anonymous_is_401(anon_client, path):
    resp = anon_client.get(path)

    assert resp.status_code == 401
    assert resp.json()["code"] == "not_authenticated"
    assert resp["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", READABLE_BY_USERS)
def test_user_reads(user_client, path):
    resp = user_client.get(path)

    assert resp.status_code == 200
    assert "results" in resp.json()


@pytest.mark.parametrize("path", SUPERUSER_ONLY)
@pytest.mark.parametrize("persona", ["user_client", "staff_client"])
def test_audit_log_is_superuser_only(request, path, persona):
    resp = request.getfixturevalue(persona).get(path)

    assert resp.status_code == 403
    assert resp.json()["code"] == "permission_denied"


@pytest.mark.parametrize("path", READABLE_BY_USERS + SUPERUSER_ONLY)
def test_superuser_reads_everything(admin_client_api, path):
    assert admin_client_api.get(path).status_code == 200


def test_session_login_works_for_the_api(client, plain_user):
    client.force_login(plain_user)

    assert client.get("/api/v1/accounts/tokens/").status_code == 200
