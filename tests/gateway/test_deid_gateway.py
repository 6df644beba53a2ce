"""De-identification on the gateway (issue 6): for a model whose policy asks for it, identifiers
never reach Triton, numeric tensors pass untouched, and the audit events record which identifier
types were found, never the values."""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEvent
from apps.compliance.services import attach_profile, set_model_policy
from apps.registry.models import ModelVersion
from tests.conftest import grant
from tests.factories import ModelVersionFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client
from tests.gateway.helpers import deploy

pytestmark = pytest.mark.django_db

NOTE = "Patient John Smith (MRN 4839201), call (617) 555-0143 or mail john.smith@example.org; SSN 123-45-6789."
VALUES = ("John", "Smith", "4839201", "555-0143", "john.smith@example.org", "123-45-6789")


@pytest.fixture
def notes_model(staff_user, fake_triton, plain_user):
    mv = ModelVersionFactory(model_name="notes", actor=staff_user)
    # A text model: one BYTES input besides the numeric one (the signature is what the gateway checks).
    ModelVersion.objects.filter(pk=mv.pk).update(
        signature={
            "inputs": [
                {"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]},
                {"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]},
            ],
            "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]}],
        }
    )
    deploy(ModelVersion.objects.get(pk=mv.pk), url=fake_triton.url, max_batch_size=8)
    grant(plain_user, mv.model)
    return mv.model


def _infer(user):
    body = {
        "inputs": [
            {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [NOTE]},
            {"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [5550143.0, 1.0, 2.0, 3.0]},
        ]
    }
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client.post("/v2/models/notes/infer", data=json.dumps(body), content_type="application/json")


def _sent(fake_triton) -> dict:
    return json.loads(fake_triton.requests[-1].body)


@pytest.mark.parametrize("mode", ["redact", "mask", "pseudonymise"])
def test_phi_model_identifiers_never_reach_triton_nor_the_audit_log(notes_model, plain_user, fake_triton, mode):
    set_model_policy(model_id=notes_model.pk, phi=True, deid_mode=mode, actor=None)

    response = _infer(plain_user)

    assert response.status_code == 200, response.content
    sent = _sent(fake_triton)
    text = sent["inputs"][0]["data"][0]
    for value in VALUES:
        assert value not in text
    assert sent["inputs"][1]["data"] == [5550143.0, 1.0, 2.0, 3.0]  # numbers are not text
    event = AuditEvent.objects.filter(event_type="inference.infer").latest("id")
    assert event.details["deid"]["mode"] == mode
    assert {"PHONE", "EMAIL", "SSN", "MRN"} <= set(event.details["deid"]["found"])
    everything = json.dumps(list(AuditEvent.objects.values()), default=str)
    for value in VALUES:
        assert value not in everything, f"{value!r} reached the audit log"


def test_pseudonyms_are_consistent_across_calls(notes_model, plain_user, fake_triton):
    set_model_policy(model_id=notes_model.pk, phi=True, deid_mode="pseudonymise", actor=None)
    _infer(plain_user)
    first = _sent(fake_triton)["inputs"][0]["data"][0]
    _infer(plain_user)
    assert _sent(fake_triton)["inputs"][0]["data"][0] == first
    assert "[PHONE-" in first


def test_model_without_a_policy_is_forwarded_as_sent(notes_model, plain_user, fake_triton):
    assert _infer(plain_user).status_code == 200
    assert _sent(fake_triton)["inputs"][0]["data"][0] == NOTE
    assert "deid" not in AuditEvent.objects.filter(event_type="inference.infer").latest("id").details


def test_a_model_under_hipaa_without_a_mode_is_redacted(notes_model, plain_user, fake_triton, officer_user):
    attach_profile(profile="hipaa", model_id=notes_model.pk, actor=officer_user)

    assert _infer(plain_user).status_code == 200
    text = _sent(fake_triton)["inputs"][0]["data"][0]
    assert "[PHONE]" in text and "John" not in text


def test_pseudonymise_without_its_key_fails_closed(notes_model, plain_user, fake_triton, settings, tmp_path):
    from apps.keys import pseudonym

    set_model_policy(model_id=notes_model.pk, phi=True, deid_mode="pseudonymise", actor=None)
    settings.PSEUDONYM_KEY_FILE = str(tmp_path / "pseudonym-key.json")
    (tmp_path / "pseudonym-key.json").write_text(json.dumps({"kek_id": "local:0000000000000000", "wrapped": "AAAA"}))
    pseudonym.forget()

    response = _infer(plain_user)

    assert (response.status_code, response.json()["code"]) == (503, "deid_unavailable")
    assert not fake_triton.requests  # nothing was forwarded
