"""Every URL pattern in the URLconf, for every role plus anonymous, against a table kept here.

The table is keyed by pattern (its namespaced name, or `path:<route>` for an unnamed one); the
key set must equal what `get_resolver()` yields, so a new route fails this test until someone
decides who may reach it. Django admin's per-model URLs come from ADMIN_MODELS (one line per
registered model: who may view, who may add); a newly registered model fails the same way.

Columns, in order: anonymous, admin role, security officer, auditor, analyst (granted invoke on
"granted", not on "secret"), guest, and an admin-role session that has not passed the second
factor. Privileged roles use an OTP-verified session for pages and a token for /api/ and /v2/;
accounts writes, which no token makes, are walked twice: with tokens (all refused) and from the
same people's sessions (`session=True`), where the roles decide.
An expectation is "<status>" or "<status> <JSON code>" or "<status> <redirect path>".
Each request runs in a savepoint that is rolled back, so writes never leak into the next row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve, reverse
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, ModelGroupGrant, ModelUserGrant, SM3OTPDevice
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, GUEST
from apps.accounts.services import create_service_account, grant_emergency_access, grant_model_access
from apps.audit.models import AuditEvent
from apps.audit.refusals import counter as refusal_counter
from apps.deployments.models import BatchingSweep, SweepState
from apps.deployments.services import request_replica_set
from apps.keys.models import KekRotation, KekState, KeyEncryptionKey, RotationState
from apps.registry.models import Model
from tests.conftest import grant, make_user, otp_login
from tests.factories import ModelVersionFactory, llm_governance_rows, rollout_of, token_for
from tests.gateway.dataplane_client import DataPlaneClient
from tests.gateway.helpers import deploy, valid_request

pytestmark = pytest.mark.django_db

PRINCIPALS = ("anon", "admin", "officer", "auditor", "analyst", "guest", "no_otp")
STAFF = ("admin", "officer", "auditor")
ALL_SCOPES = ("invoke", "read", "manage")

LOGIN = "302 /accounts/login/"  # settings.LOGIN_URL: everyone's login
ADMIN_LOGIN = "302 /admin/login/"  # the admin's own (staff only), where its pages send
OTP = "302 /accounts/2fa/verify/"
TO_INDEX = "302 /admin/"
UNAUTH = "401 not_authenticated"
DENIED = "403 permission_denied"
OTP_API = "403 otp_required"
NOT_FOUND = "404 not_found"
INVALID = "400 invalid"
NO_TOKEN = "401 missing_token"
METRICS_REFUSED = "401 metrics_unauthenticated"
NO_INVOKE = "403 invoke_not_permitted"
NO_MODEL = "404 model_not_found"
NOT_LLM = "400 not_a_language_model"
MINT = "403 token_cannot_issue_tokens"
NO_TOKEN_WRITE = "403 token_not_allowed"
DOWN = "503 triton_unavailable"  # allowed: the route reached the (closed) Triton port


@dataclass(frozen=True)
class Row:
    """One request and its expected outcome per principal. `args` values starting with "@" are
    ids of objects made by the `world` fixture; `path` (a format string over those ids, without
    the "@") is for unnamed patterns that `reverse` cannot build."""

    method: str
    expect: tuple[str, ...]
    args: dict = field(default_factory=dict)
    data: dict | None = None
    path: str | None = None
    multipart: bool = False
    headers: dict = field(default_factory=dict)
    fresh: bool = False  # the request ends the session (logout): use a session of its own
    session: bool = False  # an /api/ request made from the principal's session instead of a token


def row(method: str, *expect: str | int, **kwargs) -> Row:
    assert len(expect) == len(PRINCIPALS), (method, expect)
    return Row(method, tuple(str(e) for e in expect), **kwargs)


def api(method: str, anon, admin, officer, auditor, analyst, guest, **kwargs) -> Row:
    """An /api/ route: a session that skipped the second factor is refused before any view."""
    return row(method, anon, admin, officer, auditor, analyst, guest, OTP_API, **kwargs)


def token_write(method: str, **kwargs) -> Row:
    """An accounts write with a token (every scope): refused whoever holds it."""
    return api(method, UNAUTH, *[NO_TOKEN_WRITE] * 5, **kwargs)


def session_write(method: str, anon, admin, officer, auditor, analyst, guest, **kwargs) -> Row:
    """The same write from each person's session: the policy of powers decides."""
    return api(method, anon, admin, officer, auditor, analyst, guest, session=True, **kwargs)


def gateway(method: str, admin, officer, auditor, analyst, guest, **kwargs) -> Row:
    """A /v2/ route: bearer tokens only, so both anonymous and a bare session are `missing_token`."""
    return row(method, NO_TOKEN, admin, officer, auditor, analyst, guest, NO_TOKEN, **kwargs)


def staff_page(method: str, admin, officer, auditor, **kwargs) -> Row:
    """An admin page: non-staff (analyst, guest) go to the login page like anonymous callers."""
    return row(method, ADMIN_LOGIN, admin, officer, auditor, ADMIN_LOGIN, ADMIN_LOGIN, OTP, **kwargs)


DATAPLANE = "dataplane:"
GRANTED = {"name": "@granted"}
SECRET = {"name": "@secret"}
INFER = valid_request()

UPLOAD = {"args": {"model_name": "@granted"}, "data": {}, "multipart": True}  # no file: 400 once allowed
AUTOCOMPLETE = {"app_label": "registry", "model_name": "modelversion", "field_name": "model", "term": ""}

