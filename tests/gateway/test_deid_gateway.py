"""De-identification on the gateway (issue 6): for a model whose policy asks for it, identifiers
never reach Triton, numeric tensors pass untouched, and the audit events record which identifier
types were found, never the values."""

from __future__ import annotations

import json
import time

import pytest

from apps.audit.models import AuditEvent
from apps.compliance.services import attach_profile, set_model_policy
from apps.gateway import deid
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
    # its FP32 features carry no identifiers: declared, else the gateway refuses them on a PHI model
    set_model_policy(
        model_id=mv.model.pk, phi=False, deid_mode="off", numeric_inputs_reason="lab values, no identifiers", actor=None
    )
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


# ---- the CPU budget (issue 14): a large request is refused, never forwarded, at bounded cost ----

MiB = 1024 * 1024


def _audited_refusal(status: int) -> None:
    event = AuditEvent.objects.filter(event_type="inference.infer").latest("id")
    assert event.details["status"] == status


def _json_body(total: int) -> bytes:
    """A KServe v2 JSON request of `total` bytes whose BYTES input is clinical text."""
    head = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["'
    tail = b'"]},{"name":"INPUT","datatype":"FP32","shape":[1,4],"data":[1.0,2.0,3.0,4.0]}]}'
    note = NOTE.encode() + b" "
    fill = total - len(head) - len(tail)
    return head + (note * (fill // len(note) + 1))[:fill] + tail


def _binary_body(total: int) -> tuple[bytes, int]:
    note = NOTE.encode() + b" "
    header = {
        "inputs": [
            {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 0}},
            {"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}},
        ]
    }
    size = total - 16 - 4 - 400  # the JSON header takes the rest (padded with spaces below)
    header["inputs"][0]["parameters"]["binary_data_size"] = size + 4
    head = json.dumps(header).encode()
    head += b" " * (total - len(head) - (size + 4) - 16)
    text = (note * (size // len(note) + 1))[:size]
    return head + len(text).to_bytes(4, "little") + text + b"\0" * 16, len(head)


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_a_64_mib_request_to_a_deidentified_model_is_refused_unforwarded_within_its_budget(
    notes_model, plain_user, fake_triton, settings, encoding
):
    set_model_policy(model_id=notes_model.pk, phi=True, deid_mode="redact", actor=None)
    assert 64 * MiB == settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # the gateway itself would read it
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    if encoding == "json":
        body, extra, ctype = _json_body(64 * MiB), {}, "application/json"
    else:
        body, n = _binary_body(64 * MiB)
        extra, ctype = {"HTTP_INFERENCE_HEADER_CONTENT_LENGTH": str(n)}, "application/octet-stream"
    assert len(body) == 64 * MiB

    deid.warm()  # as the data plane does when it starts: not part of any request's CPU
    cpu = time.process_time()
    response = client.post("/v2/models/notes/infer", data=body, content_type=ctype, **extra)
    spent = time.process_time() - cpu

    assert (response.status_code, response.json()["code"]) == (413, "deid_budget_exceeded")
    assert not fake_triton.requests  # nothing forwarded, redacted or not
    _audited_refusal(413)
    assert spent < 2 * settings.DEID_CPU_BUDGET, f"{spent:.2f} s of CPU for a refusal"


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_a_request_over_its_cpu_budget_is_refused_after_about_the_budget(
    notes_model, plain_user, fake_triton, settings, encoding
):
    """Under the size limit, but more text than the budget can de-identify: detection stops once
    the budget is spent (checked between passes), the call is refused, nothing is forwarded."""
    set_model_policy(model_id=notes_model.pk, phi=True, deid_mode="redact", actor=None)
    settings.DEID_CPU_BUDGET = 0.25
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    note = NOTE + " "
    element = note * (64 * 1024 // len(note))  # 64 KiB of notes per element: far more than 0.25 s in all
    rows = 6 * MiB // len(element)
    if encoding == "json":
        body = json.dumps(
            {
                "inputs": [
                    {"name": "TEXT", "datatype": "BYTES", "shape": [rows, 1], "data": [element] * rows},
                    {"name": "INPUT", "datatype": "FP32", "shape": [rows, 4], "data": [0.0] * (4 * rows)},
                ]
            }
        ).encode()
        extra, ctype = {}, "application/json"
    else:
        raw = element.encode()
        text = (len(raw).to_bytes(4, "little") + raw) * rows
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "TEXT",
                        "datatype": "BYTES",
                        "shape": [rows, 1],
                        "parameters": {"binary_data_size": len(text)},
                    },
                    {
                        "name": "INPUT",
                        "datatype": "FP32",
                        "shape": [rows, 4],
                        "parameters": {"binary_data_size": 16 * rows},
                    },
                ]
            }
        ).encode()
        body = header + text + b"\0" * (16 * rows)
        extra, ctype = {"HTTP_INFERENCE_HEADER_CONTENT_LENGTH": str(len(header))}, "application/octet-stream"
    assert len(body) < settings.DEID_MAX_REQUEST_BYTES

    deid.warm()  # as the data plane does when it starts: not part of any request's CPU
    cpu = time.process_time()
    response = client.post("/v2/models/notes/infer", data=body, content_type=ctype, **extra)
    spent = time.process_time() - cpu

    assert (response.status_code, response.json()["code"]) == (413, "deid_budget_exceeded")
    assert not fake_triton.requests
    _audited_refusal(413)
    assert spent < 2 * settings.DEID_CPU_BUDGET + 0.25, f"{spent:.2f} s of CPU against a budget of 0.25 s"


def test_a_normal_request_completes_under_the_default_budget(notes_model, plain_user, fake_triton, settings):
    set_model_policy(model_id=notes_model.pk, phi=True, deid_mode="redact", actor=None)
    assert settings.DEID_CPU_BUDGET == 2.0
    assert _infer(plain_user).status_code == 200
    assert "[SSN]" in _sent(fake_triton)["inputs"][0]["data"][0]
