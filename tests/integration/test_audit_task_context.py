"""The request id (and acting user) travel from the web process into a Celery task through the
message headers, so the events a real worker writes carry the id of the request that caused them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import ModelUserGrant
from apps.accounts.roles import ANALYST
from apps.accounts.tasks import purge_expired_grants
from apps.audit.models import AuditEvent
from apps.core.context import bound_request_id
from apps.registry.models import Model
from tests.conftest import grant, make_user
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_worker_events_carry_the_request_id(celery_worker):
    user = make_user("tempo", ANALYST)
    model = Model.objects.create(name="ctx-model")
    grant(user, model, expires_at=timezone.now() + timedelta(hours=1))
    ModelUserGrant.objects.filter(user=user).update(expires_at=timezone.now() - timedelta(seconds=1))

    with bound_request_id("req-into-worker"):
        purge_expired_grants.delay()

    event = wait_for(
        lambda: AuditEvent.objects.filter(event_type="access.grant.expire").first(), 60, what="the worker's event"
    )
    assert event.request_id == "req-into-worker"
    bridged = AuditEvent.objects.filter(
        event_type="audit.field_change", target_type="accounts.modelusergrant", details__action="delete"
    )
    assert bridged.exists() and {e.request_id for e in bridged} == {"req-into-worker"}
