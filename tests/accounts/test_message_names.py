"""A newcomer saw "Nurse-zh now holds the role auditor" for the user nurse-zh, and "Triage-demo v2" for
the model triage-demo: Django's message list upper-cased the first letter of every message, names
included (they are case-sensitive). The portal's own list shows a message as written; a service's
refusal, a sentence from code, is still shown starting with a capital."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import ANALYST, AUDITOR
from tests.conftest import make_user, otp_login

pytestmark = pytest.mark.django_db


def _messages(response) -> list[str]:
    return re.findall(r'<ul class="messagelist">(.*?)</ul>', response.content.decode(), re.S)


def test_a_message_that_starts_with_a_name_keeps_the_name_as_it_is(officer_user):
    person = make_user("nurse-zh", ANALYST)
    client = Client()
    otp_login(client, officer_user)

    response = client.post(
        reverse("admin:auth_user_roles", args=[person.pk]), {"role": AUDITOR, "op": "assign"}, follow=True
    )

    shown = "".join(_messages(response))
    assert "nurse-zh now holds the role" in shown, shown
    assert "Nurse-zh" not in shown


def test_a_service_refusal_still_starts_with_a_capital(officer_user):
    client = Client()
    otp_login(client, officer_user)

    response = client.post(
        reverse("admin:auth_user_roles", args=[officer_user.pk]),
        {"role": "security_officer", "op": "remove"},
        follow=True,
    )

    refusal = re.search(r"<li[^>]*>\s*(.*?\(self_change_forbidden\))", "".join(_messages(response)), re.S)
    assert refusal and refusal[1][0].isupper(), _messages(response)
