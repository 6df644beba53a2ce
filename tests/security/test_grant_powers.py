"""A security officer cannot grant model access to itself, to a service account it owns (whose
tokens it could then mint) or to a group it belongs to (issue 10, first list).

Personas: sofia (officer, the would-be self-granter), olga (a second officer, who may), alice."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from apps.accounts.models import ModelGroupGrant, ModelUserGrant
from apps.accounts.roles import SECURITY_OFFICER
from apps.accounts.services import create_service_account
from apps.audit.models import AuditEvent
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db

GRANTS = "/api/v1/accounts/grants/"
GROUP_GRANTS = "/api/v1/accounts/group-grants/"


@pytest.fixture
def triage(db):
    return ModelVersionFactory(model_name="triage").model


@pytest.fixture
def own_service_account(officer_user):
    return create_service_account(name="svc-sofia", owner_id=officer_user.pk, actor=None)


@pytest.fixture
def own_group(officer_user):
    group = Group.objects.create(name="oncology")
    officer_user.groups.add(group)
    return group


def nothing_granted() -> None:
    assert not ModelUserGrant.objects.exists()
    assert not ModelGroupGrant.objects.exists()
    assert not AuditEvent.objects.filter(event_type="access.grant.create").exists()


class TestNoSelfGrant:
    @pytest.mark.parametrize("permission", ["invoke_model", "view_model"])
    def test_to_itself(self, officer_user, triage, permission):
        resp = session_api(officer_user).post(
            GRANTS, {"model": triage.pk, "user": officer_user.pk, "permission": permission}, format="json"
        )

        assert (resp.status_code, resp.json()["code"]) == (403, "self_change_forbidden")
        nothing_granted()

    @pytest.mark.parametrize("permission", ["invoke_model", "view_model"])
    def test_to_a_service_account_it_owns(self, officer_user, own_service_account, triage, permission):
        resp = session_api(officer_user).post(
            GRANTS, {"model": triage.pk, "user": own_service_account.pk, "permission": permission}, format="json"
        )

        assert (resp.status_code, resp.json()["code"]) == (403, "self_change_forbidden")
        nothing_granted()

    @pytest.mark.parametrize("permission", ["invoke_model", "view_model"])
    def test_to_a_group_it_belongs_to(self, officer_user, own_group, triage, permission):
        resp = session_api(officer_user).post(
            GROUP_GRANTS, {"model": triage.pk, "group": own_group.pk, "permission": permission}, format="json"
        )

        assert (resp.status_code, resp.json()["code"]) == (403, "self_change_forbidden")
        nothing_granted()

    def test_to_its_own_role_group(self, officer_user, triage):
        officers = Group.objects.get(name=SECURITY_OFFICER)

        resp = session_api(officer_user).post(
            GROUP_GRANTS, {"model": triage.pk, "group": officers.pk, "permission": "invoke_model"}, format="json"
        )

        assert (resp.status_code, resp.json()["code"]) == (403, "self_change_forbidden")

    def test_nor_revokes_its_own(self, officer_user, triage):
        grant(officer_user, triage)
        row = ModelUserGrant.objects.get(user=officer_user, permission__codename="invoke_model")

        resp = session_api(officer_user).delete(f"{GRANTS}{row.pk}/")

        assert (resp.status_code, resp.json()["code"]) == (403, "self_change_forbidden")
        assert ModelUserGrant.objects.filter(pk=row.pk).exists()


class TestAnotherOfficerMay:
    def test_grants_the_same_targets(self, officer_user, own_service_account, own_group, triage):
        olga = session_api(make_user("olga", SECURITY_OFFICER))

        for url, body in [
            (GRANTS, {"user": officer_user.pk}),
            (GRANTS, {"user": own_service_account.pk}),
            (GROUP_GRANTS, {"group": own_group.pk}),
        ]:
            resp = olga.post(url, {"model": triage.pk, "permission": "invoke_model", **body}, format="json")
            assert resp.status_code == 201, (body, resp.json())
        assert AuditEvent.objects.filter(event_type="access.grant.create").count() == 3


class TestGroupGrantsReachPersonsOnly:
    """A grant to a group ("every analyst") reaches the people in it, never a service account:
    otherwise whoever owns an analyst service account (an admin) would mint its token and invoke
    a model nobody granted them. Found by the closure test (officer → grant the analyst role
    group → its own analyst service account's token → invoke). Both access paths are checked:
    the gateway's fixed SQL and the ORM selectors."""

    @pytest.fixture
    def world(self, staff_user, triage):
        from apps.accounts.roles import ANALYST
        from apps.registry.models import ModelVersion
        from tests.factories import DeploymentFactory

        DeploymentFactory(model_version=ModelVersion.objects.get(model=triage))
        group = Group.objects.get(name=ANALYST)
        from apps.accounts.services import grant_model_access

        grant_model_access(model_id=triage.pk, permission="invoke_model", group_id=group.pk, actor=None)
        svc = create_service_account(name="svc-etl", owner_id=staff_user.pk, actor=None)  # an analyst
        person = make_user("ana", ANALYST)
        return triage, svc, person

    def test_the_gateway_route_and_the_selectors_agree(self, world):
        from apps.accounts.services import issue_token
        from apps.registry.selectors import models_invokable_by, models_visible_to
        from tests.factories import token_for

        model, svc, person = world
        svc_token = issue_token(user=svc, name="etl", actor=None)[1]  # host-issued
        person_token = token_for(person)
        assert gateway_route(person_token, model.name)
        assert list(models_invokable_by(person)) == [model]
        assert model in models_visible_to(person)
        assert gateway_route(svc_token, model.name) == []
        assert not models_invokable_by(svc).exists()
        assert not models_visible_to(svc).exists()

    def test_a_grant_by_name_still_reaches_a_service_account(self, world):
        from apps.accounts.services import issue_token
        from apps.registry.selectors import models_invokable_by

        model, svc, _ = world
        grant(svc, model)
        svc_token = issue_token(user=svc, name="etl", actor=None)[1]  # host-issued
        assert gateway_route(svc_token, model.name)
        assert list(models_invokable_by(svc)) == [model]


def gateway_route(plaintext: str, name: str) -> list:
    """The gateway's route for an inference call with this token: its deployments, [] if refused."""
    from apps.accounts.services import authenticate_bearer
    from apps.core.errors import ServiceError
    from apps.gateway.routing import route

    user, token = authenticate_bearer(f"Bearer {plaintext}", lean=True)
    try:
        return route(user, token, name, invoke=True)
    except ServiceError:
        return []
