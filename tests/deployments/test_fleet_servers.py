"""Servers with capacity and labels (issue 16, docs/fleet.md): declared through the audited
services, the API and the admin; a server holding replicas is not removed; health shows why a
server is DOWN."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from apps.deployments import services, tasks
from apps.deployments.models import Deployment, Desired, InferenceServer, Observed
from tests.conftest import otp_login
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

SERVERS = "/api/v1/deployments/servers/"


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def browser(admin_user):
    client = Client()
    otp_login(client, admin_user)
    return client


class TestRegister:
    def test_capacity_and_labels_are_stored_and_audited(self, staff_client):
        resp = staff_client.post(
            SERVERS,
            {
                "name": "a100-1",
                "http_url": "http://a100-1.internal:8000",
                "hardware": "gpu",
                "accelerator_model": "A100-80GB",
                "memory_mb": 81920,
                "labels": {"zone": "phi", "site": "beijing"},
                "metrics_url": "http://a100-1.internal:8002/metrics",
            },
            format="json",
        )

        assert resp.status_code == 201, resp.json()
        body = resp.json()
        assert (body["accelerator_model"], body["memory_mb"], body["labels"]) == (
            "A100-80GB",
            81920,
            {"zone": "phi", "site": "beijing"},
        )
        assert body["metrics_url"] == "http://a100-1.internal:8002/metrics" and body["last_error"] == ""
        server = InferenceServer.objects.get(name="a100-1")
        assert server.labels == {"zone": "phi", "site": "beijing"}
        after = AuditEvent.objects.get(event_type="deployment.server.create").details["after"]
        assert (after["memory_mb"], after["labels"]) == (81920, {"zone": "phi", "site": "beijing"})

    @pytest.mark.parametrize(
        ("payload", "code", "field"),
        [
            ({"labels": ["zone=phi"]}, "invalid_labels", "labels"),
            ({"labels": {"zone": 3}}, "invalid_labels", "labels"),
            ({"metrics_url": "http://169.254.169.254/metrics"}, "server_address_forbidden", "metrics_url"),
            ({"metrics_url": "ftp://x/metrics"}, "invalid_server_url", "metrics_url"),
        ],
    )
    def test_bad_declarations_are_refused_and_audited(self, staff_client, payload, code, field):
        resp = staff_client.post(
            SERVERS, {"name": "edge-1", "http_url": "http://edge-1:8000", **payload}, format="json"
        )

        assert resp.status_code == 400, resp.json()
        assert (resp.json()["code"], resp.json()["field"]) == (code, field)
        assert not InferenceServer.objects.exists()
        assert AuditEvent.objects.get(event_type="deployment.server.rejected").error_code == code


class TestUpdate:
    def test_patch_changes_declarations_with_before_and_after(self, staff_client, staff_user):
        server = InferenceServerFactory(name="edge-1")

        resp = staff_client.patch(
            f"{SERVERS}{server.pk}/", {"memory_mb": 4096, "labels": {"zone": "phi"}}, format="json"
        )

        assert resp.status_code == 200, resp.json()
        server.refresh_from_db()
        assert (server.memory_mb, server.labels) == (4096, {"zone": "phi"})
        event = AuditEvent.objects.get(event_type="deployment.server.update")
        assert event.actor == staff_user
        assert event.details["before"] == {"memory_mb": 0, "labels": {}}
        assert event.details["after"] == {"memory_mb": 4096, "labels": {"zone": "phi"}}

    def test_bad_update_changes_nothing(self, staff_user):
        server = InferenceServerFactory(name="edge-1", memory_mb=1024)

        with pytest.raises(ServiceError) as info:
            services.update_server(server_id=server.pk, memory_mb=2048, labels="zone", actor=staff_user)

        assert info.value.code == "invalid_labels"
        server.refresh_from_db()
        assert server.memory_mb == 1024
        assert not AuditEvent.objects.filter(event_type="deployment.server.update").exists()

    def test_name_and_address_are_not_changed(self, staff_user):
        server = InferenceServerFactory(name="edge-1")

        with pytest.raises(ServiceError) as info:
            services.update_server(server_id=server.pk, http_url="http://elsewhere:8000", actor=staff_user)

        assert info.value.code == "invalid_server_field"

    @pytest.mark.parametrize("persona", ["auditor_client", "user_client", "officer_client"])
    def test_only_the_admin_role_changes_or_removes(self, request, persona):
        server = InferenceServerFactory(name="edge-1")
        client = request.getfixturevalue(persona)

        assert client.patch(f"{SERVERS}{server.pk}/", {"memory_mb": 1}, format="json").status_code in (403, 404)
        assert client.delete(f"{SERVERS}{server.pk}/").status_code in (403, 404)
        server.refresh_from_db()
        assert server.memory_mb == 0


class TestDelete:
    def test_a_server_holding_replicas_is_not_removed(self, staff_client, staff_user, enqueued):
        mv = ModelVersionFactory(actor=staff_user)
        server = InferenceServerFactory(name="edge-1")
        services.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=staff_user)

        resp = staff_client.delete(f"{SERVERS}{server.pk}/")

        assert resp.status_code == 409
        assert resp.json()["code"] == "server_has_replicas"
        assert "edge-1 still holds 1 replica(s)" in resp.json()["detail"]
        assert InferenceServer.objects.filter(pk=server.pk).exists()
        assert not AuditEvent.objects.filter(event_type="deployment.server.delete").exists()

    def test_a_refused_removal_is_audited_and_keeps_the_credential(self, staff_user, enqueued):
        mv = ModelVersionFactory(actor=staff_user)
        server = services.register_server(
            name="edge-c", http_url="http://triton.example.org:8000", credential="s3cret-credential-0123456789abcdef",
            actor=staff_user,
        )  # fmt: skip
        services.request_deployment(model_version_id=mv.pk, server_id=server.pk, actor=staff_user)

        with pytest.raises(ServiceError) as exc:
            services.delete_server(server_id=server.pk, actor=staff_user)

        assert exc.value.code == "server_has_replicas"
        server.refresh_from_db()
        assert server.has_credential and server.credential_key.destroyed_at is None
        event = AuditEvent.objects.get(event_type="deployment.server.delete.rejected")
        assert (event.outcome, event.error_code) == ("failure", "server_has_replicas")

    def test_a_replica_undeployed_but_not_yet_unloaded_still_counts(self, staff_user):
        server = InferenceServerFactory(name="edge-1")
        DeploymentFactory(server=server, desired_state=Desired.INACTIVE, observed_state=Observed.UNLOADING)

        with pytest.raises(ServiceError) as info:
            services.delete_server(server_id=server.pk, actor=staff_user)

        assert (info.value.code, info.value.status_code) == ("server_has_replicas", 409)

    def test_a_server_with_only_settled_history_is_removed(self, staff_client, staff_user):
        server = InferenceServerFactory(name="edge-1")
        DeploymentFactory(server=server, desired_state=Desired.INACTIVE, observed_state=Observed.INACTIVE)

        resp = staff_client.delete(f"{SERVERS}{server.pk}/")

        assert resp.status_code == 204
        assert not InferenceServer.objects.exists() and not Deployment.objects.exists()
        event = AuditEvent.objects.get(event_type="deployment.server.delete")
        assert (event.actor, event.details["settled_deployments_removed"]) == (staff_user, 1)

    def test_admin_refuses_with_the_reason_and_keeps_the_server(self, browser):
        server = InferenceServerFactory(name="edge-1")
        DeploymentFactory(server=server)

        resp = browser.post(f"/admin/deployments/inferenceserver/{server.pk}/delete/", {"post": "yes"}, follow=True)

        assert resp.status_code == 200
        assert "server_has_replicas" in resp.content.decode()
        assert InferenceServer.objects.filter(pk=server.pk).exists()

    def test_admin_removes_an_empty_server(self, browser, admin_user):
        server = InferenceServerFactory(name="edge-1")

        resp = browser.post(f"/admin/deployments/inferenceserver/{server.pk}/delete/", {"post": "yes"})

        assert resp.status_code == 302
        assert not InferenceServer.objects.exists()
        assert AuditEvent.objects.get(event_type="deployment.server.delete").actor == admin_user

    def test_admin_delete_post_without_the_confirmation_field_still_goes_through_the_service(self, browser, staff_user):
        """Django's own delete view deletes on any non-empty POST: that must not bypass the service (its
        refusals, its audit event, the credential's crypto-shredding)."""
        server = services.register_server(
            name="edge-x", http_url="http://triton.example.org:8000", credential="s3cret-credential-0123456789abcdef",
            actor=staff_user,
        )  # fmt: skip
        key = server.credential_key

        resp = browser.post(f"/admin/deployments/inferenceserver/{server.pk}/delete/", {"x": "1"})

        assert resp.status_code == 302
        assert not InferenceServer.objects.filter(pk=server.pk).exists()
        assert AuditEvent.objects.filter(event_type="deployment.server.delete").exists()
        key.refresh_from_db()
        assert key.destroyed_at is not None

    def test_admin_delete_post_without_the_field_is_refused_while_replicas_are_held(self, browser):
        server = InferenceServerFactory(name="edge-2")
        DeploymentFactory(server=server)

        browser.post(f"/admin/deployments/inferenceserver/{server.pk}/delete/", {"x": "1"})

        assert InferenceServer.objects.filter(pk=server.pk).exists()