# Columns: anon, admin, officer, auditor, analyst, guest, no_otp (the helpers fill the columns
# that follow from the kind of route).
TABLE: dict[str, list[Row]] = {
    "path:": [row("get", TO_INDEX, TO_INDEX, TO_INDEX, TO_INDEX, TO_INDEX, TO_INDEX, OTP, path="/")],
    "healthz": [row("get", 200, 200, 200, 200, 200, 200, 200)],
    # Prometheus (docs/metrics.md): the metrics token or an allowed network, never a person's session or token
    # (a privileged session short of its second factor is sent to it first, as everywhere)
    "metrics": [row("get", *[METRICS_REFUSED] * 6, OTP)],
    "metrics-triton": [row("get", *[METRICS_REFUSED] * 6, OTP, args={"server": "triton-x"})],
    # Django admin, site-wide views
    "admin:index": [staff_page("get", 200, 200, 200)],
    "admin:dashboard-data": [staff_page("get", 200, 200, 200)],  # docs/dashboard.md: each section by permission
    "admin:login": [row("get", 200, TO_INDEX, TO_INDEX, TO_INDEX, 200, 200, OTP)],
    "admin:logout": [row("post", TO_INDEX, 200, 200, 200, TO_INDEX, TO_INDEX, 200, fresh=True)],
    "admin:password_change": [staff_page("get", 200, 200, 200)],
    "admin:password_change_done": [staff_page("get", 200, 200, 200)],
    "admin:autocomplete": [staff_page("get", 200, 200, 200, data=AUTOCOMPLETE)],
    "admin:jsi18n": [staff_page("get", 200, 200, 200)],
    "admin:view_on_site": [staff_page("get", 404, 404, 404, args={"content_type_id": "@ct", "object_id": "@model"})],
    "admin:app_list": [staff_page("get", 404, 200, 200, args={"app_label": "audit"})],
    "path:admin/(?P<url>.*)$": [staff_page("get", 404, 404, 404, path="/admin/no-such-page/")],
    # The admin role resets an analyst's password, never a privileged person's (account takeover).
    "admin:auth_user_password_change": [
        staff_page("get", 200, 403, 403, args={"id": "@user"}),
        staff_page("get", 403, 403, 403, args={"id": "@officer_user"}),
    ],
    # Portal pages: everyone's login (a signed-in person is sent on: staff to the admin, others to their tokens)
    # and logout (POST only)
    "accounts:login": [
        row("get", 200, TO_INDEX, TO_INDEX, TO_INDEX, "302 /accounts/tokens/", "302 /accounts/tokens/", OTP)
    ],
    "accounts:logout": [
        row("get", 405, 405, 405, 405, 405, 405, 405),
        row("post", LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, fresh=True),
    ],
    # Portal pages: second factor
    "accounts:2fa-setup": [row("get", LOGIN, OTP, OTP, OTP, 200, 200, OTP)],
    "accounts:2fa-verify": [row("get", LOGIN, 200, 200, 200, 200, 200, 200)],
    # Portal pages: changing one's own password (everyone; the admin's page is for staff)
    "accounts:password-change": [row("get", LOGIN, 200, 200, 200, 200, 200, OTP)],
    "accounts:password-change-done": [row("get", LOGIN, 200, 200, 200, 200, 200, OTP)],
    # Portal pages: one's own language and time zone (everyone; the header's switch posts here)
    # (Its POST, audited by set_preferences, is tested in tests/core/test_i18n.py: here the account gate's
    # redirect of a privileged session without its second factor would be a refusal with no event.)
    "accounts:preferences": [row("get", LOGIN, 200, 200, 200, 200, 200, OTP)],
    # Portal pages: one's own API tokens (everyone: issue, list, revoke one's own; docs/access-control.md)
    "accounts:tokens": [row("get", LOGIN, 200, 200, 200, 200, 200, OTP)],
    "accounts:token-revoke": [
        row("get", LOGIN, 405, 405, 405, 405, 405, OTP, args={"token_id": "@token"}),
        # the world's token is the analyst's own: nobody else finds it here (404), the analyst revokes it
        row("post", LOGIN, 404, 404, 404, "302 /accounts/tokens/", 404, OTP, args={"token_id": "@token"}),
    ],
    # The user page's Roles section posts here (security officers); a GET goes back to the user page
    "admin:auth_user_roles": [
        staff_page("get", *["302 /admin/auth/user/{user}/change/"] * 3, args={"id": "@user"}),
        staff_page(
            "post",
            403,
            "302 /admin/auth/user/{user}/change/",
            403,
            args={"id": "@user"},
            data={"role": "guest", "op": "assign"},
            multipart=True,
        ),
    ],
    # A model's grants: read by those who see the model, changed by security officers
    "admin:registry_model_grants": [
        staff_page("get", 200, 200, 200, args={"object_id": "@model"}),
        staff_page(
            "post",
            403,
            "302 /admin/registry/model/{model}/grants/",
            403,
            args={"object_id": "@model"},
            data={"group": "@group", "permission": "view_model"},
            multipart=True,
        ),
    ],
    # OpenAPI schema and its browsable docs
    "schema": [
        api("get", UNAUTH, 200, 200, 200, 200, 200, headers={"HTTP_ACCEPT": "application/vnd.oai.openapi+json"})
    ],
    "api-docs": [api("get", 401, 200, 200, 200, 200, 200)],  # an HTML page: no JSON code
    "api-redoc": [api("get", 401, 200, 200, 200, 200, 200)],  # an HTML page: no JSON code
    # Registry API: the catalogue selector (guests see names), the visibility selector (versions)
    "model-list": [api("get", UNAUTH, 200, 200, 200, 200, 200)],
    "model-detail": [
        api("get", UNAUTH, 200, 200, 200, 200, 200, args=GRANTED),
        api("get", UNAUTH, 200, 200, 200, NOT_FOUND, 200, args=SECRET),
    ],
    "model-version-list": [
        api("get", UNAUTH, 200, 200, 200, 200, NO_MODEL, args={"model_name": "@granted"}),
        api("get", UNAUTH, 200, 200, 200, NO_MODEL, NO_MODEL, args={"model_name": "@secret"}),
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, **UPLOAD),
    ],
    "model-version-detail": [
        api("get", UNAUTH, 200, 200, 200, 200, NOT_FOUND, args={"model_name": "@granted", "version": 1}),
        api("get", UNAUTH, 200, 200, 200, NOT_FOUND, NOT_FOUND, args={"model_name": "@secret", "version": 1}),
    ],
    # GPU layouts render for whoever sees the version (a read); "granted" is a classifier.
    "model-version-triton-layout": [
        api(
            "post",
            UNAUTH,
            NOT_LLM,
            NOT_LLM,
            NOT_LLM,
            NOT_LLM,
            NOT_FOUND,
            args={"model_name": "@granted", "version": 1},
            data={"backend": "vllm"},
        ),
        api(
            "post",
            UNAUTH,
            NOT_LLM,
            NOT_LLM,
            NOT_LLM,
            NOT_FOUND,
            NOT_FOUND,
            args={"model_name": "@secret", "version": 1},
            data={"backend": "vllm"},
        ),
    ],  # fmt: skip
    # GGUF imports: who may upload a version (the admin role); jobs are the importer's own.
    "import-list": [
        api("get", UNAUTH, 200, DENIED, DENIED, DENIED, DENIED),
        api("post", UNAUTH, "400 file_required", DENIED, DENIED, DENIED, DENIED, data={}, multipart=True),
    ],
    "import-detail": [api("get", UNAUTH, "404 not_found", DENIED, DENIED, DENIED, DENIED, args={"pk": 999999})],
    # Crypto-shredding: the security officer only; the version must exist for the caller first.
    "model-version-shred": [
        api(
            "post",
            UNAUTH,
            DENIED,
            "400 reason_required",
            DENIED,
            DENIED,
            NOT_FOUND,
            args={"model_name": "@granted", "version": 1},
            data={},
        ),
        api(
            "post",
            UNAUTH,
            DENIED,
            "409 version_deployed",
            DENIED,
            NOT_FOUND,
            NOT_FOUND,
            args={"model_name": "@secret", "version": 1},
            data={"reason": "walk"},
        ),
    ],
    # Keys: the security officer operates, the auditor reads; the admin role has no part in it.
    "key-inventory": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED)],
    "kek-rotate": [api("post", UNAUTH, DENIED, 202, DENIED, DENIED, DENIED, data={"reason": "walk"})],
    "kek-retire": [api("post", UNAUTH, DENIED, "409 kek_active", DENIED, DENIED, DENIED, args={"pk": "@kek"})],
    "kek-rotation-list": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED)],
    "kek-rotation-detail": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED, args={"pk": "@rotation"})],
    "kek-rotation-resume": [
        api("post", UNAUTH, DENIED, "409 rotation_done", DENIED, DENIED, DENIED, args={"pk": "@rotation"})
    ],
    # Deployments API: admin operates, auditor reads
    "server-list": [
        api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED),
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}),
    ],
    "server-detail": [
        api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED, args={"pk": "@server"}),
        # declarations change through update_server (audited); a server holding replicas is not
        # removed (docs/fleet.md)
        api(
            "patch", UNAUTH, 200, DENIED, DENIED, DENIED, DENIED, data={"labels": {"walk": "1"}}, args={"pk": "@server"}
        ),
        api("delete", UNAUTH, "409 server_has_replicas", DENIED, DENIED, DENIED, DENIED, args={"pk": "@server"}),
    ],
    # who registers a server sets its restricted-API credential (write-only; {} lacks it: 400)
    "server-credential": [
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}, args={"pk": "@server"})
    ],
    "deployment-list": [
        api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED),
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}),
    ],
    "deployment-detail": [api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED, args={"pk": "@deployment"})],
    "deployment-redeploy": [api("post", UNAUTH, 202, DENIED, DENIED, DENIED, DENIED, args={"pk": "@deployment"})],
    "deployment-undeploy": [api("post", UNAUTH, 202, DENIED, DENIED, DENIED, DENIED, args={"pk": "@deployment"})],
    # rollouts (docs/rollouts.md): @rollout has ended, so steering it is a 409 once allowed
    "rollout-list": [
        api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED),
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}),
    ],
    "rollout-detail": [api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED, args={"pk": "@rollout"})],
    **{
        f"rollout-{_action}": [api("post", UNAUTH, 409, DENIED, DENIED, DENIED, DENIED, args={"pk": "@rollout"})]
        for _action in ("promote", "rollback", "abort")
    },
    # Replica sets (docs/fleet.md): as deployments
    "replicaset-list": [
        api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED),
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}),
    ],
    "replicaset-detail": [api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED, args={"pk": "@replica_set"})],
    "replicaset-scale": [
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}, args={"pk": "@replica_set"})
    ],
    "replicaset-retire": [api("post", UNAUTH, 202, DENIED, DENIED, DENIED, DENIED, args={"pk": "@replica_set"})],
    "replicaset-autoscale": [
        api(  # a refused change (min_replicas 0): the service's own code, audited
            "patch",
            UNAUTH,
            "400 invalid_autoscale",
            DENIED,
            DENIED,
            DENIED,
            DENIED,
            data={"min_replicas": 0},
            args={"pk": "@replica_set"},
        )
    ],
    # Batching sweeps (docs/tuning.md): as replica sets; requested by the admin, read by admin and auditor
    "batchingsweep-list": [
        api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED),
        api("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}),
    ],
    "batchingsweep-detail": [api("get", UNAUTH, 200, DENIED, 200, DENIED, DENIED, args={"pk": "@sweep"})],
    # applying a sweep starts a config rollout (docs/rollouts.md); @sweep chose nothing: 409 once allowed
    "batchingsweep-apply": [
        api("post", UNAUTH, "409 no_chosen_config", DENIED, DENIED, DENIED, DENIED, args={"pk": "@sweep"}, data={})
    ],
    # Accounts API
    "me": [api("get", UNAUTH, 200, 200, 200, 200, 200)],
    "login": [api("post", INVALID, INVALID, INVALID, INVALID, INVALID, INVALID, data={})],
    # A token makes no accounts write, whatever its scopes: tokens, users, roles, passwords,
    # grants, service accounts, break-glass (tests/security/test_token_accounts_writes.py). Each
    # write is also walked from the people's sessions, where the policy of powers decides.
    "token-list": [
        api("get", UNAUTH, 200, 200, 200, 200, 200),
        api("post", UNAUTH, MINT, MINT, MINT, MINT, MINT, data={"name": "walk"}),
        session_write("post", UNAUTH, 201, 201, 201, 201, 201, data={"name": "walk"}),
    ],
    # The analyst's own token: theirs, and the security officer and the auditor see everyone's.
    "token-detail": [api("get", UNAUTH, NOT_FOUND, 200, 200, 200, NOT_FOUND, args={"pk": "@token"})],
    "token-revoke": [
        token_write("post", args={"pk": "@token"}),
        session_write("post", UNAUTH, NOT_FOUND, 200, NOT_FOUND, 200, NOT_FOUND, args={"pk": "@token"}),
    ],
    "user-list": [
        api("get", UNAUTH, 200, 200, 200, DENIED, DENIED),
        token_write("post", data={}),
        session_write("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}),
    ],
    "user-detail": [api("get", UNAUTH, 200, 200, 200, DENIED, DENIED, args={"pk": "@user"})],
    # Admins and security officers enable/disable and give analyst/guest (docs/access-control.md).
    "user-active": [
        token_write("post", args={"pk": "@user"}, data={}),
        session_write("post", UNAUTH, INVALID, INVALID, DENIED, DENIED, DENIED, args={"pk": "@user"}, data={}),
    ],
    "user-add-role": [
        token_write("post", args={"pk": "@user"}, data={}),
        session_write("post", UNAUTH, INVALID, INVALID, DENIED, DENIED, DENIED, args={"pk": "@user"}, data={}),
    ],
    "user-remove-role": [
        token_write("delete", args={"pk": "@user", "role": ANALYST}),
        session_write("delete", UNAUTH, 200, 200, DENIED, DENIED, DENIED, args={"pk": "@user", "role": ANALYST}),
    ],
    "user-password": [
        token_write("post", args={"pk": "@user"}, data={}),
        session_write("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, args={"pk": "@user"}, data={}),
    ],
    "grant-list": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED),
        token_write("post", data={}),
        session_write("post", UNAUTH, DENIED, INVALID, DENIED, DENIED, DENIED, data={}),
    ],
    "grant-detail": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED, args={"pk": "@grant"}),
        token_write("delete", args={"pk": "@grant"}),
        session_write("delete", UNAUTH, DENIED, 204, DENIED, DENIED, DENIED, args={"pk": "@grant"}),
    ],
    "group-grant-list": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED),
        token_write("post", data={}),
        session_write("post", UNAUTH, DENIED, INVALID, DENIED, DENIED, DENIED, data={}),
    ],
    "group-grant-detail": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED, args={"pk": "@group_grant"}),
        token_write("delete", args={"pk": "@group_grant"}),
        session_write("delete", UNAUTH, DENIED, 204, DENIED, DENIED, DENIED, args={"pk": "@group_grant"}),
    ],
    "service-account-list": [
        api("get", UNAUTH, 200, 200, 200, 200, 200),
        token_write("post", data={}),
        session_write("post", UNAUTH, INVALID, DENIED, DENIED, DENIED, DENIED, data={}),
    ],
    # Owned by the analyst; users with auth.view_user see every account.
    "service-account-detail": [api("get", UNAUTH, 200, 200, 200, 200, NOT_FOUND, args={"pk": "@service_account"})],
    "break-glass-list": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED),
        token_write("post", data={}),
        session_write("post", UNAUTH, DENIED, INVALID, DENIED, DENIED, DENIED, data={}),
    ],
    "break-glass-detail": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED, args={"pk": "@break_glass"})],
    "break-glass-revoke": [
        token_write("post", args={"pk": "@break_glass"}),
        session_write("post", UNAUTH, DENIED, 200, DENIED, DENIED, DENIED, args={"pk": "@break_glass"}),
    ],
    # The auditor reads the whole log; the security officer the key events only (@event is not one).
    "audit-event-list": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED)],
    "audit-event-detail": [api("get", UNAUTH, DENIED, NOT_FOUND, 200, DENIED, DENIED, args={"pk": "@event"})],
    "audit-export": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED, args={"file_format": "jsonl"}),
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED, args={"file_format": "csv"}),
    ],
    "audit-verify-list": [api("get", UNAUTH, DENIED, DENIED, 200, DENIED, DENIED)],
    # Compliance: the security officer attaches profiles, attests and evaluates on demand; officer
    # and auditor read and export signed reports; the admin role has no part in it.
    "compliance-profile-list": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED)],
    "compliance-attachment-list": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED),
        api("post", UNAUTH, DENIED, INVALID, DENIED, DENIED, DENIED, data={}),
    ],
    "compliance-attachment-detail": [
        api("delete", UNAUTH, DENIED, 204, DENIED, DENIED, DENIED, args={"pk": "@attachment"})
    ],
    "compliance-policy-list": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED),
        api("post", UNAUTH, DENIED, INVALID, DENIED, DENIED, DENIED, data={}),
    ],
    "compliance-evaluate": [api("post", UNAUTH, DENIED, 201, DENIED, DENIED, DENIED, data={})],
    "compliance-run-list": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED)],
    "compliance-result-list": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED)],
    "compliance-attestation-list": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED),
        api("post", UNAUTH, DENIED, INVALID, DENIED, DENIED, DENIED, data={}, multipart=True),
    ],
    "compliance-report-list": [
        api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED),
        api("post", UNAUTH, DENIED, INVALID, INVALID, DENIED, DENIED, data={}),
    ],
    "compliance-report-detail": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED, args={"pk": "@report"})],
    "compliance-report-download": [
        api(
            "get",
            UNAUTH,
            DENIED,
            "409 report_not_ready",
            "409 report_not_ready",
            DENIED,
            DENIED,
            args={"pk": "@report"},
        )
    ],
    # Chat-model governance (docs/llm.md): admin and officer set policies and quotas; policies are
    # read for the models one sees, quotas by the privileged roles; usage by everyone (their own rows
    # unless privileged). Retained exchanges: metadata for officer and auditor; the content for the
    # auditor only and never with a token (audited); deletion on request by the officer, from a
    # session only.
    "llm-chat-policy-list": [
        api("get", UNAUTH, 200, 200, 200, 200, 200),
        api("post", UNAUTH, INVALID, INVALID, DENIED, DENIED, DENIED, data={}),
    ],
    "llm-quota-list": [
        api("get", UNAUTH, 200, 200, 200, DENIED, DENIED),
        api("post", UNAUTH, INVALID, INVALID, DENIED, DENIED, DENIED, data={}),
    ],
    "llm-quota-detail": [
        api("get", UNAUTH, 200, 200, 200, DENIED, DENIED, args={"pk": "@quota"}),
        api("delete", UNAUTH, 204, 204, DENIED, DENIED, DENIED, args={"pk": "@quota"}),
    ],
    "llm-exchange-list": [api("get", UNAUTH, DENIED, 200, 200, DENIED, DENIED)],
    "llm-exchange-detail": [
        api("get", UNAUTH, DENIED, DENIED, NO_TOKEN_WRITE, DENIED, DENIED, args={"pk": "@exchange"}),
        api("get", UNAUTH, DENIED, DENIED, 200, DENIED, DENIED, args={"pk": "@exchange"}, session=True),
        token_write("delete", args={"pk": "@exchange"}, data={"reason": "walk"}),
        session_write(
            "delete", UNAUTH, DENIED, 200, DENIED, DENIED, DENIED, args={"pk": "@exchange"}, data={"reason": "walk"}
        ),
    ],
    "llm-usage": [api("get", UNAUTH, 200, 200, 200, 200, 200)],
}
# The gateway: roles with registry.view_model see metadata of every model; only an invoke grant
# invokes; guests know the catalogue, so refusing them says nothing new (403, not 404).
# Columns: admin, officer, auditor, analyst, guest.
# These are the data plane's URLs (apps/gateway/dataplane), not Django routes: keyed "dataplane:…",
# built from `path`, and sent to the data plane with the principal's token.
for _suffix, _version in (("", ""), ("version-", "/versions/1")):
    for _granted, _secret in ((f"/v2/models/granted{_version}", f"/v2/models/secret{_version}"),):
        TABLE[f"{DATAPLANE}{_suffix}metadata"] = [
            gateway("get", DOWN, DOWN, DOWN, DOWN, NO_INVOKE, path=_granted),
            gateway("get", DOWN, DOWN, DOWN, NO_MODEL, NO_INVOKE, path=_secret),
        ]
        TABLE[f"{DATAPLANE}{_suffix}ready"] = [
            gateway("get", DOWN, DOWN, DOWN, DOWN, NO_INVOKE, path=_granted + "/ready"),
            gateway("get", DOWN, DOWN, DOWN, NO_MODEL, NO_INVOKE, path=_secret + "/ready"),
        ]
        TABLE[f"{DATAPLANE}{_suffix}infer"] = [
            gateway("post", NO_INVOKE, NO_INVOKE, NO_INVOKE, DOWN, NO_INVOKE, path=_granted + "/infer", data=INFER),
            gateway("post", NO_INVOKE, NO_INVOKE, NO_INVOKE, NO_MODEL, NO_INVOKE, path=_secret + "/infer", data=INFER),
        ]

