"""PHI models take text (issue 15): the gateway de-identifies BYTES inputs only, so a model that
receives PHI and has numeric inputs (pre-tokenised `input_ids`) is refused those inputs unless its
compliance policy declares, with a reason, that they carry no identifiers; `deid.numeric_inputs`
fails listing the undeclared ones."""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEvent
from apps.compliance.checks import FAIL, NA, PASS, Context, run_check
from apps.compliance.services import attach_profile, set_model_policy
from apps.core.errors import ServiceError
from apps.registry.models import ModelVersion
from tests.conftest import grant
from tests.factories import ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client
from tests.gateway.helpers import deploy

pytestmark = pytest.mark.django_db

TOKENS = {"name": "input_ids", "datatype": "INT64", "shape": [-1, 8]}


@pytest.fixture
def tokenised(staff_user, fake_triton, plain_user):
    """A PHI model fed pre-tokenised text: its only input is INT64 input_ids."""
    mv = ModelVersionFactory(model_name="tok", actor=staff_user)
    ModelVersion.objects.filter(pk=mv.pk).update(
        signature={"inputs": [TOKENS], "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]}]}
    )
    deploy(ModelVersion.objects.get(pk=mv.pk), url=fake_triton.url, max_batch_size=8)
    grant(plain_user, mv.model)
    return mv.model


def _infer(user):
    body = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 8], "data": list(range(8))}]}
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client.post("/v2/models/tok/infer", data=json.dumps(body), content_type="application/json")


def _check():
    return run_check("deid.numeric_inputs", Context(profile="hipaa"))


def test_an_undeclared_numeric_phi_model_is_refused_and_fails_the_check_then_declared_passes(
    tokenised, plain_user, fake_triton, officer_user
):
    assert _check().status == NA  # not a PHI model yet: numbers pass as they always did
    assert _infer(plain_user).status_code == 200
    fake_triton.requests.clear()
    attach_profile(profile="hipaa", model_id=tokenised.pk, actor=officer_user)  # now it receives PHI

    response = _infer(plain_user)

    assert (response.status_code, response.json()["code"]) == (403, "phi_numeric_inputs_undeclared")
    assert "input_ids (INT64)" in response.json()["detail"]
    assert not fake_triton.requests  # nothing forwarded
    event = AuditEvent.objects.filter(event_type="inference.infer").latest("id")
    assert event.error_code == "phi_numeric_inputs_undeclared"
    result = _check()
    assert result.status == FAIL
    assert result.evidence["numeric_undeclared"] == {"tok": ["input_ids (INT64)"]}
    assert "tok: input_ids (INT64)" in result.summary
    refusal = result.evidence["gateway_refusal"]["tok"]  # probed through the pipeline, not assumed
    assert (refusal["refused"], refusal["answered"]) == (True, "phi_numeric_inputs_undeclared")
    assert not fake_triton.requests  # the probe's numbers were refused too

    reason = "input_ids come from a tokenizer run on text the gateway already de-identified upstream"
    set_model_policy(model_id=tokenised.pk, phi=True, deid_mode="redact", numeric_inputs_reason=reason, actor=None)

    assert _infer(plain_user).status_code == 200
    assert len(fake_triton.requests) == 1
    result = _check()
    assert result.status == PASS
    assert result.evidence["numeric_declared"] == {"tok": {"inputs": ["input_ids (INT64)"], "reason": reason}}
    change = AuditEvent.objects.filter(event_type="compliance.policy.update").latest("id")
    assert change.details["after"]["numeric_inputs_reason"] == reason

    # withdrawn ("" withdraws; None keeps): refused again
    set_model_policy(model_id=tokenised.pk, phi=True, deid_mode="redact", actor=None)
    assert _infer(plain_user).status_code == 200
    set_model_policy(model_id=tokenised.pk, phi=True, deid_mode="redact", numeric_inputs_reason="  ", actor=None)
    assert _infer(plain_user).json()["code"] == "phi_numeric_inputs_undeclared"
    assert _check().status == FAIL


def test_a_text_only_phi_model_passes(staff_user):
    mv = ModelVersionFactory(model_name="notes", actor=staff_user)
    ModelVersion.objects.filter(pk=mv.pk).update(
        signature={
            "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
            "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]}],
        }
    )
    set_model_policy(model_id=mv.model.pk, phi=True, deid_mode="redact", actor=None)

    result = _check()

    assert result.status == PASS and result.evidence["numeric_undeclared"] == {}


def test_an_overlong_reason_is_refused_and_nothing_is_saved(tokenised):
    with pytest.raises(ServiceError) as err:
        set_model_policy(
            model_id=tokenised.pk, phi=True, deid_mode="redact", numeric_inputs_reason="x" * 2001, actor=None
        )
    assert err.value.code == "reason_too_long"
    assert not AuditEvent.objects.filter(event_type="compliance.policy.update").exists()


def test_a_gateway_that_stops_refusing_is_named_by_the_check(tokenised, fake_triton, monkeypatch):
    from apps.gateway.dataplane import pipeline

    set_model_policy(model_id=tokenised.pk, phi=True, deid_mode="redact", actor=None)
    monkeypatch.setattr(pipeline, "refuse_numeric_inputs", lambda header: None)  # the refusal bypassed

    result = _check()

    assert result.status == FAIL
    assert result.evidence["gateway_refusal"]["tok"]["refused"] is False
    assert "did NOT refuse them for tok" in result.summary
    assert "/v2/models/sovereign-deid-canary/infer" in [r.path for r in fake_triton.requests]  # never the model
