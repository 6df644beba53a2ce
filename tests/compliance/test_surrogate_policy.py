"""Surrogate modes in a model's compliance policy, the date-shift finding, and the `reidentify` grant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import ModelUserGrant
from apps.accounts.services.grants import grant_model_access, revoke_model_access
from apps.audit.models import AuditEvent
from apps.compliance import selectors, services
from apps.compliance.checks import FAIL, PASS, Context, run_check
from apps.compliance.models import DeidMode
from apps.core.errors import ServiceError
from apps.registry.access import Grant, Principal, Token, may_reidentify
from tests.conftest import make_user
from tests.factories import InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db


def test_surrogate_modes_are_valid_policy_and_reach_the_gateway_decision():
    model = ModelVersionFactory(model_name="triage").model
    services.set_model_policy(model_id=model.pk, phi=True, deid_mode=DeidMode.SURROGATE, actor=None)
    assert selectors.deid_mode(model.pk) == "surrogate"
    services.set_model_policy(model_id=model.pk, phi=True, deid_mode="surrogate_shift", actor=None)
    assert selectors.deid_mode(model.pk) == "surrogate_shift"
    with pytest.raises(ServiceError) as err:
        services.set_model_policy(model_id=model.pk, phi=True, deid_mode="surrogates", actor=None)
    assert err.value.code == "invalid_deid_mode"


def test_a_date_shift_on_a_phi_model_fails_the_hipaa_deidentification_check(triton):
    InferenceServerFactory(http_url=triton.http_url)  # the probe's canary runs there
    model = ModelVersionFactory(model_name="triage").model
    services.set_model_policy(model_id=model.pk, phi=True, deid_mode=DeidMode.SURROGATE, actor=None)
    assert run_check("deid.phi_models", Context(profile="hipaa")).status == PASS
    services.set_model_policy(model_id=model.pk, phi=True, deid_mode=DeidMode.SURROGATE_SHIFT, actor=None)
    result = run_check("deid.phi_models", Context(profile="hipaa"))
    assert result.status == FAIL
    assert "not Safe Harbor" in result.summary
    assert result.evidence["date_shift_not_safe_harbor"] == ["triage"]


def test_reidentify_is_granted_by_an_officer_audited_refused_to_guests_and_to_oneself():
    model = ModelVersionFactory(model_name="triage").model
    officer = make_user("sofia", "security_officer")
    analyst = make_user("alice", "analyst")
    grant_model_access(model_id=model.pk, permission="reidentify", user_id=analyst.pk, actor=officer)
    assert ModelUserGrant.objects.filter(user=analyst, permission__codename="reidentify").exists()
    event = AuditEvent.objects.filter(event_type="access.grant.create").latest("pk")
    assert event.details["permissions"] == ["reidentify"]
    with pytest.raises(ServiceError) as err:
        grant_model_access(model_id=model.pk, permission="reidentify", user_id=make_user("g", "guest").pk, actor=None)
    assert err.value.code == "role_cannot_invoke"
    with pytest.raises(ServiceError) as err:
        grant_model_access(model_id=model.pk, permission="reidentify", user_id=officer.pk, actor=officer)
    assert err.value.code == "self_change_forbidden"
    with pytest.raises(ServiceError):  # an analyst cannot grant at all
        grant_model_access(model_id=model.pk, permission="reidentify", user_id=analyst.pk, actor=analyst)
    # revoking invoke takes reidentify with it
    grant_model_access(model_id=model.pk, permission="invoke_model", user_id=analyst.pk, actor=officer)
    revoke_model_access(model_id=model.pk, permission="invoke_model", user_id=analyst.pk, actor=officer)
    assert not ModelUserGrant.objects.filter(user=analyst, permission__codename="reidentify").exists()


NOW = timezone.now()
ANALYST = Principal(1, True, False, False, frozenset({"analyst"}), frozenset({"analyst"}))
ROOT = Principal(2, True, True, False, frozenset(), frozenset())
SVC = Principal(3, True, False, True, frozenset({"analyst"}), frozenset({"analyst"}))
OPEN = Token(scopes=frozenset({"invoke"}), restricted=False)
INVOKE = Grant(7, "invoke_model", None, False)
REID = Grant(7, "reidentify", None, False)


@pytest.mark.parametrize(
    ("principal", "token", "grants", "expected"),
    [
        (ANALYST, OPEN, [INVOKE, REID], True),
        (ANALYST, OPEN, [REID], False),  # reidentify without invoke: nothing to re-identify
        (ANALYST, OPEN, [INVOKE], False),
        (ROOT, OPEN, [], False),  # no role holds it, the superuser included
        (ROOT, OPEN, [REID], True),
        (ANALYST, Token(frozenset({"invoke"}), True, frozenset({8})), [INVOKE, REID], False),  # other models
        (ANALYST, OPEN, [INVOKE, Grant(7, "reidentify", NOW - timedelta(seconds=1), False)], False),  # expired
        (SVC, OPEN, [INVOKE, Grant(7, "reidentify", None, True)], False),  # group grants: persons only
    ],
)
def test_may_reidentify(principal, token, grants, expected):
    assert may_reidentify(principal, token, 7, grants, NOW) is expected
