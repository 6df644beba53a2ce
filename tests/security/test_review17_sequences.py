"""Review of issue 17's operator console as an attacker: sequences of two or three of a role's own
steps through the new pages (roles section, grants, own tokens, break-glass, exports, quotas), each
test a chain that worked before its fix (docs/access-control.md, "The policy of powers")."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import ApiToken, EnrolmentCode
from apps.accounts.roles import AUDITOR
from apps.accounts.services import issue_enrolment_code
from apps.audit.models import AuditEvent
from apps.gateway.models import LLMUsage
from apps.gateway.services import record_usage
from tests.conftest import otp_login
from tests.factories import ModelVersionFactory, token_for

pytestmark = pytest.mark.django_db


def session(user) -> Client:
    client = Client()
    otp_login(client, user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_a_role_on_the_superuser_leaves_its_second_factor_to_the_host(officer_user, admin_user):
    """An officer gave the superuser a privileged role on its user page (one click): the sealed
    account's authenticator was voided, the host's unspent enrolment code replaced, and the officer
    was shown a fresh enrolment code for the superuser — half of taking the sealed account over
    (its password is the other half). The superuser's second factor comes from the host only
    (`manage.py enrolment_code`, docs/access-control.md), as break-glass and "Remove second factor"
    already kept it."""
    TOTPDevice.objects.create(user=admin_user, name="root's authenticator", confirmed=True)
    host_code, _ = issue_enrolment_code(user=admin_user, actor=None)
    client = session(officer_user)

    response = client.post(
        reverse("admin:auth_user_roles", args=[admin_user.pk]), {"role": AUDITOR, "op": "assign"}, follow=True
    )

    assert admin_user.groups.filter(name=AUDITOR).exists()  # the role itself is the officer's to give
    assert not any("Enrolment code" in m for m in messages_of(response))
    assert TOTPDevice.objects.filter(user=admin_user, name="root's authenticator").exists()
    host_code.refresh_from_db()
    assert host_code.voided_at is None
    assert not EnrolmentCode.objects.filter(user=admin_user, issued_by=officer_user).exists()
    event = AuditEvent.objects.get(event_type="auth.role.assign", target_id=str(admin_user.pk))
    assert "enrolment_code" not in event.details and not event.details.get("totp_devices_voided")


def test_the_admin_reads_usage_without_the_token_inventory(staff_user, officer_user):
    """The admin role reads all usage but not the token inventory (no `accounts.view_apitoken`; the
    quota form names others' tokens by name and owner only): the usage row's page showed the
    officer's token as `name (svt_xxxxxx…)`, the first characters of its secret."""
    token_for(officer_user, name="officer-ci")
    token = ApiToken.objects.get(user=officer_user)
    version = ModelVersionFactory(model_name="chat-u", actor=staff_user)
    record_usage(
        request_id="r17-usage",
        user_id=officer_user.pk,
        username=officer_user.username,
        token_id=token.pk,
        model_id=version.model.pk,
        model_name="chat-u",
        model_version=1,
        prompt_tokens=1,
        completion_tokens=1,
        ttft_ms=1.0,
        duration_ms=1.0,
        finish_reason="stop",
    )
    row = LLMUsage.objects.get(request_id="r17-usage")

    page = session(staff_user).get(reverse("admin:gateway_llmusage_change", args=[row.pk]))

    assert page.status_code == 200
    assert b"officer-ci (sofia)" in page.content
    assert token.hint.encode() not in page.content
