"""What is kept of prompts and answers (issue 13): nothing, a digest, or the de-identified exchange
encrypted under a data key wrapped by the KEK; read only by the auditor, from a session, each read
audited; deleted on request (tombstone); purged after its retention period, with the day's key
destroyed once nothing uses it."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.gateway.models import ExchangeDataKey, RetainedExchange
from apps.gateway.services import exchange_document, purge_expired_exchanges, retain_exchange
from apps.keys.models import DataKey
from tests.conftest import grant
from tests.factories import ModelVersionFactory, token_for
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db
URL = "/api/v1/llm/exchanges/"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "病人 [NAME] 的血压？"}]
ANSWER = "120/80 毫米汞柱"


@pytest.fixture
def chat():
    return ModelVersionFactory(model_name="chat").model


def keep(chat, user, retention="full", rid="req-1", days=30, at=None):
    return retain_exchange(
        policy={"retention": retention, "retention_days": days},
        request_id=rid,
        model_id=chat.pk,
        model_name=chat.name,
        user_id=user.pk,
        username=user.username,
        messages=MESSAGES,
        answer=ANSWER,
        at=at,
    )


def test_none_keeps_nothing(chat, plain_user):
    assert keep(chat, plain_user, "none") is None
    assert not RetainedExchange.objects.exists()


def test_digest_keeps_the_sha256_of_the_exchange_only(chat, plain_user):
    row = keep(chat, plain_user, "digest")
    assert row.digest == hashlib.sha256(exchange_document(MESSAGES, ANSWER)).hexdigest()
    assert row.ciphertext is None and row.key is None


def test_full_is_encrypted_under_one_data_key_per_model_and_day(chat, plain_user):
    first, second = keep(chat, plain_user, rid="a"), keep(chat, plain_user, rid="b")
    other = keep(ModelVersionFactory(model_name="other").model, plain_user, rid="c")

    assert first.key_id == second.key_id != other.key_id
    assert ExchangeDataKey.objects.count() == 2
    assert DataKey.objects.filter(purpose="llm_exchange").count() == 2
    for row in (first, second):
        blob = bytes(row.ciphertext)
        assert ANSWER.encode() not in blob and "血压".encode() not in blob
    assert first.expires_at - first.at == timedelta(days=30)


def test_the_auditor_reads_it_and_the_read_is_audited(chat, plain_user, auditor_user):
    row = keep(chat, plain_user)

    r = session_api(auditor_user).get(f"{URL}{row.pk}/")

    assert r.status_code == 200
    body = r.json()
    assert body["messages"] == MESSAGES and body["answer"] == ANSWER
    assert (body["request_id"], body["model"], body["user"]) == ("req-1", "chat", "alice")
    event = AuditEvent.objects.get(event_type="llm.exchange.read")
    assert (event.outcome, event.actor_id, event.target_id) == ("success", auditor_user.pk, str(row.pk))
    assert ANSWER not in str(event.details)


def test_nobody_else_reads_the_content(chat, plain_user, staff_user, officer_user, guest_user):
    row = keep(chat, plain_user)
    grant(plain_user, chat)
    for user in (plain_user, staff_user, officer_user, guest_user):
        assert session_api(user).get(f"{URL}{row.pk}/").status_code == 403, user
    assert not AuditEvent.objects.filter(event_type="llm.exchange.read", outcome="success").exists()


def test_the_auditor_reads_no_content_with_a_token_and_the_refusal_is_audited(chat, plain_user, auditor_user):
    row = keep(chat, plain_user)
    api = APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(auditor_user, scopes=['read', 'manage'])}")

    r = api.get(f"{URL}{row.pk}/")

    assert (r.status_code, r.json()["code"]) == (403, "token_not_allowed")
    event = AuditEvent.objects.get(event_type="llm.exchange.read")
    assert (event.outcome, event.error_code) == ("denied", "token_not_allowed")
    assert api.get(URL).status_code == 200  # the metadata list is fine with a token
    assert api.delete(f"{URL}{row.pk}/", {"reason": "x"}, format="json").status_code == 403  # no token deletes


def test_the_list_is_metadata_for_auditor_and_officer_only(chat, plain_user, auditor_user, officer_user, staff_user):
    keep(chat, plain_user)
    for user in (auditor_user, officer_user):
        listed = session_api(user).get(URL).json()["results"]
        assert [(x["request_id"], x["user"]) for x in listed] == [("req-1", "alice")]
        assert "ciphertext" not in listed[0] and "messages" not in listed[0]
    for user in (staff_user, plain_user):
        assert session_api(user).get(URL).status_code == 403


def test_deletion_on_request_leaves_a_tombstone_and_reads_then_410(chat, plain_user, officer_user, auditor_user):
    row = keep(chat, plain_user)
    assert session_api(officer_user).delete(f"{URL}{row.pk}/", {}, format="json").json()["code"] == "reason_required"

    r = session_api(officer_user).delete(f"{URL}{row.pk}/", {"reason": "patient request #42"}, format="json")

    assert r.status_code == 200 and r.json()["deleted_at"]
    row.refresh_from_db()
    assert (row.ciphertext, row.digest, row.key_id, row.deletion_reason) == (None, "", None, "patient request #42")
    again = session_api(officer_user).delete(f"{URL}{row.pk}/", {"reason": "twice"}, format="json")
    assert (again.status_code, again.json()["code"]) == (409, "already_deleted")
    read = session_api(auditor_user).get(f"{URL}{row.pk}/")
    assert (read.status_code, read.json()["code"]) == (410, "exchange_deleted")
    kinds = list(AuditEvent.objects.filter(event_group="llm").values_list("event_type", "outcome"))
    assert ("llm.exchange.delete", "success") in kinds and ("llm.exchange.read", "failure") in kinds


def test_analysts_admins_and_auditors_cannot_delete(chat, plain_user, staff_user, auditor_user):
    row = keep(chat, plain_user)
    for user in (plain_user, staff_user, auditor_user):
        assert session_api(user).delete(f"{URL}{row.pk}/", {"reason": "mine"}, format="json").status_code == 403
    row.refresh_from_db()
    assert row.ciphertext is not None


def test_a_ciphertext_moved_to_another_row_does_not_open(chat, plain_user, auditor_user):
    a, b = keep(chat, plain_user, rid="a"), keep(chat, plain_user, rid="b")
    RetainedExchange.objects.filter(pk=b.pk).update(ciphertext=a.ciphertext)  # AAD binds the request id

    r = session_api(auditor_user).get(f"{URL}{b.pk}/")

    assert (r.status_code, r.json()["code"]) == (409, "exchange_corrupt")
    assert "120/80" not in r.content.decode()
    assert AuditEvent.objects.get(event_type="llm.exchange.read").error_code == "exchange_corrupt"


def test_purge_deletes_expired_rows_and_destroys_idle_day_keys(chat, plain_user):
    long_ago = timezone.now() - timedelta(days=10)
    old = keep(chat, plain_user, rid="old", days=5, at=long_ago)
    tomb = keep(chat, plain_user, rid="kept", days=30, at=long_ago)
    fresh = keep(chat, plain_user, rid="new", days=30)
    RetainedExchange.objects.filter(pk=tomb.pk).update(ciphertext=None, key=None, deleted_at=timezone.now())

    result = purge_expired_exchanges()

    assert result == {"deleted": 1, "keys_destroyed": 1}
    assert set(RetainedExchange.objects.values_list("request_id", flat=True)) == {"kept", "new"}
    assert DataKey.objects.get(pk=old.key.data_key_id).is_destroyed
    assert not DataKey.objects.get(pk=fresh.key.data_key_id).is_destroyed
    assert AuditEvent.objects.filter(event_type="llm.exchange.purge").count() == 1
    assert purge_expired_exchanges() == {"deleted": 0, "keys_destroyed": 0}


def test_the_beat_schedules_the_purge(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "apps.gateway.tasks.purge_expired_exchanges" in tasks
