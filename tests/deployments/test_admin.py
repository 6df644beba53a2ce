"""Deployment admin: add forms and actions call the services (and so are audited and enqueued)."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from apps.audit.models import AuditEvent
from apps.deployments import tasks
from apps.deployments.models import Deployment, Desired, InferenceServer, Observed
from tests.conftest import otp_login
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(admin_user) -> Client:
    client = Client()
    otp_login(client, admin_user)
    return client


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: calls.append(args))
    return calls


class TestDeploymentAdmin:
    def test_add_server(self, browser, admin_user):
        resp = browser.post(
            "/admin/deployments/inferenceserver/add/",
            {"name": "edge-1", "http_url": "http://triton.example.org:8000/", "grpc_url": "", "hardware": "cpu"},
        )

        assert resp.status_code == 302
        server = InferenceServer.objects.get(name="edge-1")
        assert server.http_url == "http://triton.example.org:8000"
        assert AuditEvent.objects.get(event_type="deployment.server.create").actor == admin_user
        assert LogEntry.objects.get(object_id=str(server.pk)).object_repr == "edge-1"

    def test_add_deployment(self, browser, admin_user, enqueued, django_capture_on_commit_callbacks):
        mv = ModelVersionFactory(model_name="triage", actor=admin_user)
        server = InferenceServerFactory(name="edge-1")

        with django_capture_on_commit_callbacks(execute=True):
            resp = browser.post(
                "/admin/deployments/deployment/add/",
                {
                    "model_version": mv.pk,
                    "server": server.pk,
                    "max_batch_size": 4,
                    "dynamic_batching": "on",
                    "preferred_batch_sizes": "[2, 4]",
                    "max_queue_delay_us": 100,
                    "instance_count": 1,
                    "kind": "KIND_CPU",
                },
            )

        assert resp.status_code == 302, resp.content.decode()[:3000]
        dep = Deployment.objects.get()
        assert (dep.model, dep.observed_state, dep.preferred_batch_sizes) == (mv.model, Observed.PENDING, [2, 4])
        assert AuditEvent.objects.get(event_type="deployment.request").actor == admin_user
        assert enqueued == [(dep.pk, enqueued[0][1])]
        assert LogEntry.objects.get(object_id=str(dep.pk)).object_repr == "triage v1 on edge-1"
        page = browser.get(f"/admin/deployments/deployment/{dep.pk}/change/")
        assert page.status_code == 200
        assert "requested" in page.content.decode()

    def test_deploy_action_on_model_versions(self, browser, admin_user, enqueued):
        mv = ModelVersionFactory(model_name="triage", actor=admin_user)
        server = InferenceServerFactory(name="edge-1")

        resp = browser.post(
            "/admin/registry/modelversion/",
            {
                "action": "deploy",
                "_selected_action": [mv.pk],
                "apply": "1",
                "server": server.pk,
                "max_batch_size": 8,
                "dynamic_batching": "on",
                "max_queue_delay_us": 100,
                "instance_count": 1,
            },
            follow=True,
        )

        assert resp.status_code == 200
        dep = Deployment.objects.get()
        assert (dep.model_version, dep.server, dep.requested_by) == (mv, server, admin_user)
        # issue 17: the message links to the deployment it created
        assert f'<a href="/admin/deployments/deployment/{dep.pk}/change/">' in resp.content.decode()

    def test_a_deployment_waiting_on_an_unreachable_server_says_why(self, browser):
        """Issue 17: not a bare "loading" — the server's state, its last error, when it was last
        seen and that the reconcile retries (the probe recorded them on the server)."""
        dep = DeploymentFactory(observed_state=Observed.LOADING)
        InferenceServer.objects.filter(pk=dep.server_id).update(state="down", last_error="connection refused")

        for path in ("/admin/deployments/deployment/", f"/admin/deployments/deployment/{dep.pk}/change/"):
            page = browser.get(path).content.decode()
            assert 'class="sv-badge sv-badge--loading"' in page or path.endswith("/change/")
            assert 'class="sv-badge sv-badge--down"' in page and "connection refused" in page
            assert "never seen up" in page and "retried with backoff up to" in page

    def test_undeploy_action(self, browser, admin_user, enqueued):
        dep = DeploymentFactory(model_version=ModelVersionFactory(actor=admin_user))

        browser.post("/admin/deployments/deployment/", {"action": "undeploy", "_selected_action": [dep.pk]})

        dep.refresh_from_db()
        assert dep.desired_state == Desired.INACTIVE
        assert AuditEvent.objects.get(event_type="deployment.undeploy").actor == admin_user

    def test_refused_deployment_is_shown_and_nothing_saved(self, browser, admin_user, enqueued):
        mv = ModelVersionFactory(model_name="triage", actor=admin_user)
        existing = DeploymentFactory(model_version=mv)

        resp = browser.post(
            "/admin/deployments/deployment/add/",
            {
                "model_version": mv.pk,
                "server": existing.server.pk,
                "max_batch_size": 8,
                "dynamic_batching": "on",
                "preferred_batch_sizes": "[]",
                "max_queue_delay_us": 100,
                "instance_count": 1,
                "kind": "KIND_CPU",
            },
            follow=True,
        )

        assert resp.status_code == 200
        assert "already_deployed" in resp.content.decode()
        assert list(Deployment.objects.all()) == [existing]
