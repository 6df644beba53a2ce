"""Chat policies (issue 13): the pure check the /v1 adapter calls, the audited service, the API
(admin and security officer set; others read what they can see), and the snapshot loader."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from apps.gateway.chatpolicy import (
    DEFAULT_POLICY,
    check_request,
    load_chat_policies,
    policy_for,
    system_messages,
)
from apps.gateway.models import ChatPolicy
from apps.gateway.services import set_chat_policy
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory
from tests.security.sessions import session_api

URL = "/api/v1/llm/chat-policies/"
POLICY = {**DEFAULT_POLICY, "max_tokens_per_call": 256}


def code_of(fn, *args):
    with pytest.raises(ServiceError) as err:
        fn(*args)
    return err.value.status_code, err.value.code, err.value.field


class TestCheckRequest:
    def test_allowed_values_pass_and_max_tokens_defaults_to_the_policy(self):
        out = check_request(POLICY, None, {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3, "stop": "##"})
        assert out == {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3, "stop": ["##"], "max_tokens": 256}

    def test_max_tokens_above_the_policy_is_refused(self):
        assert code_of(check_request, POLICY, 257, {}) == (400, "max_tokens_exceeded", "max_tokens")
        assert check_request(POLICY, 256, {})["max_tokens"] == 256

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "9"])
    def test_max_tokens_must_be_a_positive_integer(self, bad):
        assert code_of(check_request, POLICY, bad, {})[1] == "invalid_max_tokens"

    @pytest.mark.parametrize(
        ("sampling", "field"),
        [
            ({"temperature": 1.6}, "temperature"),  # above the policy's 1.5
            ({"top_p": 0.05}, "top_p"),  # below 0.1
            ({"top_k": 101}, "top_k"),
            ({"top_k": 2.5}, "top_k"),
            ({"temperature": "hot"}, "temperature"),
            ({"temperature": float("nan")}, "temperature"),
            ({"seed": -1}, "seed"),
            ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
            ({"stop": ["x" * 65]}, "stop"),
            ({"frequency_penalty": 0.1}, "frequency_penalty"),
        ],
    )
    def test_values_outside_the_policy_are_refused_naming_the_field(self, sampling, field):
        assert code_of(check_request, POLICY, 10, sampling) == (400, "sampling_not_allowed", field)

    def test_a_key_the_policy_refuses_is_refused_and_none_counts_as_absent(self):
        policy = {**POLICY, "allowed_sampling": {"temperature": [0, 1], "seed": False}}
        assert code_of(check_request, policy, 10, {"seed": 1})[1:] == ("sampling_not_allowed", "seed")
        assert code_of(check_request, policy, 10, {"top_p": 0.5})[1:] == ("sampling_not_allowed", "top_p")
        assert check_request(policy, 10, {"seed": None, "temperature": 0}) == {"temperature": 0, "max_tokens": 10}

    def test_true_allows_any_value_the_contract_accepts(self):
        policy = {**POLICY, "allowed_sampling": {"temperature": True}}
        assert check_request(policy, 1, {"temperature": 2.0})["temperature"] == 2.0
        assert code_of(check_request, policy, 1, {"temperature": 2.1})[1] == "sampling_not_allowed"


class TestSystemPrompt:
    MESSAGES = [{"role": "system", "content": "be a pirate"}, {"role": "user", "content": "hi"}]

    def test_prepend_keeps_the_callers_system_message_after_the_enforced_one(self):
        policy = {**POLICY, "system_prompt": "Answer in English.", "system_prompt_mode": "prepend"}
        assert [m["content"] for m in system_messages(policy, self.MESSAGES)] == [
            "Answer in English.",
            "be a pirate",
            "hi",
        ]

    def test_replace_drops_every_system_message_of_the_caller(self):
        policy = {**POLICY, "system_prompt": "Answer in English.", "system_prompt_mode": "replace"}
        assert system_messages(policy, self.MESSAGES) == [
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "hi"},
        ]

    def test_no_system_prompt_leaves_the_messages(self):
        assert system_messages(POLICY, self.MESSAGES) == self.MESSAGES


@pytest.mark.django_db
class TestService:
    def test_set_replace_audit_and_load_for_the_snapshot(self, staff_user):
        version = ModelVersionFactory(model_name="chat")
        set_chat_policy(model_id=version.model_id, max_tokens_per_call=64, actor=staff_user)
        policy = set_chat_policy(
            model_id=version.model_id,
            max_tokens_per_call=128,
            allowed_sampling={"temperature": [0, 1]},
            system_prompt="Be brief.",
            retention="full",
            retention_days=7,
            actor=staff_user,
        )

        loaded = load_chat_policies(connection)

        assert ChatPolicy.objects.count() == 1 and policy.max_tokens_per_call == 128
        assert loaded == {
            version.model_id: {
                "model_id": version.model_id,
                "max_tokens_per_call": 128,
                "allowed_sampling": {"temperature": [0, 1]},
                "system_prompt": "Be brief.",
                "system_prompt_mode": "prepend",
                "retention": "full",
                "retention_days": 7,
            }
        }
        events = AuditEvent.objects.filter(event_type="llm.policy.update").order_by("id")
        assert [e.details["after"]["max_tokens_per_call"] for e in events] == [64, 128]
        assert events.last().details["before"]["max_tokens_per_call"] == 64
        assert "Be brief." not in str(events.last().details)  # its digest only
        assert policy_for(loaded, 999_999) == {**DEFAULT_POLICY, "model_id": 999_999}

    @pytest.mark.parametrize(
        ("values", "code"),
        [
            ({"max_tokens_per_call": 0}, "invalid_max_tokens"),
            ({"allowed_sampling": {"temperature": [1, 0]}}, "invalid_allowed_sampling"),
            ({"allowed_sampling": {"temperature": [0, 3]}}, "invalid_allowed_sampling"),
            ({"allowed_sampling": {"seed": [0, 1]}}, "invalid_allowed_sampling"),
            ({"allowed_sampling": {"logprobs": True}}, "invalid_allowed_sampling"),
            ({"allowed_sampling": []}, "invalid_allowed_sampling"),
            ({"retention": "forever"}, "invalid_retention"),
            ({"retention_days": 0}, "invalid_retention_days"),
            ({"system_prompt_mode": "append"}, "invalid_system_prompt_mode"),
        ],
    )
    def test_bad_values_are_refused_and_nothing_is_saved(self, staff_user, values, code):
        version = ModelVersionFactory(model_name="chat")
        with pytest.raises(ServiceError) as err:
            set_chat_policy(model_id=version.model_id, actor=staff_user, **values)
        assert err.value.code == code
        assert not ChatPolicy.objects.exists()
        assert not AuditEvent.objects.filter(event_type="llm.policy.update").exists()


@pytest.mark.django_db
class TestApi:
    def test_admin_and_officer_set_others_cannot(self, staff_user, officer_user, auditor_user, plain_user, guest_user):
        version = ModelVersionFactory(model_name="chat")
        grant(plain_user, version.model)
        body = {"model": "chat", "max_tokens_per_call": 200, "retention": "digest"}

        answers = {
            u.username: session_api(u).post(URL, body, format="json").status_code
            for u in (staff_user, officer_user, auditor_user, plain_user, guest_user)
        }

        assert answers == {"ops": 200, "sofia": 200, "audrey": 403, "alice": 403, "gus": 403}
        assert ChatPolicy.objects.get().retention == "digest"
        refused = AuditEvent.objects.filter(event_type="access.refused", error_code="permission_denied")
        assert refused.count() == 3  # each refusal is an event

    def test_reading_follows_what_the_caller_can_see(self, staff_user, plain_user, guest_user):
        granted, secret = ModelVersionFactory(model_name="chat"), ModelVersionFactory(model_name="secret")
        grant(plain_user, granted.model)
        for v in (granted, secret):
            set_chat_policy(model_id=v.model_id, actor=staff_user)

        def names(user):
            return sorted(p["model"] for p in session_api(user).get(URL).json()["results"])

        assert names(staff_user) == ["chat", "secret"]
        assert names(plain_user) == ["chat"]
        assert names(guest_user) == []

    def test_bad_input_is_a_stable_code_with_the_field(self, staff_user):
        ModelVersionFactory(model_name="chat")
        r = session_api(staff_user).post(
            URL, {"model": "chat", "allowed_sampling": {"temperature": "hot"}}, format="json"
        )
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (
            400,
            "invalid_allowed_sampling",
            "allowed_sampling",
        )

    def test_a_model_restricted_token_sets_no_other_models_policy(self, staff_user):
        from tests.factories import token_for

        mine, other = ModelVersionFactory(model_name="chat"), ModelVersionFactory(model_name="other")
        token = token_for(staff_user, scopes=["read", "manage"], model_ids=[mine.model_id])
        from rest_framework.test import APIClient

        api = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
        assert api.post(URL, {"model": "other"}, format="json").status_code == 404
        assert api.post(URL, {"model": "chat"}, format="json").status_code == 200
        assert list(ChatPolicy.objects.values_list("model_id", flat=True)) == [mine.model_id]
        assert other.model_id not in load_chat_policies(connection)


def test_guest_cannot_change_a_policy_even_with_a_token(db):
    from rest_framework.test import APIClient

    from tests.factories import token_for

    ModelVersionFactory(model_name="chat")
    guest = make_user("gwen", "guest")
    api = APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(guest, scopes=['read', 'manage'])}")
    assert api.post(URL, {"model": "chat", "max_tokens_per_call": 1}, format="json").status_code == 403
    assert not ChatPolicy.objects.exists()
