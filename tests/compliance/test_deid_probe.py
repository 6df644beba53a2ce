"""deid.phi_models probes (issue 15): synthetic identifiers go through each PHI model's
de-identification and the gateway's pipeline to the echo canary on a real Triton; the check fails
naming the types that reached Triton, and in HIPAA for modes that are not Safe Harbor."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compliance.checks import FAIL, PASS, Context, run_check
from apps.compliance.services import set_model_policy
from apps.gateway.deidprobe import SYNTHETIC
from inference_backend.canary_model import CANARY_MODEL
from inference_backend.client import TritonClient
from tests.factories import InferenceServerFactory, ModelVersionFactory
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def notes(triton):
    InferenceServerFactory(name="local-triton", http_url=triton.http_url)
    model = ModelVersionFactory(model_name="notes").model
    set_model_policy(model_id=model.pk, phi=True, deid_mode="redact", actor=None)
    return model


def _check(profile="hipaa"):
    return run_check("deid.phi_models", Context(profile=profile))


def test_redact_passes_and_the_evidence_says_what_was_sent_and_that_nothing_reached_triton(notes, triton):
    with TritonClient(triton.http_url) as client:  # another test may have loaded the canary already
        if client.model_ready(CANARY_MODEL):
            client.unload_model(CANARY_MODEL)
            wait_for(lambda: not client.model_ready(CANARY_MODEL), what="the canary unloaded")

    result = _check()

    assert result.status == PASS, result.summary
    probe = result.evidence["probes"]["notes"]
    assert probe["mode"] == "redact" and probe["server"] == "local-triton"
    assert probe["sent"] == sorted(SYNTHETIC) and probe["reached_triton"] == []
    assert set(probe["found_by_gateway"]) == set(SYNTHETIC)  # the gateway found every type it removed
    assert probe["probed_at"]
    load = AuditEvent.objects.get(event_type="deployment.canary.load")
    assert load.details["model"] == "sovereign-deid-canary"
    _check()  # the canary stays loaded: a second probe loads nothing
    assert AuditEvent.objects.filter(event_type="deployment.canary.load").count() == 1


def test_a_deidentifier_that_lets_identifiers_through_fails_naming_the_leaked_types(notes, monkeypatch):
    from apps.gateway.dataplane import pipeline

    def passthrough(body, header, header_length, mode, key, budget=None, mapping=None):
        return body, header_length, {}

    monkeypatch.setattr(pipeline, "deidentify_request", passthrough)  # the control bypassed
    result = _check()

    assert result.status == FAIL
    assert result.evidence["reached_triton"] == {"notes": sorted(SYNTHETIC, key=list(SYNTHETIC).index)}
    assert "SSN" in result.summary and "CN_ID" in result.summary and "notes" in result.summary
    values = [v for vs in SYNTHETIC.values() for v in vs]
    assert not any(v in repr(result.evidence) for v in values), "the evidence holds types, never values"

    monkeypatch.undo()  # restored
    assert _check().status == PASS


def test_pseudonymise_is_not_safe_harbor_in_hipaa_but_removes_identifiers(notes):
    set_model_policy(model_id=notes.pk, phi=True, deid_mode="pseudonymise", actor=None)

    hipaa = _check("hipaa")
    assert hipaa.status == FAIL
    assert hipaa.evidence["pseudonymise_not_safe_harbor"] == ["notes"]
    assert "164.514(c)" in hipaa.summary and "surrogate" in hipaa.remedy
    assert hipaa.evidence["reached_triton"] == {}  # the tokens hide the values; the code is the problem
    assert _check("dengbao-l3").status == PASS  # 去标识化 under PIPL: a keyed pseudonym is allowed

    set_model_policy(model_id=notes.pk, phi=True, deid_mode="surrogate", actor=None)
    assert _check("hipaa").status == PASS


def test_without_a_server_to_probe_on_the_check_fails():
    model = ModelVersionFactory(model_name="notes").model
    set_model_policy(model_id=model.pk, phi=True, deid_mode="redact", actor=None)

    result = _check()

    assert result.status == FAIL
    assert "no_inference_server" in result.evidence["not_probed"]["notes"]
