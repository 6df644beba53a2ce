"""The access pages of issue 17 (people and access): the user page's Roles section, a model's grants
page, everyone's own tokens page and the break-glass admin. Each write goes through the audited
service with its rules; whoever may not write gets a 403 (or no form) and nothing changes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import ApiToken, EmergencyAccess, ModelGroupGrant, ModelUserGrant
from apps.accounts.roles import ANALYST, AUDITOR, GUEST, SECURITY_OFFICER
from apps.audit.models import AuditEvent
from tests.conftest import make_user, otp_login
from tests.factories import ModelVersionFactory, token_for

pytestmark = pytest.mark.django_db


def session(user) -> Client:
    client = Client()
    if user.is_staff or user.is_superuser:
        otp_login(client, user)
    else:
        client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def events(kind: str, **filters):
    return AuditEvent.objects.filter(event_type=kind, **filters)


# --- Roles -----------------------------------------------------------------------------------


def test_officer_gives_a_role_on_the_user_page(officer_user):
    person = make_user("pat", ANALYST)
    client = session(officer_user)
    page = client.get(reverse("admin:auth_user_change", args=[person.pk]))
    assert b'id="role-form"' in page.content

    response = client.post(reverse("admin:auth_user_roles", args=[person.pk]), {"role": GUEST, "op": "assign"})

    assert response.status_code == 302
    assert person.groups.filter(name=GUEST).exists()
    assert events("auth.role.assign", actor_id=officer_user.pk, target_id=str(person.pk)).exists()


def test_a_privileged_role_shows_its_enrolment_code_once(officer_user):
    person = make_user("pat", ANALYST)
    client = session(officer_user)

    response = client.post(
        reverse("admin:auth_user_roles", args=[person.pk]), {"role": AUDITOR, "op": "assign"}, follow=True
    )

    assert person.groups.filter(name=AUDITOR).exists()
    assert any("Enrolment code for pat:" in m for m in messages_of(response))


def test_separation_of_duties_and_self_change_are_refused_with_their_code(officer_user):
    auditor = make_user("pia", AUDITOR)
    client = session(officer_user)

    conflict = client.post(
        reverse("admin:auth_user_roles", args=[auditor.pk]), {"role": "admin", "op": "assign"}, follow=True
    )
    own = client.post(
        reverse("admin:auth_user_roles", args=[officer_user.pk]),
        {"role": SECURITY_OFFICER, "op": "remove"},
        follow=True,
    )

    assert any("(role_conflict)" in m for m in messages_of(conflict))
    assert any("(self_change_forbidden)" in m for m in messages_of(own))
    assert not auditor.groups.filter(name="admin").exists()
    assert officer_user.groups.filter(name=SECURITY_OFFICER).exists()


@pytest.mark.parametrize(
    "lang, choose, refused", [("en", "choose a role", "Choose a role"), ("zh-hans", "选择角色", "请选择")]
)
def test_the_role_menu_starts_on_no_role_and_an_empty_choice_is_refused(officer_user, lang, choose, refused):
    """Issue 17: the menu started on "admin", a privileged role one click away from being given."""
    person = make_user("pat", ANALYST)
    client = session(officer_user)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = lang
    page = client.get(reverse("admin:auth_user_change", args=[person.pk])).content.decode()

    menu = page[page.index('<select name="role" id="id_sv_role">') :]
    first = re.search(r"<option[^>]*>([^<]*)</option>", menu)
    assert 'value=""' in first.group(0) and choose in first.group(1), first.group(0)
    assert "selected" not in menu[: menu.index("</select>")]

    for op in ("assign", "remove"):
        response = client.post(reverse("admin:auth_user_roles", args=[person.pk]), {"role": "", "op": op}, follow=True)
        assert any(refused in m for m in messages_of(response)), messages_of(response)
    assert set(person.groups.values_list("name", flat=True)) == {ANALYST}
    assert not events("auth.role.assign").exists() and not events("auth.role.remove").exists()


def test_the_break_glass_form_starts_on_no_role(officer_user):
    page = session(officer_user).get(reverse("admin:accounts_emergencyaccess_add")).content.decode()
    menu = page[page.index('name="role"') :]
    assert re.match(r'[^>]*>\s*<option value="" selected>', menu), menu[:200]


@pytest.mark.parametrize("role", ["admin", AUDITOR])
def test_others_get_a_hint_and_no_form(role):
    viewer = make_user(f"v-{role}", role)
    person = make_user("pat", ANALYST)
    client = session(viewer)

    page = client.get(reverse("admin:auth_user_change", args=[person.pk]))
    post = client.post(reverse("admin:auth_user_roles", args=[person.pk]), {"role": GUEST, "op": "assign"})

    assert page.status_code == 200 and b'id="role-form"' not in page.content
    assert b'id="role-hint"' in page.content and b"security officer" in page.content
    assert post.status_code == 403
    assert not person.groups.filter(name=GUEST).exists()


# --- Grants ----------------------------------------------------------------------------------


@pytest.fixture
def model(staff_user):
    return ModelVersionFactory(model_name="triage", actor=staff_user).model


def test_officer_grants_with_an_expiry_and_revokes(officer_user, model):
    person = make_user("pat", ANALYST)
    client = session(officer_user)
    url = reverse("admin:registry_model_grants", args=[model.pk])
    until = timezone.localtime(timezone.now() + timedelta(days=3)).replace(second=0, microsecond=0)

    client.post(
        url,
        {"user": person.pk, "permission": "invoke_model", "expires_at": until.strftime("%Y-%m-%dT%H:%M")},
    )

    held = ModelUserGrant.objects.filter(user=person, content_object=model)
    assert {g.permission.codename for g in held} == {"view_model", "invoke_model"}
    assert all(g.expires_at == until and g.granted_by == officer_user for g in held)
    page = client.get(url)
    assert b"sofia" in page.content and b'id="grant-form"' in page.content

    revoked = client.post(
        url, {"revoke": "1", "kind": "user", "grantee": person.pk, "permission": "view_model"}, follow=True
    )
    assert "Revoked" in messages_of(revoked)[0]

    assert not ModelUserGrant.objects.filter(user=person).exists()
    assert events("access.grant.create", actor_id=officer_user.pk).exists()
    assert events("access.grant.revoke", actor_id=officer_user.pk).exists()


def test_officer_grants_a_group_but_never_its_own(officer_user, model):
    radiology = Group.objects.create(name="radiology")
    client = session(officer_user)
    url = reverse("admin:registry_model_grants", args=[model.pk])

    client.post(url, {"group": radiology.pk, "permission": "view_model"})
    own = client.post(
        url, {"group": Group.objects.get(name=SECURITY_OFFICER).pk, "permission": "view_model"}, follow=True
    )

    assert ModelGroupGrant.objects.filter(group=radiology, content_object=model).exists()
    assert any("(self_change_forbidden)" in m for m in messages_of(own))
    assert not ModelGroupGrant.objects.filter(group__name=SECURITY_OFFICER).exists()


@pytest.mark.parametrize("role", ["admin", AUDITOR])
def test_others_read_the_grants_but_cannot_change_them(role, model):
    viewer = make_user(f"v-{role}", role)
    person = make_user("pat", ANALYST)
    client = session(viewer)
    url = reverse("admin:registry_model_grants", args=[model.pk])

    page = client.get(url)
    post = client.post(url, {"user": person.pk, "permission": "view_model"})

    assert page.status_code == 200 and b'id="grant-form"' not in page.content and b'id="grant-hint"' in page.content
    assert post.status_code == 403
    assert not ModelUserGrant.objects.filter(user=person).exists()


# --- Tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [ANALYST, SECURITY_OFFICER, "admin", AUDITOR])
def test_everyone_issues_lists_and_revokes_their_own_token(role):
    person = make_user("me", role)
    client = session(person)

    issued = client.post(reverse("accounts:tokens"), {"name": "laptop", "days": 7, "scopes": ["invoke", "read"]})

    token = ApiToken.objects.get(user=person, name="laptop")
    assert issued.status_code == 200 and issued["Cache-Control"] == "no-store"
    assert issued.context["plaintext"].startswith(token.hint)
    assert client.get(reverse("accounts:tokens")).context["plaintext"] is None  # shown once
    client.post(reverse("accounts:token-revoke", args=[token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert events("auth.token.create", actor_id=person.pk).exists()
    assert events("auth.token.revoke", actor_id=person.pk).exists()


def test_the_page_mints_for_nobody_else(officer_user, admin_user):
    """An officer naming the superuser (or anyone) still gets a token of their own: the page takes
    no user, and revoking another's token here is a 404."""
    client = session(officer_user)
    token_for(admin_user, name="root-laptop")
    theirs = ApiToken.objects.get(user=admin_user)

    client.post(reverse("accounts:tokens"), {"name": "x", "days": 1, "scopes": ["read"], "user": admin_user.pk})
    revoke = client.post(reverse("accounts:token-revoke", args=[theirs.pk]))

    assert not ApiToken.objects.filter(user=admin_user, name="x").exists()
    assert ApiToken.objects.filter(user=officer_user, name="x").exists()
    assert revoke.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert client.get(reverse("admin:accounts_apitoken_add")).status_code == 403


