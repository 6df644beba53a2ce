"""Roles in words on every page that offers or filters them (nu18's first hour with `make run`: a Chinese
page still offered "授予角色：security_officer", a user-list filter "admin, security_officer…", a quota form
"组: admin, security_officer…" and a break-glass filter by role codes)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import ApiToken, EmergencyAccess
from apps.accounts.roles import ANALYST, ROLES, SECURITY_OFFICER
from tests.accounts.test_access_pages import session
from tests.conftest import make_user
from tests.factories import token_for

pytestmark = pytest.mark.django_db

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}
CODES = re.compile(r">\s*(?:授予角色：|收回角色：)?(" + "|".join(ROLES) + r")\s*<")


def test_user_list_actions_and_role_filter_name_roles_in_words(officer_user):
    make_user("ana", ANALYST)
    page = session(officer_user).get(reverse("admin:auth_user_changelist"), **ZH).content.decode()

    assert '<option value="assign_security_officer">授予角色：安全员</option>' in page
    assert '<option value="remove_analyst">收回角色：分析员</option>' in page
    assert re.search(r'<a href="\?role=analyst">\s*分析员</a>', page)
    assert not CODES.findall(page), CODES.findall(page)


def test_user_list_role_filter_keeps_only_holders_of_the_role(officer_user):
    make_user("ana", ANALYST)
    make_user("gus", "guest")
    client = session(officer_user)

    shown = client.get(reverse("admin:auth_user_changelist"), {"role": ANALYST}).context["cl"].result_list

    assert [u.username for u in shown] == ["ana"]


def test_quota_form_offers_role_groups_in_words(officer_user):
    page = session(officer_user).get(reverse("admin:gateway_quota_add"), **ZH).content.decode()

    analysts = Group.objects.get(name=ANALYST)
    assert f'<option value="{analysts.pk}">分析员</option>' in page
    assert not CODES.findall(page), CODES.findall(page)


def test_break_glass_list_filters_by_role_in_words(officer_user):
    person = make_user("ana", ANALYST)
    EmergencyAccess.objects.create(
        user=person,
        role=SECURITY_OFFICER,
        reason="night shift",
        granted_by=officer_user,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    client = session(officer_user)

    page = client.get(reverse("admin:accounts_emergencyaccess_changelist"), **ZH).content.decode()
    filtered = client.get(reverse("admin:accounts_emergencyaccess_changelist"), {"role": ANALYST})

    assert re.search(r'<a href="\?role=security_officer">\s*安全员</a>', page)
    assert not CODES.findall(page), CODES.findall(page)
    assert list(filtered.context["cl"].result_list) == []


def test_token_list_and_page_give_the_state_in_the_page_language(officer_user):
    """nu18's first `make run`: the Chinese API token list read "Status … active"."""
    token_for(officer_user)
    token = ApiToken.objects.get(user=officer_user)
    client = session(officer_user)

    for path in (
        reverse("admin:accounts_apitoken_changelist"),
        reverse("admin:accounts_apitoken_change", args=[token.pk]),
    ):
        page = client.get(path, **ZH).content.decode()
        assert "有效" in page and "状态" in page, path
        assert not re.search(r">\s*(Status:?|active)\s*<", page), path
