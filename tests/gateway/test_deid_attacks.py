"""Attacks on de-identification 2 (surrogates, answer screen), each found by trying it: the test
fails on the defect it names."""

from __future__ import annotations

import json
import re

import pytest

from apps.compliance.services import set_model_policy
from apps.gateway.dataplane.openai import _surrogates
from apps.gateway.deid import AnswerScreen, Reidentifier, SurrogateMap, deidentify, screen_text
from tests.factories import token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client
from tests.gateway.test_openai_adapter import chat_model  # noqa: F401 - fixture


def _surrogate_of(mapping: SurrogateMap, kind: str) -> str:
    return next(s for s, (_orig, k) in mapping.reverse.items() if k == kind)


# -- a short surrogate must not punch holes in the answer screen --------------------------------


def test_a_short_allowed_surrogate_does_not_blank_part_of_a_real_identifier():
    """Surrogate AGE "96" is allowed in the answer; it used to be blanked wherever it occurred,
    inside a phone number or an SSN too, so those passed the screen unredacted."""
    mapping = SurrogateMap()
    deidentify("Patient aged 95, seen today.", "surrogate", mapping=mapping)
    age = _surrogate_of(mapping, "AGE")
    allowed = _surrogates(mapping)
    answer = f"Call (617) 555-01{age} or check SSN 123-45-67{age}; the patient is {age}."
    result = screen_text(answer, "redact", allowed)
    assert f"555-01{age}" not in result.text and f"45-67{age}" not in result.text, result.text
    assert result.found.get("PHONE") == 1 and result.found.get("SSN") == 1
    assert result.text.endswith(f"the patient is {age}.")  # the surrogate itself still passes

    screen = AnswerScreen("redact", allowed=allowed)  # streamed: the same
    streamed = "".join(screen.feed(answer[i : i + 3]) for i in range(0, len(answer), 3)) + screen.finish()
    assert streamed == result.text


def test_an_allowed_surrogate_name_token_does_not_blank_part_of_a_longer_word():
    mapping = SurrogateMap()
    deidentify("Seen by Dr. John Smith.", "surrogate", mapping=mapping)
    allowed = _surrogates(mapping)
    token = max((t for t in mapping.tokens.values()), key=len)
    text = f"Email {token.lower()}9@hospital.org"  # an address that starts with the token
    assert "@hospital.org" not in screen_text(text, "redact", allowed).text


def test_a_surrogate_chinese_surname_alone_does_not_open_the_screen_for_every_name_with_it():
    """The allowed set held each Han surname token alone ("王"): blanked wherever it stood, it took
    the surname off every Chinese name in the answer, and the rest was not seen as a name."""
    mapping = SurrogateMap()
    deidentify("患者张伟，男，45岁。", "surrogate", mapping=mapping)
    surname = mapping.tokens["zh:张"]
    answer = f"另一位患者{surname}小明，男，50岁。"
    result = screen_text(answer, "redact", _surrogates(mapping))
    assert f"{surname}小明" not in result.text, result.text
    assert result.found.get("NAME") == 1


# -- a real identifier equal to an issued surrogate ---------------------------------------------


def test_a_real_identifier_equal_to_an_issued_surrogate_is_still_replaced_and_not_merged():
    """A value equal to one of the mapping's surrogates was "left as it is" (a caller echoing
    what it was given): a REAL date or name that happens to equal a surrogate then reached the
    model verbatim, and the re-identifier turned it into the other patient's original."""
    mapping = SurrogateMap()
    first = deidentify("Admitted 2024-03-05.", "surrogate", mapping=mapping).text
    collide = re.search(r"2024-\d\d-\d\d", first).group(0)  # the surrogate of 2024-03-05
    text = f"Admitted 2024-03-05, discharged {collide}. Seen by John Smith, then by NAME."
    mapping2 = SurrogateMap.from_bytes(mapping.to_bytes())
    deidentify("Seen by John Smith.", "surrogate", mapping=mapping2)
    name = _surrogate_of(mapping2, "NAME")
    text = text.replace("NAME", name)
    out = deidentify(text, "surrogate", mapping=mapping2).text
    assert out.count(collide) == 1, out  # the real discharge date got a surrogate of its own
    assert out.count(name) == 1, out  # and so did the real person who bears the surrogate name
    reid = Reidentifier(mapping2)
    assert reid.reidentify(out) == text  # each comes back as itself, not as the other


def test_a_fresh_surrogate_never_equals_an_original_the_mapping_already_holds():
    """A surrogate equal to another original of the patient would put that real value in the
    prompt (as someone else's surrogate)."""
    mapping = SurrogateMap()
    originals = [f"2024-{m:02d}-{d:02d}" for m in range(1, 5) for d in range(1, 26)]  # 100 dates
    for value in originals:
        mapping.surrogate("DATE", value)
    later = [mapping.surrogate("DATE", f"2024-{m:02d}-{d:02d}") for m in range(5, 13) for d in (27, 28)]
    assert not set(later) & set(originals)


@pytest.fixture
def surrogate_model(chat_model, plain_user):  # noqa: F811
    set_model_policy(model_id=chat_model.pk, phi=True, deid_mode="surrogate", actor=None)
    return chat_model


# -- a conversation's mapping cannot grow without bound -----------------------------------------


@pytest.mark.django_db
def test_a_conversation_mapping_is_capped_and_a_call_past_the_cap_is_refused_before_forwarding(
    surrogate_model, plain_user, fake_triton, settings
):
    """Each call of a conversation added its identifiers to the mapping, with no limit and the TTL
    renewed: one invoke holder could grow it to 100,000s of entries, and every later call of that
    conversation decrypted and parsed it, built the re-identifier and screened each streamed delta
    against all its surrogates ON THE EVENT LOOP (60,000 entries: ~0.5 s per load, ~6 ms per
    delta) — every call on that worker stalled."""
    settings.DEID_CONVERSATION_MAX_ENTRIES = 5
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")

    def call(mrns):
        text = " ".join(f"MRN {m}," for m in mrns)
        body = {"model": "chat", "messages": [{"role": "user", "content": text}]}
        return client.post("/v1/chat/completions", data=json.dumps(body), HTTP_X_SOVEREIGN_CONVERSATION="big")

    assert call([4839201, 4839202, 4839203]).status_code == 200
    sent = len(fake_triton.requests)
    response = call([4839204, 4839205, 4839206])  # 6 entries in the conversation: over the cap
    assert response.status_code == 413, response.content
    assert response.json()["error"]["code"] == "deid_conversation_full"
    assert len(fake_triton.requests) == sent  # nothing forwarded
    assert call([4839201]).status_code == 200  # the stored mapping was not grown by the refused call


def test_the_documented_conversation_ttl_variable_is_read_from_the_environment():
    """docs/deidentification.md documents SOVEREIGN_DEID_CONVERSATION_TTL; settings never read it
    (surrogates.py fell back to 3600 whatever the operator set)."""
    from django.conf import settings as django_settings

    assert isinstance(django_settings.DEID_CONVERSATION_TTL, int)
    assert isinstance(django_settings.DEID_CONVERSATION_MAX_ENTRIES, int)