class TestRestrictedTokens:
    def test_a_token_restricted_to_one_model_changes_no_server(self, staff_user):
        from tests.factories import token_for

        mv = ModelVersionFactory(model_name="triage", actor=staff_user)
        server = InferenceServerFactory(name="shared")
        token = token_for(staff_user, scopes=["read", "manage"], model_ids=[mv.model_id])
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

        patched = client.patch(f"{SERVERS}{server.pk}/", {"labels": {"zone": "x"}}, content_type="application/json")
        deleted = client.delete(f"{SERVERS}{server.pk}/")
        created = client.post(SERVERS, {"name": "n", "http_url": "http://n:8000"}, content_type="application/json")

        for resp in (patched, deleted, created):
            assert resp.status_code == 403 and resp.json()["code"] == "token_restricted_to_models", resp.content
        server.refresh_from_db()
        assert server.labels == {} and InferenceServer.objects.count() == 1
        assert client.get(SERVERS).status_code == 200  # reading stays


class TestAdminForms:
    def test_add_with_capacity(self, browser):
        resp = browser.post(
            "/admin/deployments/inferenceserver/add/",
            {
                "name": "npu-1",
                "http_url": "http://npu-1:8000",
                "grpc_url": "",
                "hardware": "npu",
                "accelerator_model": "Ascend 910B",
                "memory_mb": "65536",
                "backends": '["python", "onnxruntime"]',
                "labels": '{"site": "beijing"}',
                "metrics_url": "",
            },
        )

        assert resp.status_code == 302
        server = InferenceServer.objects.get(name="npu-1")
        assert (server.accelerator_model, server.memory_mb, server.labels) == (
            "Ascend 910B",
            65536,
            {"site": "beijing"},
        )

    def test_change_goes_through_the_service(self, browser, admin_user):
        server = InferenceServerFactory(name="edge-1")

        resp = browser.post(
            f"/admin/deployments/inferenceserver/{server.pk}/change/",
            {
                "grpc_url": "",
                "hardware": "cpu",
                "accelerator_model": "",
                "memory_mb": "2048",
                "backends": '["python", "onnxruntime"]',
                "labels": '{"zone": "phi"}',
                "metrics_url": "",
            },
        )

        assert resp.status_code == 302, resp.content.decode()[:2000]
        server.refresh_from_db()
        assert (server.memory_mb, server.labels) == (2048, {"zone": "phi"})
        assert AuditEvent.objects.get(event_type="deployment.server.update").actor == admin_user


