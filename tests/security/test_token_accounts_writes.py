"""Issue 10, "Tokens": a token of any scope reaches no accounts write (users, roles, passwords,
grants, group grants, service accounts, break-glass, tokens) — 403 `token_not_allowed`
(`token_cannot_issue_tokens` for issuing), and nothing changes. Accounts are changed by a person
at the portal, with a session that passed the second factor; a stolen CI token must not be a way
to hand out roles, grants or new tokens.

The routes are read from the URL resolver, so a write added to the accounts API is covered the
day it appears. Each request is one that the same person's session performs successfully (the
control test), so the refusal is about the token and nothing else.

Personas: ops (admin), sofia (security officer), alice (analyst, owns svc-etl and a token),
bob (analyst, the target of the user actions)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, EmergencyAccess, EnrolmentCode, ModelGroupGrant, ModelUserGrant, Profile
from apps.accounts.roles import ANALYST
from apps.accounts.services import create_service_account, grant_emergency_access, grant_model_access
from apps.audit.models import AuditEvent
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory, token_for
from tests.security.sessions import session_api

pytestmark = pytest.mark.django_db

ALL_SCOPES = ("invoke", "read", "manage")
WRITES = ("post", "put", "patch", "delete")
PREFIX = "api/v1/accounts/"
NEW_PASSWORD = "another-horse-battery-7"


def _walk(resolver, prefix: str = ""):
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern


def _write_methods(callback) -> list[str]:
    if hasattr(callback, "actions"):  # a DRF viewset route: method -> action
        return [m for m in callback.actions if m in WRITES]
    view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    return [m for m in WRITES if view is not None and hasattr(view, m)]


def _reads_tokens(callback) -> bool:
    """The login view authenticates nobody from the request (it is where a session starts): a
    token sent to it is not read, so it is no token's way in."""
    view = getattr(callback, "cls", None)
    return view is None or view.authentication_classes != []


def accounts_writes() -> list[tuple[str, str]]:
    """(url name, method) of every write under /api/v1/accounts/ that reads a token."""
    found = []
    for route, pattern in _walk(get_resolver()):
        if route.startswith(PREFIX) and _reads_tokens(pattern.callback):
            found += [(pattern.name, method) for method in _write_methods(pattern.callback)]
    return sorted(found)


# The person whose session may make each write, and a request that succeeds from it. A write not
# listed here is still refused to tokens below (with an empty body); list it to get the control.
REQUESTS = {
    ("token-list", "post"): ("alice", {}, {"name": "walk"}, "token_cannot_issue_tokens"),
    ("token-revoke", "post"): ("alice", {"pk": "@token"}, None, "token_not_allowed"),
    ("user-list", "post"): (
        "ops",
        {},
        {"username": "newbie", "email": "newbie@example.org", "password": NEW_PASSWORD, "role": ANALYST},
        "token_not_allowed",
    ),
    ("user-active", "post"): ("ops", {"pk": "@bob"}, {"is_active": False}, "token_not_allowed"),
    ("user-password", "post"): ("ops", {"pk": "@bob"}, {"password": NEW_PASSWORD}, "token_not_allowed"),
    ("user-add-role", "post"): ("sofia", {"pk": "@bob"}, {"role": "auditor"}, "token_not_allowed"),
    ("user-remove-role", "delete"): ("ops", {"pk": "@bob", "role": ANALYST}, None, "token_not_allowed"),
    ("grant-list", "post"): (
        "sofia",
        {},
        {"model": "@model", "user": "@bob", "permission": "invoke_model"},
        "token_not_allowed",
    ),
    ("grant-detail", "delete"): ("sofia", {"pk": "@grant"}, None, "token_not_allowed"),
    ("group-grant-list", "post"): (
        "sofia",
        {},
        {"model": "@model", "group": "@group", "permission": "invoke_model"},
        "token_not_allowed",
    ),
    ("group-grant-detail", "delete"): ("sofia", {"pk": "@group_grant"}, None, "token_not_allowed"),
    ("service-account-list", "post"): ("ops", {}, {"name": "svc-new", "role": ANALYST}, "token_not_allowed"),
    ("break-glass-list", "post"): (
        "sofia",
        {},
        {"user": "@bob", "role": "auditor", "minutes": 30, "reason": "incident 42"},
        "token_not_allowed",
    ),
    ("break-glass-revoke", "post"): ("sofia", {"pk": "@break_glass"}, None, "token_not_allowed"),
}


