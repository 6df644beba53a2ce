"""People and access in real Chromium, in English and in Chinese (issue 17): the security officer
gives and takes roles on the user page, grants a model with an expiry and revokes it, grants and
ends break-glass, and revokes another person's token; every person (the auditor here) issues, reads
once and revokes their own token. Each job is done through the pages, then checked in the database
and in the audit log; the roles that may not do it are shown not to get the form. Screenshots of
every page go to the artefact folder (tests/e2e/jobs.py)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import ApiToken, EmergencyAccess, ModelUserGrant
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, GUEST, SECURITY_OFFICER
from apps.audit.models import AuditEvent
from tests.conftest import make_user
from tests.e2e.jobs import LANGS, assert_language, axe_serious, dump, go, shot
from tests.factories import ModelVersionFactory, token_for
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def audited(event_type: str, actor, target=None):
    """The event, waited for (it commits with the action, before the answer; the wait only spares a
    race with the page's navigation)."""
    events = AuditEvent.objects.filter(event_type=event_type, actor_id=actor.pk)
    if target is not None:
        events = events.filter(target_id=str(target.pk))
    return wait_for(events.first, timeout=10, what=f"{event_type} by {actor}")


def submit(page, selector: str) -> None:
    """Click and wait for the page the form's answer leads to (not the previous page's messages)."""
    with page.expect_navigation():
        page.click(selector)


def said(page, lang: str, en: str, zh: str) -> None:
    """The page says it in the page's language (Chinese really Chinese, not English with lang=zh)."""
    assert_language(page, lang)
    text = page.locator("body").inner_text()
    assert (zh if lang == "zh-hans" else en) in text, text[:2000]


@pytest.mark.parametrize("lang", LANGS)
def test_officer_gives_and_takes_roles_on_the_user_page(job_page, lang):
    officer_page, officer = job_page(SECURITY_OFFICER, lang)
    person = make_user(f"pat-{lang}", ANALYST)
    change = f"/admin/auth/user/{person.pk}/change/"

    go(officer_page, change)
    said(officer_page, lang, "Give this role", "授予此角色")
    shot(officer_page, "user-roles")
    # the menu starts on no role (it started on "admin"), and giving nothing is refused in words
    assert officer_page.input_value("#id_sv_role") == ""
    chosen = officer_page.locator("#id_sv_role option:checked").inner_text()
    assert chosen == {"en": "— choose a role —", "zh-hans": "— 选择角色 —"}[lang], chosen
    submit(officer_page, "#role-assign")
    said(officer_page, lang, "Choose a role to give or take away.", "请选择要授予或撤销的角色。")
    assert set(person.groups.values_list("name", flat=True)) == {ANALYST}
    assert not AuditEvent.objects.filter(event_type="auth.role.assign", target_id=str(person.pk)).exists()
    shot(officer_page, "user-roles-none-chosen")
    officer_page.select_option("#id_sv_role", GUEST)
    submit(officer_page, "#role-assign")
    officer_page.wait_for_selector("ul.messagelist")
    assert person.groups.filter(name=GUEST).exists()
    assert audited("auth.role.assign", officer, person).details["role"] == GUEST
    shot(officer_page, "user-roles-guest-given")

    # a privileged role: its one-time enrolment code is shown once, on the page
    officer_page.select_option("#id_sv_role", AUDITOR)
    submit(officer_page, "#role-assign")
    officer_page.wait_for_selector("ul.messagelist li.warning")
    assert person.groups.filter(name=AUDITOR).exists()
    assert re.search(r"[A-Z0-9]{4}", officer_page.locator("ul.messagelist li.warning").inner_text())
    shot(officer_page, "user-roles-auditor-given")

    # separation of duties, refused with its code; then the role is taken away
    officer_page.select_option("#id_sv_role", ADMIN)
    submit(officer_page, "#role-assign")
    officer_page.wait_for_selector("ul.messagelist li.error")
    refusal = officer_page.locator("ul.messagelist li.error").inner_text()
    assert "role_conflict" in refusal
    # the refusal itself in the page's language (issue 17), the code as it is
    assert ("职责分离" if lang == "zh-hans" else "separation of duties") in refusal, refusal
    officer_page.select_option("#id_sv_role", AUDITOR)
    submit(officer_page, "#role-remove")
    officer_page.wait_for_selector("ul.messagelist li.success")
    assert not person.groups.filter(name=AUDITOR).exists()
    assert audited("auth.role.remove", officer, person).details["role"] == AUDITOR
    assert axe_serious(officer_page) == [], dump(axe_serious(officer_page))

    # the auditor and the administrator read the roles and who may change them; no form
    for role in (AUDITOR, ADMIN):
        page, _ = job_page(role, lang)
        go(page, change)
        assert page.locator("#role-form").count() == 0
        said(page, lang, "Only a security officer changes roles", "只有安全员可以在本页")
        shot(page, "user-roles-hint")


@pytest.mark.parametrize("lang", LANGS)
def test_officer_grants_a_model_with_an_expiry_and_revokes_it(job_page, lang):
    officer_page, officer = job_page(SECURITY_OFFICER, lang)
    admin = make_user(f"ops-{lang}", ADMIN)
    model = ModelVersionFactory(model_name=f"triage-{lang}", actor=admin).model
    person = make_user(f"pat-{lang}", ANALYST)
    until = timezone.localtime(timezone.now() + timedelta(days=7)).replace(second=0, microsecond=0)

    go(officer_page, f"/admin/registry/model/{model.pk}/change/")
    shot(officer_page, "model-page")
    submit(officer_page, "#manage-grants")
    said(officer_page, lang, "Grant access", "授予访问权限")
    officer_page.select_option("#id_user", label=person.username)
    officer_page.select_option("#id_permission", "invoke_model")
    officer_page.fill("#id_expires_at", until.strftime("%Y-%m-%dT%H:%M"))
    shot(officer_page, "grants-form")
    submit(officer_page, "#grant-form input[type=submit]")
    officer_page.wait_for_selector("ul.messagelist li.success")

    grants = ModelUserGrant.objects.filter(user=person, content_object=model)
    assert {g.permission.codename for g in grants} == {"view_model", "invoke_model"}
    assert {g.expires_at for g in grants} == {until} and {g.granted_by_id for g in grants} == {officer.pk}
    event = audited("access.grant.create", officer, model)
    assert event.details["grantee_id"] == person.pk and event.details["expires_at"] == until.isoformat()
    row = officer_page.locator(f"#grant-list tr[data-grantee='{person.username}'][data-permission='invoke_model']")
    assert officer.username in row.inner_text()
    said(officer_page, lang, "invoke the model", "调用模型")
    shot(officer_page, "grants-listed")
    assert axe_serious(officer_page) == [], dump(axe_serious(officer_page))

    submit(officer_page, f"#grant-list tr[data-grantee='{person.username}'][data-permission='view_model'] button")
    officer_page.wait_for_selector("ul.messagelist li.success")
    assert not ModelUserGrant.objects.filter(user=person, content_object=model).exists()
    assert audited("access.grant.revoke", officer, model).details["grantee_id"] == person.pk
    shot(officer_page, "grants-revoked")

    # the auditor reads the grants; no form, and a POST is refused
    auditor_page, _ = job_page(AUDITOR, lang)
    go(auditor_page, f"/admin/registry/model/{model.pk}/grants/")
    assert auditor_page.locator("#grant-form").count() == 0
    said(auditor_page, lang, "Only a security officer grants", "只有安全员可以授予")
    shot(auditor_page, "grants-read-only")


@pytest.mark.parametrize("lang", LANGS)
def test_a_person_issues_and_revokes_their_own_token_and_the_officer_revokes_others(job_page, lang):
    auditor_page, auditor = job_page(AUDITOR, lang)

    go(auditor_page, "/admin/")
    submit(auditor_page, "#my-tokens")
    said(auditor_page, lang, "Issue a token", "签发令牌")
    auditor_page.fill("#id_name", "laptop")
    shot(auditor_page, "tokens-form")
    submit(auditor_page, "#token-form input[type=submit]")
    plaintext = auditor_page.locator("#token-plaintext").inner_text()
    token = ApiToken.objects.get(user=auditor, name="laptop")
    assert plaintext.startswith(token.hint) and plaintext.startswith("svt_")
    assert audited("auth.token.create", auditor, token)
    shot(auditor_page, "tokens-issued-once")
    go(auditor_page, "/accounts/tokens/")
    assert auditor_page.locator("#token-plaintext").count() == 0  # shown once only
    assert plaintext not in auditor_page.content()
    assert axe_serious(auditor_page) == [], dump(axe_serious(auditor_page))
    submit(auditor_page, f"tr[data-token='{token.pk}'] button.sv-revoke")
    auditor_page.wait_for_selector("ul.messagelist li.success")
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert audited("auth.token.revoke", auditor, token)
    said(auditor_page, lang, "revoked", "已吊销")
    shot(auditor_page, "tokens-revoked")

    # the auditor sees every token on the admin's list but has no revoke action
    go(auditor_page, "/admin/accounts/apitoken/")
    assert auditor_page.locator("select[name=action] option[value=revoke]").count() == 0

    # the security officer (token manager) revokes someone else's token; it mints for nobody else
    pat = make_user(f"pat-{lang}", ANALYST)
    token_for(pat, name="ci")
    theirs = ApiToken.objects.get(user=pat)
    officer_page, officer = job_page(SECURITY_OFFICER, lang)
    go(officer_page, f"/admin/accounts/apitoken/?user__id__exact={pat.pk}")
    shot(officer_page, "tokens-admin-list")
    officer_page.check(f"input[name=_selected_action][value='{theirs.pk}']")
    officer_page.select_option("select[name=action]", "revoke")
    submit(officer_page, "button[name=index]")
    officer_page.wait_for_selector("ul.messagelist li")
    theirs.refresh_from_db()
    assert theirs.revoked_at is not None
    assert audited("auth.token.revoke", officer, theirs)
    assert go(officer_page, "/admin/accounts/apitoken/add/").status == 403


@pytest.mark.parametrize("lang", LANGS)
def test_officer_grants_break_glass_sees_it_and_ends_it_early(job_page, lang):
    officer_page, officer = job_page(SECURITY_OFFICER, lang)
    person = make_user(f"nurse-{lang}", ANALYST)

    go(officer_page, "/admin/accounts/emergencyaccess/add/")
    officer_page.select_option("#id_user", label=person.username)
    officer_page.select_option("#id_role", AUDITOR)
    officer_page.fill("#id_minutes", "45")
    officer_page.fill("#id_reason", "night audit of a suspected breach")
    said(officer_page, lang, "minutes", "分钟")
    shot(officer_page, "break-glass-form")
    submit(officer_page, "input[name=_save]")
    officer_page.wait_for_selector("ul.messagelist li.warning")

    access = EmergencyAccess.objects.get(user=person)
    assert access.role == AUDITOR and access.granted_by_id == officer.pk and access.is_active()
    assert timedelta(minutes=44) < access.expires_at - access.granted_at <= timedelta(minutes=45)
    event = audited("auth.breakglass.grant", officer, person)
    assert event.details["alert"] is True and event.details["reason"] == "night audit of a suspected breach"
    go(officer_page, "/admin/accounts/emergencyaccess/?state=active")
    said(officer_page, lang, "active", "有效")
    assert person.username in officer_page.locator("#result_list").inner_text()
    shot(officer_page, "break-glass-active")
    assert axe_serious(officer_page) == [], dump(axe_serious(officer_page))

    officer_page.check(f"input[name=_selected_action][value='{access.pk}']")
    officer_page.select_option("select[name=action]", "revoke")
    submit(officer_page, "button[name=index]")
    officer_page.wait_for_selector("ul.messagelist li")
    access.refresh_from_db()
    assert access.revoked_at is not None and not access.is_active()
    assert audited("auth.breakglass.revoke", officer, person).details["access_id"] == access.pk
    shot(officer_page, "break-glass-ended")

    # the auditor sees the grants, cannot grant one
    auditor_page, _ = job_page(AUDITOR, lang)
    go(auditor_page, "/admin/accounts/emergencyaccess/")
    assert person.username in auditor_page.locator("#result_list").inner_text()
    assert auditor_page.locator(".object-tools a.addlink").count() == 0
    assert auditor_page.locator("select[name=action] option[value=revoke]").count() == 0
    shot(auditor_page, "break-glass-read-only")
    assert go(auditor_page, "/admin/accounts/emergencyaccess/add/").status == 403