def test_a_stale_second_factor_asks_for_a_code(officer_user, settings):
    client = session(officer_user)
    settings.TOKEN_OTP_FRESH = timedelta(seconds=0)

    page = client.post(reverse("accounts:tokens"), {"name": "x", "days": 1, "scopes": ["read"]})

    assert "fresh_otp_required" in str(page.context["form"].errors)
    assert not ApiToken.objects.filter(user=officer_user).exists()

    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.get(user=officer_user)
    code = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
    client.post(reverse("accounts:tokens"), {"name": "x", "days": 1, "scopes": ["read"], "otp": code})
    assert ApiToken.objects.filter(user=officer_user, name="x").exists()


def test_analysts_are_not_asked_for_a_code(plain_user):
    page = session(plain_user).get(reverse("accounts:tokens"))
    assert "otp" not in page.context["form"].fields


def test_only_a_token_manager_gets_the_revoke_action(officer_user, auditor_user):
    pat = make_user("pat", ANALYST)
    token_for(pat, name="laptop")
    token = ApiToken.objects.get(user=pat)
    url = reverse("admin:accounts_apitoken_changelist")
    officer, auditor = session(officer_user), session(auditor_user)

    assert "revoke" in dict(officer.get(url).context["action_form"].fields["action"].choices)
    assert auditor.get(url).context["action_form"] is None or "revoke" not in dict(
        auditor.get(url).context["action_form"].fields["action"].choices
    )
    auditor.post(url, {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is None
    officer.post(url, {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None


# --- Break-glass -----------------------------------------------------------------------------


def test_officer_grants_break_glass_and_ends_it_early(officer_user):
    person = make_user("pat", ANALYST)
    client = session(officer_user)

    client.post(
        reverse("admin:accounts_emergencyaccess_add"),
        {"user": person.pk, "role": AUDITOR, "minutes": 90, "reason": "night audit"},
    )

    access = EmergencyAccess.objects.get(user=person)
    assert access.role == AUDITOR and access.granted_by == officer_user and access.reason == "night audit"
    assert timedelta(minutes=89) < access.expires_at - access.granted_at <= timedelta(minutes=90)
    listing = client.get(reverse("admin:accounts_emergencyaccess_changelist") + "?state=active")
    assert b"pat" in listing.content

    client.post(
        reverse("admin:accounts_emergencyaccess_changelist"), {"action": "revoke", "_selected_action": [access.pk]}
    )

    access.refresh_from_db()
    assert access.revoked_at is not None
    assert events("auth.breakglass.grant", actor_id=officer_user.pk).exists()
    assert events("auth.breakglass.revoke", actor_id=officer_user.pk).exists()


def test_break_glass_keeps_its_rules(officer_user):
    client = session(officer_user)
    svc = make_user("svc-x", ANALYST)
    from apps.accounts.models import Profile

    Profile.objects.update_or_create(user=svc, defaults={"is_service_account": True})
    url = reverse("admin:accounts_emergencyaccess_add")

    own = client.post(url, {"user": officer_user.pk, "role": ANALYST, "minutes": 5, "reason": "x"}, follow=True)
    account = client.post(url, {"user": svc.pk, "role": ANALYST, "minutes": 5, "reason": "x"}, follow=True)

    assert any("(self_change_forbidden)" in m for m in messages_of(own))
    assert any("(service_account_break_glass)" in m for m in messages_of(account))
    assert not EmergencyAccess.objects.exists()


def test_the_auditor_sees_break_glass_but_grants_nothing(auditor_user):
    person = make_user("pat", ANALYST)
    now = timezone.now()
    access = EmergencyAccess.objects.create(
        user=person, role=GUEST, reason="r", granted_at=now, expires_at=now + timedelta(hours=1)
    )
    client = session(auditor_user)

    assert client.get(reverse("admin:accounts_emergencyaccess_changelist")).status_code == 200
    assert client.get(reverse("admin:accounts_emergencyaccess_add")).status_code == 403
    client.post(
        reverse("admin:accounts_emergencyaccess_changelist"), {"action": "revoke", "_selected_action": [access.pk]}
    )
    access.refresh_from_db()
    assert access.revoked_at is None
    admin_role = session(make_user("ops", "admin"))
    assert admin_role.get(reverse("admin:accounts_emergencyaccess_changelist")).status_code == 403


def test_role_groups_are_named_in_the_page_language_on_the_grants_page(officer_user, model):
    """A newcomer's Chinese grants page offered the groups "admin, analyst, auditor…" by their codes."""
    analysts = Group.objects.get(name=ANALYST)
    client = session(officer_user)
    url = reverse("admin:registry_model_grants", args=[model.pk])
    client.post(url, {"group": analysts.pk, "permission": "view_model"})

    page = client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    assert f'<option value="{analysts.pk}">分析员</option>' in page
    assert f'<option value="{Group.objects.get(name="admin").pk}">管理员</option>' in page
    assert "<td>分析员 (组)</td>" in page  # the current grants, above the form
    assert ModelGroupGrant.objects.filter(group=analysts, content_object=model).exists()
