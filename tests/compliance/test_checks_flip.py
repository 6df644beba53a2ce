"""Each check the other test modules do not flip, turned off in the real system and back on: the
check fails with evidence naming what is wrong, then passes again. Nothing is stubbed: the audit
chain is tampered in PostgreSQL, files are written into the real artifact store, permissions are
granted through the auth tables."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from apps.accounts.roles import ADMIN, ANALYST, AUDITOR
from apps.accounts.services.grants import grant_model_access, revoke_model_access
from apps.audit.chain import seal_pending
from apps.audit.services import record_event
from apps.compliance import services
from apps.compliance.checks import FAIL, NA, PASS, Context, run_check
from apps.compliance.models import DeidMode
from tests.audit.chain_helpers import fill, sql
from tests.conftest import make_user
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def check(name: str, profile: str = "hipaa", **options):
    return run_check(name, Context(profile=profile, options=options))


def test_chain_verifies_fails_on_a_rewritten_event_and_passes_on_a_fresh_chain():
    events = fill(5)
    assert check("audit.chain_verifies").status == PASS
    sql("UPDATE audit_auditevent SET target_display = 'someone-else' WHERE id = %s", [events[2].pk])
    result = check("audit.chain_verifies")
    assert result.status == FAIL
    assert result.evidence["ok"] is False and result.evidence["problem"]
    sql("UPDATE audit_auditevent SET target_display = %s WHERE id = %s", [events[2].target_display, events[2].pk])
    assert check("audit.chain_verifies").status == PASS


def test_sealer_running_fails_while_an_event_waits_and_passes_once_sealed():
    record_event("inference.infer", actor=None, target_display="m")
    later = timezone.now() + timedelta(minutes=6)
    result = run_check("audit.sealer_running", Context(profile="hipaa", now=later))
    assert result.status == FAIL and result.evidence["unsealed_events"] == 1
    assert result.evidence["oldest_unsealed_age_seconds"] >= 360
    seal_pending()
    assert run_check("audit.sealer_running", Context(profile="hipaa", now=later)).status == PASS


def test_reader_roles_sees_roles_direct_permissions_and_superusers():
    assert check("audit.reader_roles").status == PASS
    view = Permission.objects.get(codename="view_auditevent", content_type__app_label="audit")

    admin_role = Group.objects.get(name=ADMIN)
    admin_role.permissions.add(view)
    result = check("audit.reader_roles")
    assert result.status == FAIL and result.evidence["roles_reading_audit"] == sorted([ADMIN, AUDITOR])
    admin_role.permissions.remove(view)
    assert check("audit.reader_roles").status == PASS

    nosy = make_user("nosy", ADMIN)  # two steps: the role is clean, the person holds the right directly
    nosy.user_permissions.add(view)
    result = check("audit.reader_roles")
    assert result.status == FAIL
    assert result.evidence["people_outside_the_auditor_role_reading_audit"] == ["nosy"]
    nosy.user_permissions.remove(view)
    make_user("carol", AUDITOR).user_permissions.add(view)  # an auditor holding it twice is still an auditor
    assert check("audit.reader_roles").status == PASS

    root = make_user("root-person", is_superuser=True)
    assert check("audit.reader_roles").evidence["people_outside_the_auditor_role_reading_audit"] == ["root-person"]
    root.is_active = False
    root.save()
    assert check("audit.reader_roles").status == PASS


def test_sm3_chain_follows_the_chain_not_the_setting(settings):
    settings.ARTIFACT_SUITE = "AES-256-GCM"
    assert check("audit.sm3_chain").status == FAIL
    settings.ARTIFACT_SUITE = "SM4-GCM"  # no checkpoint yet: the chain will start with SM3
    assert check("audit.sm3_chain").status == PASS
    settings.ARTIFACT_SUITE = "AES-256-GCM"
    fill(2)  # the first checkpoint fixes SHA-256 for this chain
    settings.ARTIFACT_SUITE = "SM4-GCM"
    result = check("audit.sm3_chain")
    assert result.status == FAIL and result.evidence["hash_alg"] == "sha256"


def test_events_name_users_fails_on_an_anonymous_token_call():
    from apps.accounts.models import ApiToken
    from apps.accounts.services.tokens import issue_token
    from apps.core.source import Source

    user = make_user("ana")
    token, _ = issue_token(user=user, name="t", actor=None)
    source = Source().with_token(ApiToken.objects.select_related("created_by").get(pk=token.pk))
    assert check("audit.events_name_users").status == NA
    record_event("inference.infer", actor=user, source=source, target_display="m")
    assert check("audit.events_name_users").status == PASS
    record_event("inference.infer", actor=None, source=source, target_display="m")
    result = check("audit.events_name_users")
    assert result.status == FAIL and result.evidence["token_calls_naming_no_user"] == 1


def test_unique_users_fails_on_a_shared_account_and_passes_once_disabled():
    assert check("accounts.unique_users").status == PASS
    shared = make_user("Operator")
    result = check("accounts.unique_users")
    assert result.status == FAIL and result.evidence["generic_names"] == ["Operator"]
    shared.is_active = False
    shared.save()
    assert check("accounts.unique_users").status == PASS


def test_grant_expiry_on_phi_models():
    model = ModelVersionFactory(model_name="triage").model
    assert check("access.grant_expiry").status == NA
    services.set_model_policy(model_id=model.pk, phi=True, deid_mode=DeidMode.REDACT, actor=None)
    user = make_user("nurse", ANALYST)
    grant_model_access(model_id=model.pk, permission="invoke_model", user_id=user.pk, expires_at=None, actor=None)
    result = check("access.grant_expiry")
    assert result.status == FAIL and sorted(result.evidence["grants_without_expiry"]) == [
        "nurse on triage (invoke_model)",
        "nurse on triage (view_model)",  # invoking implies viewing: both rows
    ]
    for permission in ("invoke_model", "view_model"):
        revoke_model_access(model_id=model.pk, permission=permission, user_id=user.pk, actor=None)
    grant_model_access(
        model_id=model.pk,
        permission="invoke_model",
        user_id=user.pk,
        expires_at=timezone.now() + timedelta(days=30),
        actor=None,
    )
    assert check("access.grant_expiry").status == PASS


def test_guomi_suite_and_artifact_suites(settings):
    settings.ARTIFACT_SUITE = "AES-256-GCM"
    assert check("keys.guomi_suite_configured", "dengbao-l3").status == FAIL
    assert check("keys.artifact_suites", "dengbao-l3").status == NA  # nothing stored yet
    aes = ModelVersionFactory(model_name="old")
    result = check("keys.artifact_suites", "dengbao-l3")
    assert result.status == FAIL and result.evidence["not_sm4"] == [f"{aes} (AES-256-GCM)"]

    settings.ARTIFACT_SUITE = "SM4-GCM"
    assert check("keys.guomi_suite_configured", "dengbao-l3").status == PASS
    ModelVersionFactory(model_name="new")
    assert check("keys.artifact_suites", "dengbao-l3").status == FAIL  # the old AES artifact is still live
    from apps.registry.services import shred_model_version

    shred_model_version(model_version_id=aes.pk, reason="re-encrypted under SM4", actor=None)
    assert check("keys.artifact_suites", "dengbao-l3").status == PASS


def test_no_stray_files_in_the_artifact_store(settings, tmp_path):
    settings.ARTIFACT_DIR = tmp_path / "artifacts"  # this test's own store: others leave files behind
    ModelVersionFactory(model_name="m")
    assert check("keys.no_stray_files").status == PASS
    stray = settings.ARTIFACT_DIR / "model.onnx"
    stray.write_bytes(b"plaintext weights")
    result = check("keys.no_stray_files")
    assert result.status == FAIL and result.evidence["stray"] == ["model.onnx"]
    stray.unlink()
    assert check("keys.no_stray_files").status == PASS


def test_lockout_and_password_policy_flip_with_the_settings(settings):
    assert check("settings.lockout", "dengbao-l3").status == PASS
    settings.AXES_FAILURE_LIMIT = 50
    result = check("settings.lockout", "dengbao-l3")
    assert result.status == FAIL and "AXES_FAILURE_LIMIT is 50" in result.summary
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_ENABLED = False
    assert check("settings.lockout", "dengbao-l3").status == FAIL
    settings.AXES_ENABLED = True
    assert check("settings.lockout", "dengbao-l3").status == PASS

    settings.PASSWORD_MAX_AGE = timedelta(days=90)
    assert check("settings.password_policy", "dengbao-l3").status == PASS
    validators = settings.AUTH_PASSWORD_VALIDATORS
    settings.AUTH_PASSWORD_VALIDATORS = [v for v in validators if "Common" not in v["NAME"]]
    result = check("settings.password_policy", "dengbao-l3")
    assert result.status == FAIL and "CommonPasswordValidator missing" in result.summary
    settings.AUTH_PASSWORD_VALIDATORS = validators
    settings.PASSWORD_MAX_AGE = timedelta(days=365)
    assert check("settings.password_policy", "dengbao-l3").status == FAIL
    settings.PASSWORD_MAX_AGE = timedelta(days=90)
    assert check("settings.password_policy", "dengbao-l3").status == PASS