# The OpenAI-compatible API (apps/gateway/dataplane/openai.py): the same grants decide; "granted"
# is a classifier, so a granted analyst reaches the language-model check (400 not_a_chat_model).
NOT_CHAT = "400 not_a_chat_model"
for _path, _key in (("/v1/chat/completions", "messages"), ("/v1/completions", "prompt")):
    _text = [{"role": "user", "content": "hi"}] if _key == "messages" else "hi"
    TABLE[f"{DATAPLANE}openai-{_path.rsplit('/', 1)[1]}"] = [
        gateway("post", NO_INVOKE, NO_INVOKE, NO_INVOKE, NOT_CHAT, NO_INVOKE, path=_path,
                data={"model": "granted", _key: _text}),
        gateway("post", NO_INVOKE, NO_INVOKE, NO_INVOKE, NO_MODEL, NO_INVOKE, path=_path,
                data={"model": "secret", _key: _text}),
    ]  # fmt: skip
TABLE[f"{DATAPLANE}openai-models"] = [gateway("get", 200, 200, 200, 200, 200, path="/v1/models")]

# Django admin per registered model: (object, staff roles that may view, staff roles that may add).
# Nobody may delete anything through the admin; governed objects change through services.
ADMIN_MODELS: dict[str, tuple[str, set[str], set[str]]] = {
    "auth.group": ("@group", {"officer", "auditor"}, set()),
    # The admin role opens change forms; privileges on them are read-only (see the last test).
    "auth.user": ("@user", {"admin", "officer", "auditor"}, {"admin"}),
    # Security records: read by officers and auditors; django-otp's key/QR-code pages are gone.
    "otp_totp.totpdevice": ("@device", {"officer", "auditor"}, set()),
    "accounts.sm3otpdevice": ("@sm3_device", {"officer", "auditor"}, set()),  # 国密 second factor
    "axes.accessattempt": ("@attempt", {"officer", "auditor"}, set()),
    "axes.accesslog": ("@access_log", {"officer", "auditor"}, set()),
    "axes.accessfailurelog": ("@failure_log", {"officer", "auditor"}, set()),
    "audit.auditevent": ("@event", {"officer", "auditor"}, set()),
    "accounts.apitoken": ("@token", {"officer", "auditor"}, set()),
    # Break-glass grants: read by officers and auditors, granted by officers (docs/access-control.md)
    "accounts.emergencyaccess": ("@break_glass", {"officer", "auditor"}, {"officer"}),
    "registry.model": ("@model", {"admin", "officer", "auditor"}, set()),
    "registry.modelversion": ("@version", {"admin", "officer", "auditor"}, {"admin"}),
    "registry.artifact": ("@artifact", {"admin", "officer", "auditor"}, set()),
    "deployments.inferenceserver": ("@server", {"admin", "auditor"}, {"admin"}),
    "deployments.deployment": ("@deployment", {"admin", "auditor"}, {"admin"}),
    "deployments.rollout": ("@rollout", {"admin", "auditor"}, {"admin"}),
    "deployments.replicaset": ("@replica_set", {"admin", "auditor"}, {"admin"}),
    "deployments.batchingsweep": ("@sweep", {"admin", "auditor"}, set()),  # read-only: requested by the API
    "keys.keyencryptionkey": ("@kek", {"officer", "auditor"}, set()),
    "keys.kekrotation": ("@rotation", {"officer", "auditor"}, set()),
    "keys.datakey": ("@data_key", {"officer", "auditor"}, set()),
    "compliance.profileattachment": ("@attachment", {"officer", "auditor"}, {"officer"}),  # attach
    "compliance.controlresult": ("@result", {"officer", "auditor"}, set()),
    "compliance.compliancereport": ("@report", {"officer", "auditor"}, {"officer", "auditor"}),
    "compliance.restoredrill": ("@drill", {"officer", "auditor"}, set()),  # recorded by manage.py restore_drill
    "gateway.chatpolicy": ("@chat_policy", {"admin", "officer", "auditor"}, set()),
    "gateway.quota": ("@quota", {"admin", "officer", "auditor"}, {"admin", "officer"}),  # set_quota (issue 17)
    "gateway.llmusage": ("@usage", {"admin", "officer", "auditor"}, set()),
    "gateway.retainedexchange": ("@exchange", {"officer", "auditor"}, set()),
}


