"""Reconciling against a Triton that cannot be reached: claims are released, the task ends FAILED."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent, Outcome
from apps.deployments import services
from apps.deployments.models import Deployment, Desired, Observed
from apps.deployments.tasks import reconcile_all, reconcile_deployment_task
from inference_backend.client import TritonUnavailable
from tests.factories import DeploymentFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(staff_user) -> Deployment:
    """A requested deployment on a server whose port nobody listens on."""
    mv = ModelVersionFactory(model_name="triage", actor=staff_user)
    return DeploymentFactory(model_version=mv, observed_state=Observed.PENDING, requested_by=staff_user)


class TestReconcileService:
    def test_unreachable_server_raises_and_releases_the_claim(self, pending):
        with pytest.raises(TritonUnavailable) as exc:
            services.reconcile_deployment(pending.pk)

        assert pending.server.http_url in str(exc.value)
        pending.refresh_from_db()
        assert pending.claimed_until is None

    def test_claimed_deployment_is_left_alone(self, pending):
        Deployment.objects.filter(pk=pending.pk).update(claimed_until=timezone.now() + timedelta(minutes=5))

        assert services.reconcile_deployment(pending.pk) is None

        pending.refresh_from_db()
        assert pending.observed_state == Observed.PENDING
        assert not pending.transitions.exists()

    def test_expired_claim_is_taken_over(self, pending):
        Deployment.objects.filter(pk=pending.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))

        with pytest.raises(TritonUnavailable):
            services.reconcile_deployment(pending.pk)

        pending.refresh_from_db()
        assert pending.claimed_until is None

    def test_missing_deployment(self):
        assert services.reconcile_deployment(987654) is None


class TestReconcileTask:
    def test_no_retries_left_ends_failed_naming_the_server(self, pending, staff_user, settings):
        settings.DEPLOY_MAX_RETRIES = 0

        result = reconcile_deployment_task.apply(args=[pending.pk, "task-rid-1"])

        assert result.get() == "failed"
        pending.refresh_from_db()
        assert pending.observed_state == Observed.FAILED
        assert pending.desired_state == Desired.ACTIVE
        assert pending.claimed_until is None
        assert pending.server.http_url in pending.last_error
        assert "unreachable" in pending.last_error.lower()
        last = pending.transitions.last()
        assert (last.to_state, last.message) == (Observed.FAILED, pending.last_error)
        event = AuditEvent.objects.filter(event_type="deployment.transition").order_by("id").last()
        assert (event.outcome, event.error_code) == (Outcome.FAILURE, "deploy_failed")
        assert event.actor == staff_user
        assert event.request_id == "task-rid-1"
        assert event.details["after"] == {"observed_state": "failed"}

    def test_undeploy_on_unreachable_server_ends_failed_not_unloading(self, pending, settings):
        settings.DEPLOY_MAX_RETRIES = 0
        Deployment.objects.filter(pk=pending.pk).update(desired_state=Desired.INACTIVE, observed_state=Observed.ACTIVE)

        assert reconcile_deployment_task.apply(args=[pending.pk]).get() == "failed"

        pending.refresh_from_db()
        assert (pending.desired_state, pending.observed_state) == (Desired.INACTIVE, Observed.FAILED)
        assert "unreachable" in pending.last_error.lower()
        assert pending.pk in set(services.deployments_needing_reconcile())  # the sweep tries the unload again

    def test_retries_then_fails(self, pending, settings):
        """Eager apply() runs each retry at once (the countdown is the broker's business)."""
        settings.DEPLOY_MAX_RETRIES = 2
        settings.DEPLOY_RETRY_BASE_SECONDS = 0

        result = reconcile_deployment_task.apply(args=[pending.pk])

        assert result.get() == "failed"
        pending.refresh_from_db()
        assert pending.observed_state == Observed.FAILED
        assert "after 2 retries" in pending.last_error
        assert pending.transitions.filter(to_state=Observed.FAILED).count() == 1

    def test_gone_deployment_is_skipped(self):
        assert reconcile_deployment_task.apply(args=[123456]).get() == "skipped"

    def test_failed_deployment_can_be_redeployed_and_fails_again(self, pending, staff_user, settings):
        settings.DEPLOY_MAX_RETRIES = 0
        reconcile_deployment_task.apply(args=[pending.pk])
        services.request_redeploy(deployment_id=pending.pk, actor=staff_user)

        reconcile_deployment_task.apply(args=[pending.pk])

        pending.refresh_from_db()
        assert pending.observed_state == Observed.FAILED
        states = [t.to_state for t in pending.transitions.all()]
        assert states == ["loading", "failed", "pending", "loading", "failed"]


class TestSweep:
    def test_reconcile_all_enqueues_unconverged_deployments(self, staff_user, monkeypatch):
        mv = ModelVersionFactory(actor=staff_user)
        wanted = {
            DeploymentFactory(model_version=mv, observed_state=Observed.PENDING).pk,
            DeploymentFactory(model_version=mv, observed_state=Observed.ACTIVE).pk,
            DeploymentFactory(model_version=mv, desired_state=Desired.INACTIVE, observed_state=Observed.ACTIVE).pk,
        }
        DeploymentFactory(model_version=mv, observed_state=Observed.FAILED)
        DeploymentFactory(model_version=mv, desired_state=Desired.INACTIVE, observed_state=Observed.INACTIVE)
        calls = []
        monkeypatch.setattr(reconcile_deployment_task, "delay", lambda pk, *rest: calls.append(pk))

        assert reconcile_all.apply().get() == 3
        assert set(calls) == wanted
