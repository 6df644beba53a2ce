"""The quota API (issue 13): admin and security officer set and remove quotas (audited, one row per
subject and model), privileged roles read them, nobody else; bad input is a stable code."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection

from apps.audit.models import AuditEvent
from apps.gateway.models import Quota
from apps.gateway.quota import load_quotas
from tests.factories import ModelVersionFactory
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db
URL = "/api/v1/llm/quotas/"


def test_set_replace_read_and_remove(staff_user, officer_user, auditor_user, plain_user):
    ModelVersionFactory(model_name="chat")
    body = {"scope": "user", "subject": plain_user.pk, "model": "chat", "tokens_per_day": 1000}
    admin = session_api(staff_user)

    first = admin.post(URL, body, format="json")
    second = session_api(officer_user).post(
        URL, {**body, "tokens_per_day": 500, "requests_per_minute": 5}, format="json"
    )

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["id"] == second.json()["id"] and Quota.objects.count() == 1
    assert second.json()["tokens_per_day"] == 500 and second.json()["subject"] == plain_user.pk
    listed = session_api(auditor_user).get(URL).json()["results"]
    assert [(q["scope"], q["model"], q["requests_per_minute"]) for q in listed] == [("user", "chat", 5)]
    (limit,) = load_quotas(connection).by_subject[("user", plain_user.pk)]
    assert (limit.tokens_per_day, limit.requests_per_minute, limit.tokens_per_month) == (500, 5, None)
    assert admin.delete(f"{URL}{first.json()['id']}/").status_code == 204
    assert not Quota.objects.exists()
    kinds = list(AuditEvent.objects.filter(event_group="llm").order_by("id").values_list("event_type", flat=True))
    assert kinds == ["llm.quota.set", "llm.quota.set", "llm.quota.delete"]


def test_analysts_and_guests_neither_read_nor_set(plain_user, guest_user):
    for user in (plain_user, guest_user):
        api = session_api(user)
        assert api.get(URL).status_code == 403
        assert (
            api.post(URL, {"scope": "user", "subject": user.pk, "tokens_per_day": 10**9}, format="json").status_code
            == 403
        )
    assert not Quota.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"scope": "user", "subject": 999_999, "tokens_per_day": 1}, 404, "user_not_found"),
        ({"scope": "group", "subject": 999_999, "tokens_per_day": 1}, 404, "group_not_found"),
        ({"scope": "token", "subject": 999_999, "tokens_per_day": 1}, 404, "token_not_found"),
        ({"scope": "user", "subject": "@me"}, 400, "invalid_quota"),  # no limit at all
        ({"scope": "user", "subject": "@me", "tokens_per_day": -1}, 400, "invalid"),
        ({"scope": "team", "subject": "@me", "tokens_per_day": 1}, 400, "invalid"),
    ],
)
def test_bad_input_is_refused_and_nothing_saved(staff_user, body, status, code):
    body = {k: (staff_user.pk if v == "@me" else v) for k, v in body.items()}
    r = session_api(staff_user).post(URL, body, format="json")
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert not Quota.objects.exists()


def test_group_quota_on_all_models(staff_user):
    ward = Group.objects.create(name="ward-4")
    r = session_api(staff_user).post(URL, {"scope": "group", "subject": ward.pk, "tokens_per_month": 10}, format="json")
    assert r.status_code == 200 and r.json()["model"] is None
    assert Quota.objects.get().group_id == ward.pk