def _admin_rows(label: str, obj: str, viewers: set[str], adders: set[str]) -> dict[str, list[Row]]:
    app, model = label.split(".")
    prefix = f"admin:{app}_{model}"

    def page(allowed: set[str], **kwargs) -> list[Row]:
        return [staff_page("get", *(200 if r in allowed else 403 for r in STAFF), **kwargs)]

    one = {"object_id": obj}
    change = f"302 /admin/{app}/{model}/{{{obj[1:]}}}/change/"
    return {
        f"{prefix}_changelist": page(viewers),
        f"{prefix}_add": page(adders),
        f"{prefix}_history": page(viewers, args=one),
        f"{prefix}_change": page(viewers, args=one),
        f"{prefix}_delete": page(set(), args=one),
        f"path:admin/{app}/{model}/<path:object_id>/": [
            staff_page("get", change, change, change, path=f"/admin/{app}/{model}/{{{obj[1:]}}}/")
        ],
    }


for _label, _spec in ADMIN_MODELS.items():
    TABLE.update(_admin_rows(_label, *_spec))
# A server is removed through delete_server (refused while it holds replicas): the admin role's page.
TABLE["admin:deployments_inferenceserver_delete"] = [staff_page("get", 200, 403, 403, args={"object_id": "@server"})]
# Issue 17's jobs in the admin (docs/admin-site.md): the officer detaches a profile (the delete view calls
# detach_profile), evaluates now and starts a KEK rotation; officer and auditor download a finished
# report's files (@report is queued: back to its page) and export the audit log; the admin role has none.
TABLE["admin:compliance_profileattachment_delete"] = [
    staff_page("get", 403, 200, 403, args={"object_id": "@attachment"})
]
TABLE["admin:compliance_controlresult_evaluate"] = [staff_page("get", 403, 200, 403)]
_REPORT_PAGE = "302 /admin/compliance/compliancereport/{report}/change/"
TABLE["admin:compliance_compliancereport_download"] = [
    staff_page("get", 403, _REPORT_PAGE, _REPORT_PAGE, args={"report_id": "@report"})
]
TABLE["admin:audit_auditevent_export"] = [staff_page("get", 403, 200, 200)]
TABLE["admin:keys_kekrotation_start"] = [staff_page("get", 403, 200, 403)]
# The security officer's audit changelist holds key events only; @event is not one of them.
for _view in ("change", "history"):
    TABLE[f"admin:audit_auditevent_{_view}"] = [staff_page("get", 403, TO_INDEX, 200, args={"object_id": "@event"})]


