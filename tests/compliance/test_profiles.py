"""Attaching profiles, the effective settings that follow, per-model policy, and evaluation runs
with their history and regression alerts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from apps.audit.models import AuditEvent
from apps.audit.retention import retention_days
from apps.compliance import effective, selectors, services
from apps.compliance.catalog import get_profile
from apps.compliance.evaluation import run_evaluation
from apps.compliance.models import ControlResult, DeidMode
from apps.core.errors import ServiceError
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def test_unknown_profile_is_refused_clearly():
    with pytest.raises(ServiceError) as err:
        services.attach_profile(profile="sox", actor=None)
    assert err.value.code == "unknown_profile"
    assert "hipaa" in err.value.detail and "dengbao-l3" in err.value.detail


def test_unknown_option_is_refused():
    with pytest.raises(ServiceError) as err:
        services.attach_profile(profile="hipaa", options={"guomi": True}, actor=None)
    assert err.value.code == "unknown_option"


def test_guomi_option_with_aes_suite_is_unmeetable_and_says_which_control(settings):
    settings.ARTIFACT_SUITE = "AES-256-GCM"
    with pytest.raises(ServiceError) as err:
        services.attach_profile(profile="dengbao-l3", options={"guomi": True}, actor=None)
    assert err.value.code == "profile_unmeetable" and err.value.status_code == 409
    assert "GB/T 39786 8.4 e" in err.value.detail and "AES-256-GCM" in err.value.detail
    assert not effective.attached_profiles()

    services.attach_profile(profile="dengbao-l3", actor=None)  # without the option: fine
    settings.ARTIFACT_SUITE = "SM4-GCM"
    services.attach_profile(
        profile="dengbao-l3", model_id=ModelVersionFactory().model.pk, options={"guomi": True}, actor=None
    )
    assert effective.guomi_required()


def test_attaching_twice_is_a_conflict():
    services.attach_profile(profile="hipaa", actor=None)
    with pytest.raises(ServiceError) as err:
        services.attach_profile(profile="hipaa", actor=None)
    assert err.value.code == "profile_attached"


def test_retention_is_the_longest_required(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    assert retention_days() == 30 and effective.audit_retention_days() == 0
    dengbao = services.attach_profile(profile="dengbao-l3", actor=None)
    assert retention_days() == 183
    hipaa = services.attach_profile(profile="hipaa", actor=None)
    assert retention_days() == 2192
    services.detach_profile(attachment_id=hipaa.pk, actor=None)
    assert retention_days() == 183
    services.detach_profile(attachment_id=dengbao.pk, actor=None)
    assert retention_days() == 30
    settings.AUDIT_RETENTION_HOOKS = []
    services.attach_profile(profile="hipaa", actor=None)
    assert retention_days() == 30  # the audit app works without the compliance hook


def test_model_under_hipaa_receives_phi_and_needs_deidentification():
    model = ModelVersionFactory(model_name="triage").model
    services.attach_profile(profile="hipaa", model_id=model.pk, actor=None)
    assert effective.deid_required(model.pk)
    assert "hipaa" in effective.profiles_of_model(model.pk)
    with pytest.raises(ServiceError) as err:
        services.set_model_policy(model_id=model.pk, phi=False, deid_mode=DeidMode.OFF, actor=None)
    assert err.value.code == "deid_required"

    services.set_model_policy(model_id=model.pk, phi=True, deid_mode=DeidMode.PSEUDONYMISE, actor=None)
    assert selectors.deid_mode(model.pk) == "pseudonymise"
    assert AuditEvent.objects.filter(event_type="compliance.policy.update", target_id=str(model.pk)).exists()


def test_evaluation_keeps_history_and_alerts_on_regression(settings):
    services.attach_profile(profile="hipaa", actor=None)
    settings.SESSION_IDLE_TIMEOUT = timedelta(minutes=15)
    first = run_evaluation()
    control = "164.312(a)(2)(iii)"
    assert ControlResult.objects.get(run=first, control_id=control).status == "pass"
    assert first.passed + first.failed + first.manual + first.not_applicable == len(get_profile("hipaa").controls)

    settings.SESSION_IDLE_TIMEOUT = timedelta(hours=2)
    second = run_evaluation()
    result = ControlResult.objects.get(run=second, control_id=control)
    assert result.status == "fail" and "SOVEREIGN_SESSION_IDLE_MINUTES" in result.remedy
    alerts = AuditEvent.objects.filter(event_type="compliance.control.regressed")
    assert [a.details["control"] for a in alerts] == [control]
    assert alerts[0].outcome == "failure"

    run_evaluation()  # still failing: no second alert
    assert AuditEvent.objects.filter(event_type="compliance.control.regressed").count() == 1
    history = ControlResult.objects.filter(control_id=control).order_by("run_id").values_list("status", flat=True)
    assert list(history) == ["pass", "fail", "fail"]


def test_periodic_task_is_scheduled_and_skips_without_profiles(settings):
    from apps.compliance.tasks import evaluate_all

    assert settings.CELERY_BEAT_SCHEDULE["compliance-evaluate"]["task"] == "apps.compliance.tasks.evaluate_all"
    assert evaluate_all() == 0
    services.attach_profile(profile="dengbao-l3", actor=None)
    expected = len(get_profile("dengbao-l3").controls_for({}))  # the 国密 controls need the option
    assert ControlResult.objects.filter(run_id=evaluate_all()).count() == expected
