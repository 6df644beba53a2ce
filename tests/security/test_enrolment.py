"""Privileged enrolment without trust on first use (issue 10, item 3): the TOTP of a new
privileged account is enrolled only with the one-time code the officer received when assigning
the role; the password alone enrols nothing; the code is single use, expires, and its issue and
use are audited; the device and its events commit together.

Personas: sofia (officer) who makes alice (analyst) an auditor; alice at the setup page."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.roles import AUDITOR
from apps.audit.models import AuditEvent
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db

SETUP = "/accounts/2fa/setup/"


def current(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}"


def make_auditor(officer, user) -> str:
    """The officer assigns the role through the API; the answer carries the enrolment code."""
    resp = session_api(officer).post(f"/api/v1/accounts/users/{user.pk}/roles/", {"role": AUDITOR}, format="json")
    assert resp.status_code == 200, resp.json()
    return resp.json()["enrolment_code"]


def password_session(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def events(event_type: str):
    return AuditEvent.objects.filter(event_type=event_type).order_by("id")


class TestPasswordAloneCannotEnrol:
    def test_setup_page_shows_no_secret_and_confirms_nothing_without_the_code(self, officer_user, plain_user):
        make_auditor(officer_user, plain_user)
        client = password_session(plain_user)

        page = client.get(SETUP)
        assert page.status_code == 200
        assert "Enrolment code" in page.content.decode()
        assert "Key: <code>" not in page.content.decode()  # no QR code, no key
        # Whatever secret a device might have, a TOTP code alone confirms nothing.
        for device in TOTPDevice.objects.filter(user=plain_user):
            client.post(SETUP, {"code": current(device)})
        client.post(SETUP, {"code": "123456"})

        assert not TOTPDevice.objects.filter(user=plain_user, confirmed=True).exists()
        assert redirect_path(client.get("/admin/")) == SETUP

    def test_wrong_code_is_refused_and_audited(self, officer_user, plain_user):
        make_auditor(officer_user, plain_user)
        client = password_session(plain_user)

        resp = client.post(SETUP, {"enrolment_code": "AAAA-BBBB-CCCC-DDDD"})

        assert resp.status_code == 200
        assert "wrong, spent or expired" in resp.content.decode()
        assert events("auth.2fa.failure").get().error_code == "enrolment_code_invalid"
        assert not TOTPDevice.objects.filter(user=plain_user).exists()

    def test_wrong_code_is_refused_in_the_page_language(self, officer_user, plain_user):
        """nu18's first `make run`: the Chinese enrolment page answered a mistyped code in English."""
        make_auditor(officer_user, plain_user)
        client = password_session(plain_user)

        page = client.post(SETUP, {"enrolment_code": "AAAA-BBBB-CCCC-DDDD"}, HTTP_ACCEPT_LANGUAGE="zh-hans")

        assert "注册码错误、已使用或已过期" in page.content.decode()
        assert "wrong, spent or expired" not in page.content.decode()


def redirect_path(resp) -> str:
    assert resp.status_code == 302
    return resp["Location"].split("?")[0]


class TestWithTheCode:
    def test_code_then_totp_enrols_and_is_audited(self, officer_user, plain_user):
        code = make_auditor(officer_user, plain_user)
        issued = events("auth.enrolment.issue").get()
        assert (issued.actor, issued.target_id) == (officer_user, str(plain_user.pk))
        assert code not in str(issued.details)
        client = password_session(plain_user)

        assert redirect_path(client.post(SETUP, {"enrolment_code": code.lower().replace("-", " ")})) == SETUP
        page = client.get(SETUP)
        assert "Key: <code>" in page.content.decode()
        device = TOTPDevice.objects.get(user=plain_user, confirmed=False)
        resp = client.post(SETUP, {"code": current(device), "next": "/admin/"})

        assert redirect_path(resp) == "/admin/"
        device.refresh_from_db()
        assert device.confirmed
        used = events("auth.enrolment.use").get()
        enrol = events("auth.2fa.enrol").get()
        assert (used.actor, used.details["code_id"], enrol.details["enrolment_code"]) == (
            plain_user,
            issued.details["code_id"],
            issued.details["code_id"],
        )
        assert client.get("/admin/").status_code == 200

    def test_code_is_single_use(self, officer_user, plain_user):
        code = make_auditor(officer_user, plain_user)
        first = password_session(plain_user)
        first.post(SETUP, {"enrolment_code": code})
        first.get(SETUP)
        first.post(SETUP, {"code": current(TOTPDevice.objects.get(user=plain_user))})
        TOTPDevice.objects.filter(user=plain_user).delete()  # the phone is lost; the code must not work again

        second = password_session(plain_user)
        resp = second.post(SETUP, {"enrolment_code": code})

        assert "wrong, spent or expired" in resp.content.decode()

    def test_code_expires(self, officer_user, plain_user):
        code = make_auditor(officer_user, plain_user)

        with time_machine.travel(timezone.now() + settings.ENROLMENT_CODE_LIFETIME + timedelta(seconds=1)):
            resp = password_session(plain_user).post(SETUP, {"enrolment_code": code})

        assert "wrong, spent or expired" in resp.content.decode()
        assert timedelta(hours=24) == settings.ENROLMENT_CODE_LIFETIME

    def test_a_secret_seen_before_the_code_is_worthless(self, officer_user, plain_user):
        """Someone with the password who looked at the page earlier holds no device that will be
        confirmed: accepting the code creates a fresh device."""
        code = make_auditor(officer_user, plain_user)
        early = TOTPDevice.objects.create(user=plain_user, confirmed=False, name="authenticator")
        client = password_session(plain_user)

        client.post(SETUP, {"enrolment_code": code})

        assert not TOTPDevice.objects.filter(pk=early.pk).exists()


class TestRoleAssignmentVoidsDevices:
    def test_privileged_role_voids_existing_devices(self, officer_user, plain_user):
        TOTPDevice.objects.create(user=plain_user, confirmed=True, name="self-chosen")

        make_auditor(officer_user, plain_user)

        assert not TOTPDevice.objects.filter(user=plain_user).exists()
        event = events("auth.role.assign").get()
        assert event.details["totp_devices_voided"] == 1

    def test_privileged_break_glass_also_comes_with_a_code(self, officer_user, plain_user):
        resp = session_api(officer_user).post(
            "/api/v1/accounts/break-glass/",
            {"user": plain_user.pk, "role": AUDITOR, "minutes": 30, "reason": "incident"},
            format="json",
        )

        assert resp.status_code == 201
        assert resp.json()["enrolment_code"]


class TestAtomicEnrolment:
    def test_a_failed_audit_write_leaves_the_device_unconfirmed_and_the_code_unspent(
        self, officer_user, plain_user, monkeypatch
    ):
        from apps.accounts.services import enrolment
        from apps.audit.services import AuditUnavailable, record_event

        code = make_auditor(officer_user, plain_user)
        client = password_session(plain_user)
        client.post(SETUP, {"enrolment_code": code})
        client.get(SETUP)
        device = TOTPDevice.objects.get(user=plain_user)

        def failing(event_type, **kwargs):
            if event_type == "auth.2fa.enrol":
                raise AuditUnavailable()
            return record_event(event_type, **kwargs)

        monkeypatch.setattr(enrolment, "record_event", failing)
        client.raise_request_exception = False
        client.post(SETUP, {"code": current(device)})

        device.refresh_from_db()
        assert not device.confirmed
        assert not events("auth.enrolment.use").exists()
        assert plain_user.enrolment_codes.get().used_at is None
