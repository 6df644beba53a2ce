"""Starting a KEK rotation from the admin (issue 17): the officer's form calls keys.services.start_rotation
(audited), the rotation's page shows re-wrapped / total and reloads while it runs; the auditor and the
admin role get no button and a 403; every page names the provider that really wraps."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.keys.models import KekRotation, RotationState
from apps.keys.tasks import rewrap_task
from tests.conftest import otp_login
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db
START = "/admin/keys/kekrotation/start/"


def _client(user) -> Client:
    client = Client()
    otp_login(client, user)
    return client


def test_officer_starts_a_rotation_and_watches_it(officer_user, staff_user, django_capture_on_commit_callbacks):
    ModelVersionFactory(model_name="m1", actor=staff_user)
    client = _client(officer_user)
    form = client.get(START).content.decode()
    assert "Local key file on this server" in form and "not an HSM" in form

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(START, {"reason": "yearly rotation"})

    rotation = KekRotation.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/kekrotation/{rotation.pk}/change/")
    assert len(queued) == 1  # the re-wrap is queued after commit
    event = AuditEvent.objects.get(event_type="keys.kek.rotate")
    assert (event.actor_id, event.details["reason"]) == (officer_user.pk, "yearly rotation")
    running = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' in running and f"0 of {rotation.total} data keys re-wrapped" in running

    rewrap_task.apply(args=[rotation.pk])  # the worker

    rotation.refresh_from_db()
    assert rotation.state == RotationState.DONE
    done = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in done and f"{rotation.total} of {rotation.total}" in done


def test_only_the_officer_may_start_one(auditor_user, staff_user):
    auditor = _client(auditor_user)
    assert b"Start a rotation" not in auditor.get("/admin/keys/kekrotation/").content
    assert auditor.get(START).status_code == 403
    assert auditor.post(START, {"reason": "x"}).status_code == 403
    assert _client(staff_user).post(START, {"reason": "x"}).status_code == 403
    assert not KekRotation.objects.exists()


def test_the_key_list_says_where_keys_are_wrapped(officer_user):
    page = _client(officer_user).get("/admin/keys/keyencryptionkey/").content.decode()
    assert "New data keys are wrapped by" in page and "Local key file on this server" in page
    assert "in the HSM" not in page
