"""Surrogate mode through /v1 against a scripted upstream (deterministic: the answer echoes the
surrogates Triton received, split across deltas). The real model: tests/llm/test_surrogate_e2e.py."""

from __future__ import annotations

import json
import re

import pytest

from apps.audit.models import AuditEvent
from apps.compliance.services import set_model_policy
from tests.conftest import grant, make_user
from tests.factories import token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client
from tests.gateway.test_openai_adapter import _events, _sse, chat_model  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db

NOTE = "Patient John Smith, MRN 4839201, phone (617) 555-0143, seen 2024-03-05."
ORIGINALS = ("John Smith", "4839201", "(617) 555-0143", "2024-03-05")


def _user_text(forwarded: bytes) -> str:
    prompt = json.loads(forwarded)["text_input"]
    return re.search(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", prompt, re.S).group(1)


def _echo(text: str, size: int = 3) -> bytes:
    """Triton's generate_stream answering `text` in deltas of `size` characters."""
    parts = [text[i : i + size] for i in range(0, len(text), size)]
    events = [{"text_output": p, "num_input_tokens": 30, "num_output_tokens": 1, "finish_reason": ""} for p in parts]
    return _events(
        *events, {"text_output": "", "num_input_tokens": 30, "num_output_tokens": 0, "finish_reason": "stop"}
    )


def _call(client, conversation=None, stream=True):
    headers = {"HTTP_X_SOVEREIGN_CONVERSATION": conversation} if conversation else {}
    body = {"model": "chat", "messages": [{"role": "user", "content": NOTE}], "stream": stream}
    return client.post("/v1/chat/completions", data=json.dumps(body), **headers)


def _streamed_text(response) -> str:
    events = _sse(response.content)
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e != "[DONE]" and e["choices"])


@pytest.fixture
def surrogate_model(chat_model, plain_user):  # noqa: F811
    set_model_policy(model_id=chat_model.pk, phi=True, deid_mode="surrogate", actor=None)
    return chat_model


def test_triton_gets_surrogates_and_a_reidentify_holder_gets_originals_back_in_a_stream(
    surrogate_model, plain_user, fake_triton
):
    grant(plain_user, surrogate_model, "reidentify")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    assert _call(client, "case-1", stream=False).status_code == 200
    surrogate_text = _user_text(fake_triton.requests[-1].body)
    for value in ORIGINALS:
        assert value not in fake_triton.requests[-1].body.decode()
    assert re.search(r"\(\d{3}\) 555-01\d\d", surrogate_text)

    fake_triton.body = _echo(surrogate_text)  # the model repeats what it was given
    response = _call(client, "case-1")
    assert response.status_code == 200, response.content
    assert _user_text(fake_triton.requests[-1].body) == surrogate_text  # the conversation's mapping
    assert _streamed_text(response) == NOTE
    event = AuditEvent.objects.filter(event_type="inference.chat").latest("pk")
    assert event.details["deid"]["reidentified"] == {"NAME": 1, "MRN": 1, "PHONE": 1, "DATE": 1}
    assert "Smith" not in json.dumps(event.details) and "4839201" not in json.dumps(event.details)


def test_without_reidentify_the_answer_keeps_its_surrogates_and_a_borrowed_conversation_id_reveals_nothing(
    surrogate_model, plain_user, fake_triton
):
    grant(plain_user, surrogate_model, "reidentify")
    owner = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    _call(owner, "case-2", stream=False)
    surrogate_text = _user_text(fake_triton.requests[-1].body)
    fake_triton.body = _echo(surrogate_text)

    bob = make_user("bob", "analyst")
    grant(bob, surrogate_model)
    grant(bob, surrogate_model, "reidentify")  # even holding reidentify, another token's mapping stays shut
    other = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(bob)}")
    answer = _streamed_text(_call(other, "case-2"))  # the same conversation id, another token
    # the owner's surrogates are not bob's: the PHI model's answer screen (redact by default) replaces
    # them like any identifier bob did not send; in no case do originals come back
    for value in ORIGINALS:
        assert value not in answer
    assert _user_text(fake_triton.requests[-1].body) != surrogate_text  # a mapping of its own

    # the same token of the owner, minus the grant: surrogates only
    from apps.accounts.services.grants import revoke_model_access

    revoke_model_access(model_id=surrogate_model.pk, permission="reidentify", user_id=plain_user.pk, actor=None)
    owner = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    answer = _streamed_text(_call(owner))
    assert all(v not in answer for v in ORIGINALS)


def test_a_malformed_conversation_id_is_refused(surrogate_model, plain_user):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")
    response = _call(client, "bad id with spaces")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_conversation_id"