class TestHealth:
    def test_probe_records_why_a_server_is_down_and_clears_it_when_up(self, monkeypatch):
        server = InferenceServerFactory(name="edge-1")  # nothing listens on its port

        services.probe_server(server.pk)

        server.refresh_from_db()
        assert server.state == "down"
        assert server.last_error
        InferenceServer.objects.filter(pk=server.pk).update(state="down")
        monkeypatch.setattr("inference_backend.client.TritonClient.server_ready", lambda self: True)
        services.probe_server(server.pk)
        server.refresh_from_db()
        assert (server.state, server.last_error) == ("up", "")

    def test_api_shows_last_error(self, staff_client):
        server = InferenceServerFactory(name="edge-1")
        services.probe_server(server.pk)

        body = staff_client.get(f"{SERVERS}{server.pk}/").json()

        assert body["state"] == "down" and body["last_error"]

    def test_failed_checks_in_a_row_are_counted_and_reset_when_the_server_answers(self, monkeypatch):
        """Issue 17: how many checks in a row failed, and when the last one ran, beside the state."""
        server = InferenceServerFactory(name="edge-2")
        services.probe_server(server.pk)
        services.probe_server(server.pk)
        server.refresh_from_db()
        assert (server.state, server.failures) == ("down", 2) and server.checked_at is not None
        assert AuditEvent.objects.filter(event_type="deployment.server.state", target_id=str(server.pk)).count() == 1

        monkeypatch.setattr("inference_backend.client.TritonClient.server_ready", lambda self: True)
        services.probe_server(server.pk)
        server.refresh_from_db()
        assert (server.state, server.failures, server.last_error) == ("up", 0, "")
        assert server.last_seen_at == server.checked_at

    def test_a_replica_waiting_on_an_unreachable_server_says_which_retry_it_is_on(self, browser, settings):
        """The reconcile task records its retry (the worker's part, run here); the admin's pages show it and
        the server's failed checks instead of only "loading", and reload themselves meanwhile."""
        from inference_backend.client import TritonUnavailable

        settings.DEPLOY_MAX_RETRIES = 5
        dep = DeploymentFactory(server=InferenceServerFactory(name="edge-3"), observed_state=Observed.PENDING)
        with pytest.raises(TritonUnavailable):
            tasks.reconcile_deployment_task(dep.pk)
        dep.refresh_from_db()
        assert (dep.observed_state, dep.retries) == (Observed.LOADING, 1) and dep.retry_at is not None

        page = browser.get(f"/admin/deployments/deployment/{dep.pk}/change/").content.decode()
        assert "server not answering: retry 1 of 5" in page
        assert "failed checks in a row: 1" in page and 'id="sv-live"' in page and "deployments/live.js" in page
        servers = browser.get("/admin/deployments/inferenceserver/").content.decode()
        assert "failed checks in a row: 1" in servers and 'id="sv-live"' in servers

        services.fail_deployment(dep.pk, "Triton unreachable after 5 retries: refused")
        dep.refresh_from_db()
        assert (dep.observed_state, dep.retries, dep.retry_at) == (Observed.FAILED, 0, None)