def _join(prefix: str, route: str) -> str:
    # The way Django builds ResolverMatch.route: a nested regex loses its leading "^".
    return route if not prefix else prefix + route.removeprefix("^")


def url_patterns(resolver=None, prefix: str = "", namespace: str = ""):
    """(key, route) of every concrete pattern, recursively."""
    for pattern in (resolver or get_resolver()).url_patterns:
        route = _join(prefix, str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            ns = ":".join(filter(None, (namespace, pattern.namespace)))
            yield from url_patterns(pattern, route, ns)
        else:
            name = pattern.name and ":".join(filter(None, (namespace, pattern.name)))
            yield (name or f"path:{route}"), route


def _key_of(path: str) -> str:
    match = resolve(urlsplit(path).path)
    return match.view_name if match.url_name else f"path:{match.route}"


def test_table_covers_every_url_pattern():
    found = [key for key, _ in url_patterns()]
    duplicated = sorted({k for k in found if found.count(k) > 1})
    missing = sorted(set(found) - TABLE.keys())
    stale = sorted(k for k in TABLE.keys() - set(found) if not k.startswith(DATAPLANE))

    assert not duplicated, f"patterns sharing a name (give each its own): {duplicated}"
    assert not missing, f"routes with no row in TABLE (decide who may reach them): {missing}"
    assert not stale, f"rows in TABLE for routes that no longer exist: {stale}"


# ---------------------------------------------------------------------------------------------
# The world the walk runs in, and the clients of each principal


@dataclass
class World:
    ids: dict
    web: dict  # principal -> session client (pages)
    api: dict  # principal -> client for /api/ and /v2/
    fresh_web: Callable[[str], Client]  # principal -> a new session client


@pytest.fixture
def world(staff_user, officer_user, auditor_user, plain_user, guest_user, onnx_bytes) -> World:
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    granted = ModelVersionFactory(model_name="granted", data=onnx_bytes, actor=staff_user)
    secret = ModelVersionFactory(model_name="secret", actor=staff_user)
    dep = deploy(granted)
    deploy(secret)
    fleet = ModelVersionFactory(model_name="fleet", actor=staff_user)
    replica_set = request_replica_set(model_version_id=fleet.pk, replicas=1, actor=staff_user)
    grant(plain_user, granted.model)
    radiology = Group.objects.create(name="radiology")
    grant_model_access(model_id=granted.model.pk, permission="view_model", group_id=radiology.pk, actor=None)
    bystander = make_user("eve")
    access = grant_emergency_access(user_id=bystander.pk, role=ANALYST, minutes=30, reason="night shift", actor=None)
    account = create_service_account(name="svc-batch", owner_id=plain_user.pk, role=GUEST, actor=None)
    token_for(plain_user, name="laptop")
    kek = KeyEncryptionKey.objects.get(state=KekState.ACTIVE)
    attempt = dict(user_agent="walk", ip_address="127.0.0.1", username="x", http_accept="*/*", path_info="/")
    ids = {
        "granted": "granted",
        "secret": "secret",
        "model": granted.model.pk,
        "version": granted.pk,
        "artifact": granted.artifact.pk,
        "data_key": granted.artifact.data_key_id,
        "server": dep.server.pk,
        "deployment": dep.pk,
        "rollout": rollout_of(secret, staff_user, finished=True).pk,
        "replica_set": replica_set.pk,
        "sweep": BatchingSweep.objects.create(
            replica_set=replica_set, rate_per_second=5, slo_p99_ms=100, state=SweepState.DONE
        ).pk,
        "user": plain_user.pk,
        "officer_user": officer_user.pk,
        "token": ApiToken.objects.get(user=plain_user, name="laptop").pk,
        "grant": ModelUserGrant.objects.filter(user=plain_user).first().pk,
        "group_grant": ModelGroupGrant.objects.get(group=radiology).pk,
        "group": radiology.pk,
        "service_account": account.pk,
        "break_glass": access.pk,
        "event": AuditEvent.objects.exclude(event_group="keys").first().pk,
        "ct": ContentType.objects.get_for_model(Model).pk,
        "device": TOTPDevice.objects.create(user=staff_user, name="walk", confirmed=True).pk,
        "sm3_device": SM3OTPDevice.objects.create(user=officer_user, name="walk", confirmed=True).pk,
        "attempt": AccessAttempt.objects.create(**attempt, get_data="", post_data="", failures_since_start=1).pk,
        "access_log": AccessLog.objects.create(**attempt).pk,
        "failure_log": AccessFailureLog.objects.create(**attempt).pk,
        "kek": kek.pk,
        "rotation": KekRotation.objects.create(to_kek=kek, state=RotationState.DONE).pk,
        **_compliance_objects(granted.model),
        **llm_governance_rows(granted.model, plain_user),
    }
    users = {
        "admin": staff_user,
        "officer": officer_user,
        "auditor": auditor_user,
        "analyst": plain_user,
        "guest": guest_user,
    }

    def session(principal: str) -> Client:
        client = APIClient()
        user = users.get("admin" if principal == "no_otp" else principal)
        if principal in STAFF:
            otp_login(client, user)
        elif user is not None:
            client.force_login(user)  # analyst and guest need no second factor; no_otp skipped it
        return client

    web = {p: session(p) for p in PRINCIPALS}
    api_clients = {
        p: APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(u, scopes=ALL_SCOPES)}") for p, u in users.items()
    }
    api_clients.update(anon=web["anon"], no_otp=web["no_otp"])
    return World(ids=ids, web=web, api=api_clients, fresh_web=session)