@pytest.fixture
def world(staff_user, officer_user, plain_user):
    bob = make_user("bob", ANALYST)
    model = ModelVersionFactory(model_name="triage").model
    grant(plain_user, model)
    radiology = Group.objects.create(name="radiology")
    grant_model_access(model_id=model.pk, permission="view_model", group_id=radiology.pk, actor=None)
    access = grant_emergency_access(user_id=make_user("eve").pk, role=ANALYST, minutes=30, reason="x", actor=None)
    create_service_account(name="svc-etl", owner_id=plain_user.pk, actor=None)
    token_for(plain_user, name="laptop")
    ids = {
        "bob": bob.pk,
        "model": model.pk,
        "group": radiology.pk,
        "grant": ModelUserGrant.objects.get(user=plain_user, permission__codename="invoke_model").pk,
        "group_grant": ModelGroupGrant.objects.get(group=radiology).pk,
        "break_glass": access.pk,
        "token": ApiToken.objects.get(user=plain_user, name="laptop").pk,
    }
    return ids, {"ops": staff_user, "sofia": officer_user, "alice": plain_user}


def _fill(value, ids: dict):
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return ids[value[1:]] if isinstance(value, str) and value.startswith("@") else value


def _request(name: str, method: str, ids: dict):
    who, kwargs, body, code = REQUESTS.get((name, method), ("sofia", None, {}, "token_not_allowed"))
    if kwargs is None:  # a write this module does not know yet: fill its arguments with some id
        pattern = next(p for _, p in _walk(get_resolver()) if p.name == name)
        kwargs = {k: ids["bob"] for k in pattern.pattern.regex.groupindex}
    return who, reverse(name, kwargs=_fill(kwargs, ids)), _fill(body, ids), code


def state() -> dict:
    """Everything an accounts write could change."""
    User = get_user_model()
    return {
        "users": list(User.objects.order_by("pk").values_list("pk", "username", "is_active", "password")),
        "privileges": list(User.objects.order_by("pk").values_list("pk", "is_staff", "is_superuser")),
        "memberships": sorted(User.groups.through.objects.values_list("user_id", "group_id")),
        "profiles": list(Profile.objects.order_by("user_id").values()),
        "tokens": list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at", "expires_at")),
        "user_grants": list(ModelUserGrant.objects.order_by("pk").values()),
        "group_grants": list(ModelGroupGrant.objects.order_by("pk").values()),
        "break_glass": list(EmergencyAccess.objects.order_by("pk").values()),
        "devices": list(TOTPDevice.objects.order_by("pk").values_list("pk", "confirmed")),
        "enrolment_codes": list(EnrolmentCode.objects.order_by("pk").values_list("pk", "used_at", "voided_at")),
    }


WRITES_FOUND = accounts_writes()


def test_the_walk_finds_the_accounts_writes():
    """The resolver walk is what keeps this module honest: it must see the known writes."""
    assert set(REQUESTS) <= set(WRITES_FOUND), set(REQUESTS) - set(WRITES_FOUND)


@pytest.mark.parametrize(("name", "method"), WRITES_FOUND, ids=[f"{m}-{n}" for n, m in WRITES_FOUND])
def test_a_token_with_every_scope_changes_no_account(world, name, method):
    ids, people = world
    who, url, body, code = _request(name, method, ids)
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(people[who], scopes=ALL_SCOPES, name='ci')}")
    before, last_event = state(), AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()

    resp = getattr(client, method)(url, body, format="json")

    assert (resp.status_code, resp.json().get("code")) == (403, code), resp.content
    assert state() == before
    written = AuditEvent.objects.filter(id__gt=last_event)
    assert set(written.values_list("outcome", flat=True)) <= {"denied"}, list(written.values("event_type", "outcome"))


@pytest.mark.parametrize(("name", "method"), sorted(REQUESTS), ids=[f"{m}-{n}" for n, m in sorted(REQUESTS)])
def test_the_same_request_from_the_persons_session_succeeds(world, name, method):
    """The control: the refusal above is the token's, not a bad request or a missing right."""
    ids, people = world
    who, url, body, _ = _request(name, method, ids)
    before = state()

    resp = getattr(session_api(people[who]), method)(url, body, format="json")

    assert 200 <= resp.status_code < 300, resp.content
    assert state() != before
