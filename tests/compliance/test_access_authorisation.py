"""Access authorisation (HIPAA 164.308(a)(4)(ii)(B,C), 等保 8.1.4.2): every live model grant was
made by the audited grant service — an `access.grant.create` event with the same model, grantee,
permission and expiry, written with the row and not revoked since — and its grantor is the one the
audit trail names. Grants written past the service (created, extended, re-attributed or revived
with the ORM) fail the check naming them; undoing them passes.

Personas: sec (security officer, the grantor), ana (analyst, the grantee), team (a group)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from apps.accounts.models import ModelGroupGrant, ModelUserGrant
from apps.accounts.roles import ANALYST, SECURITY_OFFICER
from apps.accounts.services import grant_model_access, revoke_model_access, update_user
from tests.compliance.conftest import check_of, evaluate
from tests.conftest import make_user
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def authorisation() -> dict:
    return check_of(evaluate("hipaa", "164.308(a)(4)(ii)(B),(C)")[1], "access.authorisation")


@pytest.fixture
def sec():
    return make_user("sec", SECURITY_OFFICER)


@pytest.fixture
def ana():
    return make_user("ana", ANALYST)


@pytest.fixture
def model():
    return ModelVersionFactory(model_name="triage").model


def invoke_perm() -> Permission:
    return Permission.objects.get(content_type__app_label="registry", codename="invoke_model")


def granted(sec, ana, model, days: int = 30):
    expires = timezone.now() + timedelta(days=days)
    grant_model_access(model_id=model.pk, permission="invoke_model", user_id=ana.pk, expires_at=expires, actor=sec)
    return ModelUserGrant.objects.get(user=ana, content_object=model, permission=invoke_perm())


def test_service_grants_pass_and_survive_a_rename(sec, ana, model):
    granted(sec, ana, model)
    team = Group.objects.create(name="team")
    grant_model_access(model_id=model.pk, permission="view_model", group_id=team.pk, actor=sec)

    check = authorisation()
    assert check["status"] == "pass", check
    assert check["live_grants"] == 3  # view + invoke for ana, view for the team

    update_user(user_id=ana.pk, changes={"username": "ana2"}, actor=sec)
    assert authorisation()["status"] == "pass"


def test_a_grant_created_with_the_orm_fails_naming_it(ana, model):
    row = ModelUserGrant.objects.create(user=ana, permission=invoke_perm(), content_object=model)

    check = authorisation()
    assert check["status"] == "fail"
    assert check["grants_without_audit_trail"] == ["invoke_model on triage to user ana"]
    assert "invoke_model on triage to user ana" in check["summary"]

    row.delete()
    assert authorisation()["status"] == "pass"


def test_a_group_grant_created_with_the_orm_fails(model):
    team = Group.objects.create(name="team")
    ModelGroupGrant.objects.create(group=team, permission=invoke_perm(), content_object=model)
    assert authorisation()["grants_without_audit_trail"] == ["invoke_model on triage to group team"]


def test_an_expiry_extended_with_the_orm_fails(sec, ana, model):
    row = granted(sec, ana, model)
    assert authorisation()["status"] == "pass"
    original = row.expires_at

    ModelUserGrant.objects.filter(pk=row.pk).update(expires_at=original + timedelta(days=365))
    assert authorisation()["grants_without_audit_trail"] == ["invoke_model on triage to user ana"]

    ModelUserGrant.objects.filter(pk=row.pk).update(expires_at=original)
    assert authorisation()["status"] == "pass"


def test_a_grantor_rewritten_with_the_orm_fails(sec, ana, model):
    row = granted(sec, ana, model)
    other = make_user("olivia", SECURITY_OFFICER)

    ModelUserGrant.objects.filter(pk=row.pk).update(granted_by=other)

    check = authorisation()
    assert check["status"] == "fail"
    assert check["grantor_differs_from_audit_trail"] == [
        "invoke_model on triage to user ana: row says olivia, the audit trail sec"
    ]


def test_a_revoked_grant_revived_with_the_orm_fails(sec, ana, model):
    row = granted(sec, ana, model)
    kept = {"granted_at": row.granted_at, "expires_at": row.expires_at, "granted_by": sec}
    revoke_model_access(model_id=model.pk, permission="invoke_model", user_id=ana.pk, actor=sec)

    ModelUserGrant.objects.create(user=ana, permission=invoke_perm(), content_object=model, **kept)

    assert authorisation()["grants_without_audit_trail"] == ["invoke_model on triage to user ana"]


def test_what_make_run_creates_passes_the_identity_checks():
    """bootstrap_demo's accounts, grant and token (as `make run` leaves them, twice: the second run
    grants again and reissues the token) pass authorisation, separation and termination."""
    from apps.demo.management.commands.bootstrap_demo import demo_caller, ensure_demo_accounts, issue_demo_token

    model = ModelVersionFactory(model_name="triage-demo").model
    for _ in range(2):
        logins = ensure_demo_accounts()
        account = demo_caller(model, admin=logins["demo-admin"].user, officer=logins["demo-officer"].user)
        issue_demo_token(account, model)

    _, evidence, _ = evaluate("hipaa", "164.308(a)(3)(ii)(A),(B)")
    assert check_of(evidence, "access.authorisation")["status"] == "pass"
    assert check_of(evidence, "access.authorisation")["live_grants"] == 2  # view + invoke for svc-demo
    assert check_of(evidence, "accounts.role_separation")["status"] == "pass"
    _, evidence, _ = evaluate("hipaa", "164.308(a)(3)(ii)(C)")
    assert check_of(evidence, "accounts.termination")["status"] == "pass"