def _compliance_objects(model) -> dict:
    from django.utils import timezone

    from apps.compliance.models import (
        ComplianceReport,
        ControlResult,
        EvaluationRun,
        ProfileAttachment,
        RestoreDrill,
    )
    from apps.compliance.services import set_model_policy

    attachment = ProfileAttachment.objects.create(profile="hipaa", model=model)
    run = EvaluationRun.objects.create(finished_at=timezone.now())
    result = ControlResult.objects.create(run=run, profile="hipaa", control_id="164.312(b)", family="x", status="pass")
    now = timezone.now()
    report = ComplianceReport.objects.create(profile="hipaa", period_start=now, period_end=now, language="en")
    drill = RestoreDrill.objects.create(started_at=now, finished_at=now, ok=True, source_database="walk")
    # Under HIPAA the model receives PHI: its numeric (FP32) input is declared, so calls reach Triton.
    set_model_policy(
        model_id=model.pk, phi=True, deid_mode="redact", numeric_inputs_reason="four vital signs", actor=None
    )
    return {"attachment": attachment.pk, "result": result.pk, "report": report.pk, "drill": drill.pk}


def _url(world: World, key: str, r: Row) -> str:
    if r.path is not None:
        return r.path.format(**world.ids)
    kwargs = {k: world.ids[v[1:]] if isinstance(v, str) and v.startswith("@") else v for k, v in r.args.items()}
    return reverse(key, kwargs=kwargs)


