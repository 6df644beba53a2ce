"""Answer screening on the OpenAI API of the data plane (apps/gateway/dataplane/openai.py), against
the scripted upstream of test_openai_adapter: identifiers the model writes, split across its
deltas, are redacted (or only counted and alerted) before they reach the client, counted in the
audit event (types and counts, never values), and the token counts stay the model's."""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEvent
from apps.compliance.models import ModelPolicy
from apps.compliance.services import set_model_policy
from apps.core.errors import ServiceError
from apps.gateway.dataplane.snapshot import load_snapshot
from tests.gateway.test_openai_adapter import _chat, _events, _sse, chat_model, client  # noqa: F401

pytestmark = pytest.mark.django_db

# The model's answer, cut inside the SSN, the phone number and the e-mail address.
PIECES = ["Her SSN is 123-4", "5-6789 and you can call (617) 55", "5-0143 or write to john.sm", "ith@example.org."]
SCREENED = "Her SSN is [SSN] and you can call [PHONE] or write to [EMAIL]."
FOUND = {"SSN": 1, "PHONE": 1, "EMAIL": 1}


def _answer(pieces) -> bytes:
    events = [
        {"model_name": "chat", "text_output": p, "num_input_tokens": 20, "num_output_tokens": 3, "finish_reason": ""}
        for p in pieces
    ]
    events.append({"model_name": "chat", "text_output": "", "num_output_tokens": 0, "finish_reason": "stop"})
    return _events(*events)


@pytest.fixture
def leaky(chat_model, fake_triton):  # noqa: F811
    fake_triton.body = _answer(PIECES)
    return chat_model


def _deltas(content: bytes) -> str:
    return "".join(e["choices"][0]["delta"].get("content", "") for e in _sse(content)[:-1] if e["choices"])


def _event(kind="inference.chat") -> AuditEvent:
    return AuditEvent.objects.filter(event_type=kind).get()


def test_a_phi_model_screens_by_default_and_off_turns_it_off(leaky):
    set_model_policy(model_id=leaky.pk, phi=True, deid_mode="redact", actor=None)
    assert ModelPolicy.objects.get(model=leaky).answer_screen == ""
    route = load_snapshot()._models["chat"].routes[0]
    assert route.answer_screen == "redact"  # the default for a PHI model
    set_model_policy(model_id=leaky.pk, phi=True, deid_mode="redact", answer_screen="off", actor=None)
    assert load_snapshot()._models["chat"].routes[0].answer_screen == "off"
    set_model_policy(model_id=leaky.pk, phi=True, deid_mode="mask", actor=None)  # omitted: kept
    assert ModelPolicy.objects.get(model=leaky).answer_screen == "off"
    event = AuditEvent.objects.filter(event_type="compliance.policy.update").latest("id")
    assert event.details["after"]["answer_screen"] == "off"
    set_model_policy(model_id=leaky.pk, phi=False, deid_mode="off", answer_screen="", actor=None)
    assert load_snapshot()._models["chat"].routes[0].answer_screen == "off"  # not PHI: off by default
    with pytest.raises(ServiceError) as err:
        set_model_policy(model_id=leaky.pk, phi=False, deid_mode="off", answer_screen="mask", actor=None)
    assert err.value.code == "invalid_answer_screen"


def test_a_whole_answer_is_redacted_and_counted(leaky, client, plain_user):  # noqa: F811
    set_model_policy(model_id=leaky.pk, phi=False, deid_mode="off", answer_screen="redact", actor=None)
    response = _chat(client)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == SCREENED
    assert body["usage"]["completion_tokens"] == 12  # the model's count, not the screened text's
    event = _event()
    assert event.details["answer_deid"] == {"mode": "redact", "found": FOUND}
    assert "alert" not in event.details
    assert "123-45" not in json.dumps(event.details) and "john" not in json.dumps(event.details)


def test_a_streamed_answer_is_redacted_across_deltas(leaky, client):  # noqa: F811
    set_model_policy(model_id=leaky.pk, phi=False, deid_mode="off", answer_screen="redact", actor=None)
    response = _chat(client, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    events = _sse(response.content)
    assert events[-1] == "[DONE]"
    assert _deltas(response.content) == SCREENED
    for piece in ("6789", "555", "0143", "john", "example"):
        assert piece.encode() not in response.content
    assert events[-3]["choices"][0]["finish_reason"] == "stop"  # the rest of the answer came first
    assert events[-2]["usage"]["completion_tokens"] == 12
    assert _event().details["answer_deid"] == {"mode": "redact", "found": FOUND}


def test_alert_passes_the_answer_and_raises_the_alert(leaky, client):  # noqa: F811
    set_model_policy(model_id=leaky.pk, phi=False, deid_mode="off", answer_screen="alert", actor=None)
    response = _chat(client, stream=True)
    assert _deltas(response.content) == "".join(PIECES)
    event = _event()
    assert event.details["answer_deid"] == {"mode": "alert", "found": FOUND}
    assert event.details["alert"] is True


def test_alert_without_identifiers_does_not_alert(leaky, client, fake_triton):  # noqa: F811
    set_model_policy(model_id=leaky.pk, phi=False, deid_mode="off", answer_screen="alert", actor=None)
    fake_triton.body = _answer(["Take 5 mg ", "twice daily with food."])
    _chat(client)
    event = _event()
    assert event.details["answer_deid"] == {"mode": "alert", "found": {}}
    assert "alert" not in event.details


def test_placeholders_the_model_repeats_pass(leaky, client, fake_triton):  # noqa: F811
    """With de-identification on, the model saw placeholders; repeating them is not an identifier."""
    set_model_policy(model_id=leaky.pk, phi=True, deid_mode="pseudonymise", actor=None)
    fake_triton.body = _answer(["Patient [NAME-1a2b", "3c4d], MRN: [MRN-61f3", "c0cc], is stable."])
    response = _chat(client, stream=True)
    assert _deltas(response.content) == "Patient [NAME-1a2b3c4d], MRN: [MRN-61f3c0cc], is stable."
    assert _event().details["answer_deid"] == {"mode": "redact", "found": {}}


def test_off_forwards_the_answer_untouched(leaky, client):  # noqa: F811
    response = _chat(client)
    assert response.json()["choices"][0]["message"]["content"] == "".join(PIECES)
    assert "answer_deid" not in _event().details
