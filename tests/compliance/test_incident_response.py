"""HIPAA 164.308(a)(6): the incident-response plan attested with an expiry (author shown), and an
alert channel proven by a delivered alert to a real local webhook."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from time_machine import travel

from apps.audit.selectors import delivery_of
from apps.audit.services import send_test_alert
from apps.audit.tasks import deliver_alert_task
from apps.compliance.models import Attestation
from apps.compliance.services import upload_attestation

from .conftest import check_of, evaluate
from .receivers import Receiver

pytestmark = pytest.mark.django_db
CONTROL = "164.308(a)(6)"


@pytest.fixture
def receiver(settings):
    rec = Receiver()
    settings.ALERT_WEBHOOK_URL = rec.url
    settings.ALERT_MAX_ATTEMPTS = 1
    yield rec
    rec.stop()


def prove_channel():
    delivery = delivery_of(send_test_alert(actor=None))
    deliver_alert_task.apply(args=[delivery.pk])


def attest(officer, days: int = 365) -> Attestation:
    return upload_attestation(
        profile="hipaa",
        control_id=CONTROL,
        content=b"%PDF incident response plan v3, approved by the CISO",
        file_name="ir-plan-v3.pdf",
        expires_at=timezone.now() + timedelta(days=days),
        actor=officer,
    )


def test_plan_and_proven_channel_pass(receiver, officer_user):
    status, evidence, _ = evaluate("hipaa", CONTROL)
    assert status == "fail"  # no alert ever delivered (and no plan: manual)
    assert check_of(evidence, "manual.attestation")["status"] == "manual"
    assert check_of(evidence, "alerts.delivery_proven")["status"] == "fail"
    prove_channel()
    assert evaluate("hipaa", CONTROL)[0] == "manual"  # channel proven, plan not attested
    attest(officer_user)
    status, evidence, _ = evaluate("hipaa", CONTROL)
    assert status == "pass", evidence
    plan = check_of(evidence, "manual.attestation")
    assert plan["uploaded_by"] == "sofia" and plan["file"] == "ir-plan-v3.pdf" and plan["expires_at"]


def test_expired_plan_fails(receiver, officer_user):
    prove_channel()
    attest(officer_user, days=30)
    with travel(timezone.now() + timedelta(days=31)):
        status, evidence, remedy = evaluate("hipaa", CONTROL)
    assert status == "fail" and check_of(evidence, "manual.attestation")["status"] == "fail"


def test_channel_down_fails_even_with_a_plan(receiver, officer_user):
    attest(officer_user)
    prove_channel()
    assert evaluate("hipaa", CONTROL)[0] == "pass"
    receiver.stop()
    prove_channel()  # the last delivery fails
    status, evidence, _ = evaluate("hipaa", CONTROL)
    assert status == "fail" and "not acknowledged" in check_of(evidence, "alerts.delivery_proven")["summary"]