def _request(world: World, principal: str, url: str, r: Row):
    on_api = url.startswith(("/api/", "/v2/", "/v1/"))
    client = (
        world.fresh_web(principal) if r.fresh else (world.api if on_api and not r.session else world.web)[principal]
    )
    if url.startswith(("/v2/", "/v1/")):  # the data plane, with the same token (none for a bare session)
        client = DataPlaneClient(**{k: v for k, v in client.defaults.items() if k == "HTTP_AUTHORIZATION"})
    kwargs = dict(r.headers)
    data = r.data
    if r.multipart and data:  # form values naming the world's objects ("@group")
        data = {k: world.ids[v[1:]] if isinstance(v, str) and v.startswith("@") else v for k, v in data.items()}
    if r.method != "get" and data is not None:
        body = {"data": data} if r.multipart else {"data": json.dumps(data), "content_type": "application/json"}
        kwargs.update(body)
    elif r.data is not None:
        kwargs["data"] = r.data
    # Each request's transaction is rolled back, so the collapsed-refusal counters start afresh too:
    # every refusal is then the first of its bucket and written (apps/audit/refusals.py).
    refusal_counter().reset()
    with transaction.atomic():
        before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        response = getattr(client, r.method)(url, **kwargs)
        response.audit_events = list(
            AuditEvent.objects.filter(id__gt=before).values_list("event_type", "outcome", "error_code")
        )
        transaction.set_rollback(True)
    return response


