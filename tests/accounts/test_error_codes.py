"""House rule 10: the same error never has two codes, whichever route reports it."""

import pytest

from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

USERS = "/api/v1/accounts/users/"


def test_unknown_role_is_unknown_role_on_add_and_remove(officer_session, plain_user):
    added = officer_session.post(f"{USERS}{plain_user.pk}/roles/", {"role": "wizard"}, format="json")
    removed = officer_session.delete(f"{USERS}{plain_user.pk}/roles/wizard/")

    assert (added.status_code, added.json()["code"]) == (400, "unknown_role")
    assert (removed.status_code, removed.json()["code"]) == (400, "unknown_role")
    assert not AuditEvent.objects.filter(event_type__startswith="auth.role.").exists()


def test_privileged_service_account_is_service_account_role_on_create_and_assign(staff_session, officer_session):
    created = staff_session.post(
        "/api/v1/accounts/service-accounts/", {"name": "svc-etl", "role": "auditor"}, format="json"
    )
    assert (created.status_code, created.json()["code"]) == (400, "service_account_role")

    account = staff_session.post("/api/v1/accounts/service-accounts/", {"name": "svc-etl"}, format="json").json()
    assigned = officer_session.post(f"{USERS}{account['id']}/roles/", {"role": "auditor"}, format="json")
    assert (assigned.status_code, assigned.json()["code"]) == (400, "service_account_role")


def test_unknown_grant_permission_is_unknown_permission(officer_session, plain_user):
    resp = officer_session.post(
        "/api/v1/accounts/grants/", {"model": 1, "permission": "own_model", "user": plain_user.pk}, format="json"
    )
    assert (resp.status_code, resp.json()["code"]) == (400, "unknown_permission")
