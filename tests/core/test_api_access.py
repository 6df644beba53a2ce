"""Every API collection: 401 without credentials, 200 for the roles in scope, 403 for the others."""

from __future__ import annotations

import pytest

from tests.conftest import otp_login

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/registry/models/"
SERVERS = "/api/v1/deployments/servers/"
DEPLOYMENTS = "/api/v1/deployments/deployments/"
TOKENS = "/api/v1/accounts/tokens/"
AUDIT = "/api/v1/audit/events/"
PATHS = [MODELS, SERVERS, DEPLOYMENTS, TOKENS, AUDIT]

# Which collections each persona (a token with every scope) may list. The catalogue and one's
# own tokens are open to every role, each scoped by its selector; the rest follow the roles.
READS = {
    "user_client": {MODELS, TOKENS},  # analyst
    "guest_client": {MODELS, TOKENS},
    "staff_client": {MODELS, SERVERS, DEPLOYMENTS, TOKENS},  # admin role: no audit log
    "officer_client": {MODELS, TOKENS, AUDIT},  # the audit log: key events only
    "auditor_client": set(PATHS),
    "admin_client_api": set(PATHS),  # superuser
}


@pytest.mark.parametrize("path", PATHS)
def test_anonymous_is_401(anon_client, path):
    resp = anon_client.get(path)

    assert resp.status_code == 401
    assert resp.json()["code"] == "not_authenticated"
    assert resp["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("persona", sorted(READS))
def test_role_reads(request, persona, path):
    resp = request.getfixturevalue(persona).get(path)

    if path in READS[persona]:
        assert resp.status_code == 200, resp.json()
        assert "results" in resp.json()
    else:
        assert resp.status_code == 403, resp.json()
        assert resp.json()["code"] == "permission_denied"


def test_session_login_works_for_the_api(client, plain_user):
    client.force_login(plain_user)

    assert client.get(TOKENS).status_code == 200


def test_privileged_session_needs_the_second_factor(client, staff_user):
    client.force_login(staff_user)

    resp = client.get(SERVERS)

    assert (resp.status_code, resp.json()["code"]) == (403, "otp_enrolment_required")
    otp_login(client, staff_user)
    assert client.get(SERVERS).status_code == 200