def _outcome(response, expected: str) -> str:
    """The response described in the expectation's own terms, for a readable diff."""
    status, _, detail = expected.partition(" ")
    got = str(response.status_code)
    if detail.startswith("/"):
        got += " " + urlsplit(response.get("Location", "")).path
    elif detail:
        body = response.json() if "json" in response.get("Content-Type", "") else {}
        code = body.get("code") if "code" in body else (body.get("error") or {}).get("code")  # KServe | OpenAI
        got += " " + str(code)
    return got


def _leaks(principal: str, response) -> bool:
    """An analyst never receives a successful JSON body naming the model they were not granted."""
    if principal != "analyst" or response.status_code >= 300:
        return False
    return response.get("Content-Type", "").startswith("application/json") and b'"secret"' in response.content


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_walk(world, principal, settings):
    # Hundreds of calls in a few seconds from one address: rate limits are tested on their own
    # (tests/core/test_ratelimit.py); here they would turn every answer into a 429.
    settings.RATELIMIT_ENABLED = False
    column = PRINCIPALS.index(principal)
    failures, checked, unaudited = [], 0, []
    for key, rows in TABLE.items():
        for r in rows:
            url = _url(world, key, r)
            if not key.startswith(DATAPLANE):
                assert _key_of(url) == key, f"row for {key} requests {url}, which resolves elsewhere"
            response = _request(world, principal, url, r)
            expected = r.expect[column].format(**world.ids)
            got = _outcome(response, expected)
            checked += 1
            if got != expected:
                failures.append(f"{r.method.upper()} {url}: expected {expected}, got {got}")
            # Every changing call leaves an event, refused ones included. The admin turns people who
            # are not staff away with a redirect before anything runs (a logout by them is a no-op).
            redirect_only = principal in ("anon", "analyst", "guest") and 300 <= response.status_code < 400
            # The account gate sends a privileged session short of its second factor to the verify
            # page before any view runs, as the admin sends non-staff to its login.
            redirect_only |= principal == "no_otp" and got == OTP
            if r.method != "get" and not response.audit_events and not redirect_only:
                unaudited.append(f"{r.method.upper()} {url}: {got}")
            if _leaks(principal, response):
                failures.append(f"{r.method.upper()} {url}: names the ungranted model")
    assert not failures, f"{len(failures)} of {checked} requests as {principal}:\n" + "\n".join(failures)
    assert not unaudited, f"{len(unaudited)} changing requests as {principal} left no audit event:\n" + "\n".join(
        unaudited
    )


def test_user_admin_cannot_change_privileges(staff_user):
    """The walk shows the admin role may open user change forms (auth.change_user); the form must
    not let it promote itself, since roles change only through the audited services."""
    client = Client()
    otp_login(client, staff_user)
    form = {
        "username": staff_user.username,
        "email": "ops@example.org",
        "is_active": "on",
        "is_superuser": "on",
        "groups": [Group.objects.get(name=AUDITOR).pk],
        "date_joined_0": "2024-01-01",
        "date_joined_1": "00:00",
    }

    response = client.post(reverse("admin:auth_user_change", args=[staff_user.pk]), form)

    staff_user.refresh_from_db()
    assert response.status_code == 302
    assert not staff_user.is_superuser
    assert set(staff_user.groups.values_list("name", flat=True)) == {ADMIN}
