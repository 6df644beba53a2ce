"""/api/v1/deployments/: servers and deployments are requested in the database; a task does the rest."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent, Outcome
from apps.deployments import tasks
from apps.deployments.models import Deployment, DeploymentTransition, Desired, InferenceServer, Observed
from tests.factories import DeploymentFactory, InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

SERVERS = "/api/v1/deployments/servers/"
DEPLOYMENTS = "/api/v1/deployments/deployments/"


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    """Calls of reconcile_deployment_task.delay (the broker is not involved in unit tests)."""
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def model_version(staff_user):
    return ModelVersionFactory(model_name="triage", actor=staff_user)


@pytest.fixture
def server():
    return InferenceServerFactory(name="edge-1")


class TestServers:
    def test_register(self, staff_client, staff_user):
        resp = staff_client.post(
            SERVERS, {"name": "edge-1", "http_url": "http://triton-1.internal:8000/", "hardware": "gpu"}, format="json"
        )

        assert resp.status_code == 201, resp.json()
        server = InferenceServer.objects.get(name="edge-1")
        assert resp.json()["id"] == server.pk
        assert (server.http_url, server.hardware, server.state) == ("http://triton-1.internal:8000", "gpu", "unknown")
        event = AuditEvent.objects.get(event_type="deployment.server.create")
        assert (event.actor, event.target_id) == (staff_user, str(server.pk))
        assert event.details["after"]["http_url"] == "http://triton-1.internal:8000"

    @pytest.mark.parametrize(
        "url", ["http://triton:8000", "http://triton-1:8000/", "https://[::1]:8443", "http://10.0.0.7"]
    )
    def test_service_style_hosts_accepted(self, staff_client, url):
        resp = staff_client.post(SERVERS, {"name": "edge-1", "http_url": url}, format="json")

        assert resp.status_code == 201, resp.json()
        assert InferenceServer.objects.get(name="edge-1").http_url == url.rstrip("/")

    @pytest.mark.parametrize("url", ["not a url", "ftp://triton:21", "http://", "http://tri ton:8000", "http://-x:80"])
    def test_invalid_url(self, staff_client, url):
        resp = staff_client.post(SERVERS, {"name": "edge-1", "http_url": url}, format="json")

        assert resp.status_code == 400
        assert (resp.json()["code"], resp.json()["field"]) == ("invalid", "http_url")
        assert not InferenceServer.objects.exists()

    @pytest.mark.parametrize(("persona", "read_status"), [("auditor_client", 200), ("user_client", 403)])
    def test_only_the_admin_role_registers(self, request, server, persona, read_status):
        client = request.getfixturevalue(persona)
        assert client.get(SERVERS).status_code == read_status
        resp = client.post(SERVERS, {"name": "edge-2", "http_url": "http://x:8000"}, format="json")
        assert resp.status_code == 403
        assert not InferenceServer.objects.filter(name="edge-2").exists()

    def test_anonymous_is_401(self, anon_client):
        assert anon_client.get(SERVERS).status_code == 401


class TestRequestDeployment:
    def test_accepted_pending_audited_and_enqueued_after_commit(
        self, staff_client, staff_user, model_version, server, enqueued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            resp = staff_client.post(
                DEPLOYMENTS,
                {
                    "model_version": model_version.pk,
                    "server": server.pk,
                    "max_batch_size": 4,
                    "preferred_batch_sizes": [2, 4],
                },
                format="json",
                HTTP_X_REQUEST_ID="deploy-req-1",
            )

        assert resp.status_code == 202, resp.json()
        body = resp.json()
        dep = Deployment.objects.get(pk=body["id"])
        assert (body["desired_state"], body["observed_state"]) == ("active", "pending")
        assert (dep.desired_state, dep.observed_state) == (Desired.ACTIVE, Observed.PENDING)
        assert (dep.max_batch_size, dep.preferred_batch_sizes, dep.requested_by) == (4, [2, 4], staff_user)
        assert [(t.from_state, t.to_state) for t in dep.transitions.all()] == [("", "pending")]
        assert body["transitions"][0]["to_state"] == "pending"
        event = AuditEvent.objects.get(event_type="deployment.request")
        assert (event.actor, event.target_id, event.request_id) == (staff_user, str(dep.pk), "deploy-req-1")
        assert event.details["after"]["batching"]["preferred_batch_sizes"] == [2, 4]
        assert len(callbacks) == 1
        assert enqueued == [(dep.pk, "deploy-req-1")]

    def test_task_not_enqueued_before_commit(self, staff_client, model_version, server, enqueued):
        resp = staff_client.post(DEPLOYMENTS, {"model_version": model_version.pk, "server": server.pk}, format="json")

        assert resp.status_code == 202
        assert enqueued == []

    @pytest.mark.parametrize(
        "batching",
        [
            {"max_batch_size": 8, "preferred_batch_sizes": [16]},
            {"max_batch_size": 0, "dynamic_batching": True},
        ],
        ids=["preferred-above-max", "dynamic-without-batching"],
    )
    def test_invalid_batching(
        self, staff_client, model_version, server, enqueued, django_capture_on_commit_callbacks, batching
    ):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            resp = staff_client.post(
                DEPLOYMENTS, {"model_version": model_version.pk, "server": server.pk, **batching}, format="json"
            )

        assert resp.status_code == 400, resp.json()
        assert resp.json()["code"] == "invalid_batching"
        assert not Deployment.objects.exists()
        assert not DeploymentTransition.objects.exists()
        assert not AuditEvent.objects.filter(event_type="deployment.request").exists()
        assert callbacks == [] and enqueued == []

    def test_same_version_twice_on_one_server_is_409(
        self, staff_client, model_version, server, enqueued, django_capture_on_commit_callbacks
    ):
        first = DeploymentFactory(model_version=model_version, server=server, observed_state=Observed.PENDING)

        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            resp = staff_client.post(
                DEPLOYMENTS, {"model_version": model_version.pk, "server": server.pk}, format="json"
            )

        assert resp.status_code == 409, resp.json()
        assert (resp.json()["code"], resp.json()["field"]) == ("already_deployed", "server")
        assert list(Deployment.objects.all()) == [first]
        assert not DeploymentTransition.objects.exists()
        assert not AuditEvent.objects.filter(event_type="deployment.request").exists()
        assert callbacks == [] and enqueued == []

    def test_another_version_beside_a_live_one_on_the_same_server_is_allowed(
        self, staff_client, model_version, server, staff_user, enqueued, django_capture_on_commit_callbacks
    ):
        """Each version loads under its own Triton name ("triage--v1", "triage--v2"): no 409, no gap."""
        live = DeploymentFactory(model_version=model_version, server=server, observed_state=Observed.ACTIVE)
        newer = ModelVersionFactory(model_name="triage", actor=staff_user)

        with django_capture_on_commit_callbacks(execute=True):
            resp = staff_client.post(DEPLOYMENTS, {"model_version": newer.pk, "server": server.pk}, format="json")

        assert resp.status_code == 202, resp.json()
        dep = Deployment.objects.get(pk=resp.json()["id"])
        assert (dep.model_version, dep.server) == (newer, server)
        assert {live.triton_name, dep.triton_name} == {"triage--v1", "triage--v2"}
        live.refresh_from_db()
        assert live.desired_state == Desired.ACTIVE  # the live version is left as it was
        assert [args[0] for args in enqueued] == [dep.pk]

    def test_same_model_on_another_server_is_allowed(self, staff_client, model_version, server, enqueued):
        DeploymentFactory(model_version=model_version, server=server)
        other = InferenceServerFactory()

        resp = staff_client.post(DEPLOYMENTS, {"model_version": model_version.pk, "server": other.pk}, format="json")

        assert resp.status_code == 202

    def test_after_undeploy_the_model_can_be_deployed_again(self, staff_client, model_version, server, enqueued):
        DeploymentFactory(model_version=model_version, server=server, desired_state=Desired.INACTIVE)

        resp = staff_client.post(DEPLOYMENTS, {"model_version": model_version.pk, "server": server.pk}, format="json")

        assert resp.status_code == 202

    @pytest.mark.parametrize(
        ("field", "code"), [("model_version", "model_version_not_found"), ("server", "server_not_found")]
    )
    def test_unknown_references_are_404(self, staff_client, model_version, server, field, code):
        payload = {"model_version": model_version.pk, "server": server.pk, field: 999_999}

        resp = staff_client.post(DEPLOYMENTS, payload, format="json")

        assert resp.status_code == 404
        assert resp.json()["code"] == code
        assert not Deployment.objects.exists()

    @pytest.mark.parametrize("persona", ["user_client", "auditor_client", "officer_client"])
    def test_roles_other_than_admin_are_403(self, request, model_version, server, persona):
        client = request.getfixturevalue(persona)
        resp = client.post(DEPLOYMENTS, {"model_version": model_version.pk, "server": server.pk}, format="json")

        assert resp.status_code == 403
        assert not Deployment.objects.exists()


class TestUndeployAndRedeploy:
    def test_undeploy(self, staff_client, staff_user, model_version, enqueued, django_capture_on_commit_callbacks):
        dep = DeploymentFactory(model_version=model_version)

        with django_capture_on_commit_callbacks(execute=True):
            resp = staff_client.post(f"{DEPLOYMENTS}{dep.pk}/undeploy/")

        assert resp.status_code == 202
        assert resp.json()["desired_state"] == "inactive"
        dep.refresh_from_db()
        assert (dep.desired_state, dep.observed_state) == (Desired.INACTIVE, Observed.ACTIVE)
        event = AuditEvent.objects.get(event_type="deployment.undeploy")
        assert (event.actor, event.target_id, event.outcome) == (staff_user, str(dep.pk), Outcome.SUCCESS)
        assert event.details == {
            "before": {"desired_state": "active"},
            "after": {"desired_state": "inactive"},
            "token_issuer_id": staff_user.pk,  # made with ops's token, which ops issued
            "token_issuer": "ops",
        }
        assert [args[0] for args in enqueued] == [dep.pk]

    def test_redeploy_failed(self, staff_client, model_version, enqueued, django_capture_on_commit_callbacks):
        dep = DeploymentFactory(model_version=model_version, observed_state=Observed.FAILED, last_error="boom")

        with django_capture_on_commit_callbacks(execute=True):
            resp = staff_client.post(f"{DEPLOYMENTS}{dep.pk}/redeploy/")

        assert resp.status_code == 202
        dep.refresh_from_db()
        assert (dep.desired_state, dep.observed_state, dep.last_error) == (Desired.ACTIVE, Observed.PENDING, "")
        assert dep.transitions.get().to_state == Observed.PENDING
        assert AuditEvent.objects.get(event_type="deployment.request").details["before"]["observed_state"] == "failed"
        assert [args[0] for args in enqueued] == [dep.pk]

    @pytest.mark.parametrize("action", ["undeploy/", "redeploy/", ""])
    def test_unknown_deployment_is_404(self, staff_client, action):
        resp = (
            staff_client.post(f"{DEPLOYMENTS}424242/{action}") if action else staff_client.get(f"{DEPLOYMENTS}424242/")
        )

        assert resp.status_code == 404
        assert resp.json()["code"] == "not_found"

    @pytest.mark.parametrize("persona", ["user_client", "auditor_client", "officer_client"])
    def test_roles_other_than_admin_cannot_undeploy(self, request, model_version, persona):
        dep = DeploymentFactory(model_version=model_version)

        resp = request.getfixturevalue(persona).post(f"{DEPLOYMENTS}{dep.pk}/undeploy/")

        assert resp.status_code == 403
        dep.refresh_from_db()
        assert dep.desired_state == Desired.ACTIVE

    def test_list_and_filter(self, auditor_client, model_version, staff_user):
        mine = DeploymentFactory(model_version=model_version)
        DeploymentFactory(model_version=ModelVersionFactory(actor=staff_user), observed_state=Observed.FAILED)

        resp = auditor_client.get(DEPLOYMENTS, {"model__name": "triage"})

        assert resp.status_code == 200
        assert [d["id"] for d in resp.json()["results"]] == [mine.pk]
        assert auditor_client.get(DEPLOYMENTS, {"observed_state": "failed"}).json()["count"] == 1
