"""Replica sets (issue 16, docs/fleet.md): N replicas of a version placed by the scheduler, scaled
and retired through audited services; refusals leave nothing half-saved."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent, Outcome
from apps.core.errors import ServiceError
from apps.deployments import services, tasks
from apps.deployments.models import Deployment, Desired, Observed, ReplicaSet, ReplicaSetState
from apps.registry.services import shred_model_version
from tests.factories import InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

SETS = "/api/v1/deployments/replica-sets/"


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def mv(staff_user):
    return ModelVersionFactory(model_name="triage", actor=staff_user)


@pytest.fixture
def fleet():
    """Three servers: two in zone phi with 8 GiB, one public with 16 GiB."""
    return {
        "triton-1": InferenceServerFactory(name="triton-1", labels={"zone": "phi"}, memory_mb=8192, state="up"),
        "triton-2": InferenceServerFactory(name="triton-2", labels={"zone": "phi"}, memory_mb=8192, state="up"),
        "triton-3": InferenceServerFactory(name="triton-3", labels={"zone": "public"}, memory_mb=16384, state="up"),
    }


def request(mv, actor, **kw) -> ReplicaSet:
    return services.request_replica_set(model_version_id=mv.pk, actor=actor, **kw)


def servers_of(rs) -> list[str]:
    return sorted(rs.deployments.filter(desired_state=Desired.ACTIVE).values_list("server__name", flat=True))


def nothing_saved() -> None:
    assert not ReplicaSet.objects.exists()
    assert not Deployment.objects.exists()
    assert not AuditEvent.objects.filter(
        event_type__in=["deployment.request", "deployment.replica_set.create"]
    ).exists()


class TestRequest:
    def test_places_audits_and_enqueues_after_commit(
        self, mv, fleet, staff_user, enqueued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            rs = request(
                mv, staff_user, replicas=2, labels={"zone": "phi"}, memory_mb=4096, batching={"max_batch_size": 4}
            )

        assert servers_of(rs) == ["triton-1", "triton-2"]
        assert (rs.replicas, rs.traffic_weight, rs.state, rs.requested_by) == (2, 100, "active", staff_user)
        deps = list(rs.deployments.all())
        assert {d.max_batch_size for d in deps} == {4}
        assert {d.observed_state for d in deps} == {Observed.PENDING}
        assert sorted(pk for pk, _ in enqueued) == sorted(d.pk for d in deps)
        event = AuditEvent.objects.get(event_type="deployment.replica_set.create")
        assert (event.actor, event.target_id) == (staff_user, str(rs.pk))
        assert sorted(event.details["servers"]) == ["triton-1", "triton-2"]
        assert event.details["after"]["labels"] == {"zone": "phi"}
        assert AuditEvent.objects.filter(event_type="deployment.request").count() == 2

    def test_memory_bin_packs_onto_the_tightest_server(
        self, mv, fleet, staff_user, enqueued, django_capture_on_commit_callbacks
    ):
        other = ModelVersionFactory(model_name="other", actor=staff_user)
        with django_capture_on_commit_callbacks(execute=True):
            request(other, staff_user, replicas=1, labels={"zone": "phi"}, memory_mb=2048)  # → triton-1 (name)
            rs = request(mv, staff_user, replicas=1, memory_mb=4096)

        assert servers_of(rs) == ["triton-1"]  # 2 GiB left there, 4 on triton-2, 12 on triton-3

    def test_second_version_gets_no_traffic(self, mv, fleet, staff_user, enqueued):
        first = request(mv, staff_user, replicas=1)
        v2 = ModelVersionFactory(model_name="triage", actor=staff_user)
        second = request(v2, staff_user, replicas=1)

        assert (first.traffic_weight, second.traffic_weight) == (100, 0)

    def test_impossible_placement_saves_nothing_and_audits_the_reasons(self, mv, fleet, staff_user, enqueued):
        fleet["triton-2"].state = "down"
        fleet["triton-2"].save()

        with pytest.raises(ServiceError) as info:
            request(mv, staff_user, replicas=2, labels={"zone": "phi"}, memory_mb=8192)

        assert (info.value.code, info.value.status_code) == ("placement_impossible", 409)
        assert info.value.reasons == ["triton-2: DOWN", "triton-3: lacks label zone=phi"]
        nothing_saved()
        event = AuditEvent.objects.get(event_type="deployment.replica_set.rejected")
        assert (event.outcome, event.error_code) == (Outcome.FAILURE, "placement_impossible")
        assert event.details["reasons"] == info.value.reasons
        assert enqueued == []

    def test_memory_already_taken_is_counted(self, mv, fleet, staff_user, enqueued):
        other = ModelVersionFactory(model_name="other", actor=staff_user)
        request(other, staff_user, replicas=2, labels={"zone": "phi"}, memory_mb=6144)

        with pytest.raises(ServiceError) as info:
            request(mv, staff_user, replicas=2, labels={"zone": "phi"}, memory_mb=4096)

        assert info.value.reasons == [
            "triton-1: 2048 MiB free, needs 4096",
            "triton-2: 2048 MiB free, needs 4096",
            "triton-3: lacks label zone=phi",
        ]
        assert not ReplicaSet.objects.filter(model_version=mv).exists()

    def test_backend_is_required(self, mv, staff_user, enqueued):
        InferenceServerFactory(name="vllm-1", backends=["vllm"])

        with pytest.raises(ServiceError) as info:
            request(mv, staff_user)

        assert info.value.reasons == ["vllm-1: lacks backend python"]

    @pytest.mark.parametrize(
        ("kw", "code"),
        [
            ({"replicas": 0}, "invalid_replicas"),
            ({"replicas": 65}, "invalid_replicas"),
            ({"replicas": "2"}, "invalid_replicas"),
            ({"labels": ["zone=phi"]}, "invalid_labels"),
            ({"labels": {"zone": 1}}, "invalid_labels"),
            ({"accelerator": "tpu"}, "unknown_accelerator"),
            ({"memory_mb": -1}, "invalid_memory"),
            ({"batching": {"max_batch_size": 0, "dynamic_batching": True}}, "invalid_batching"),
        ],
    )
    def test_bad_input(self, mv, fleet, staff_user, enqueued, kw, code):
        with pytest.raises(ServiceError) as info:
            request(mv, staff_user, **kw)

        assert info.value.code == code
        nothing_saved()
        assert AuditEvent.objects.get(event_type="deployment.replica_set.rejected").error_code == code

    def test_unknown_version_is_404(self, staff_user, fleet):
        with pytest.raises(ServiceError) as info:
            services.request_replica_set(model_version_id=999_999, actor=staff_user)

        assert (info.value.code, info.value.status_code) == ("model_version_not_found", 404)
        nothing_saved()

    def test_shredded_version_is_refused(self, mv, fleet, officer_user, staff_user, enqueued):
        shred_model_version(model_version_id=mv.pk, reason="retention ended", actor=officer_user)

        with pytest.raises(ServiceError) as info:
            request(mv, staff_user)

        assert (info.value.code, info.value.status_code) == ("artifact_shredded", 409)
        nothing_saved()

    def test_one_active_set_per_version(self, mv, fleet, staff_user, enqueued):
        request(mv, staff_user)

        with pytest.raises(ServiceError) as info:
            request(mv, staff_user)

        assert (info.value.code, info.value.status_code) == ("replica_set_exists", 409)
        assert ReplicaSet.objects.count() == 1 and Deployment.objects.count() == 1


class TestScale:
    def test_up_places_new_replicas_on_other_servers(self, mv, fleet, staff_user, enqueued):
        rs = request(mv, staff_user, replicas=1, batching={"max_batch_size": 2})

        rs = services.scale_replica_set(replica_set_id=rs.pk, replicas=3, actor=staff_user)

        assert servers_of(rs) == ["triton-1", "triton-2", "triton-3"]
        assert {d.max_batch_size for d in rs.deployments.all()} == {2}  # batching copied
        assert (rs.replicas, rs.max_replicas) == (3, 3)
        event = AuditEvent.objects.get(event_type="deployment.replica_set.scale")
        assert event.details["before"] == {"replicas": 1} and event.details["after"] == {"replicas": 3}
        assert sorted(event.details["added"]) == ["triton-2", "triton-3"]

    def test_down_undeploys_the_newest_first(self, mv, fleet, staff_user, enqueued):
        rs = request(mv, staff_user, replicas=1)
        rs = services.scale_replica_set(replica_set_id=rs.pk, replicas=3, actor=staff_user)
        newest = rs.deployments.order_by("-created_at", "-pk")[:2]
        newest_ids = {d.pk for d in newest}
        enqueued.clear()

        rs = services.scale_replica_set(replica_set_id=rs.pk, replicas=1, actor=staff_user)

        gone = set(rs.deployments.filter(desired_state=Desired.INACTIVE).values_list("pk", flat=True))
        assert gone == newest_ids
        assert rs.replicas == 1 and rs.min_replicas == 1

    def test_up_beyond_the_fleet_changes_nothing(self, mv, fleet, staff_user, enqueued):
        rs = request(mv, staff_user, replicas=2, labels={"zone": "phi"})

        with pytest.raises(ServiceError) as info:
            services.scale_replica_set(replica_set_id=rs.pk, replicas=3, actor=staff_user)

        assert info.value.code == "placement_impossible"
        assert "triton-1: already holds a replica of this version" in info.value.reasons
        assert "triton-3: lacks label zone=phi" in info.value.reasons
        rs.refresh_from_db()
        assert rs.replicas == 2 and rs.deployments.count() == 2
        assert AuditEvent.objects.get(event_type="deployment.replica_set.scale.rejected").details["reasons"]

    @pytest.mark.parametrize("replicas", [0, 65])
    def test_invalid_replicas(self, mv, fleet, staff_user, enqueued, replicas):
        rs = request(mv, staff_user)

        with pytest.raises(ServiceError) as info:
            services.scale_replica_set(replica_set_id=rs.pk, replicas=replicas, actor=staff_user)

        assert info.value.code == "invalid_replicas"

    def test_retired_set_cannot_be_scaled(self, mv, fleet, staff_user, enqueued):
        rs = request(mv, staff_user)
        services.retire_replica_set(replica_set_id=rs.pk, actor=staff_user)

        with pytest.raises(ServiceError) as info:
            services.scale_replica_set(replica_set_id=rs.pk, replicas=2, actor=staff_user)

        assert (info.value.code, info.value.status_code) == ("replica_set_retired", 409)


class TestRetire:
    def test_the_only_set_retires_with_its_traffic(self, mv, fleet, staff_user, enqueued):
        rs = request(mv, staff_user, replicas=2)

        rs = services.retire_replica_set(replica_set_id=rs.pk, actor=staff_user)

        assert (rs.state, rs.replicas, rs.traffic_weight) == (ReplicaSetState.RETIRED, 0, 0)
        assert set(rs.deployments.values_list("desired_state", flat=True)) == {Desired.INACTIVE}
        assert AuditEvent.objects.filter(event_type="deployment.replica_set.retire").count() == 1
        assert services.retire_replica_set(replica_set_id=rs.pk, actor=staff_user).state == "retired"  # idempotent

    def test_a_set_with_traffic_beside_another_live_set_is_refused(self, mv, fleet, staff_user, enqueued):
        first = request(mv, staff_user)
        second = request(ModelVersionFactory(model_name="triage", actor=staff_user), staff_user)

        with pytest.raises(ServiceError) as info:
            services.retire_replica_set(replica_set_id=first.pk, actor=staff_user)

        assert (info.value.code, info.value.status_code) == ("replica_set_has_traffic", 409)
        first.refresh_from_db()
        assert first.state == "active" and first.deployments.get().desired_state == Desired.ACTIVE
        assert services.retire_replica_set(replica_set_id=second.pk, actor=staff_user).state == "retired"


class TestHandDeployments:
    """request_deployment (a server chosen by hand) keeps working: each deployment joins a set."""

    def test_request_deployment_makes_a_set_of_one(self, mv, fleet, staff_user, enqueued):
        dep = services.request_deployment(model_version_id=mv.pk, server_id=fleet["triton-3"].pk, actor=staff_user)

        rs = dep.replica_set
        assert (rs.model_version, rs.replicas, rs.traffic_weight, rs.state) == (mv, 1, 100, "active")
        assert AuditEvent.objects.get(event_type="deployment.replica_set.create").details["pinned"] == "triton-3"

    def test_a_second_server_joins_the_same_set(self, mv, fleet, staff_user, enqueued):
        a = services.request_deployment(model_version_id=mv.pk, server_id=fleet["triton-1"].pk, actor=staff_user)
        b = services.request_deployment(model_version_id=mv.pk, server_id=fleet["triton-2"].pk, actor=staff_user)

        assert a.replica_set_id == b.replica_set_id
        assert ReplicaSet.objects.get().replicas == 2

    def test_undeploying_the_last_replica_retires_the_set_and_hands_its_traffic_on(
        self, mv, fleet, staff_user, enqueued
    ):
        dep = services.request_deployment(model_version_id=mv.pk, server_id=fleet["triton-1"].pk, actor=staff_user)
        v2 = ModelVersionFactory(model_name="triage", actor=staff_user)
        newer = request(v2, staff_user, replicas=1, labels={"zone": "public"})

        services.request_undeploy(deployment_id=dep.pk, actor=staff_user)

        dep.replica_set.refresh_from_db()
        newer.refresh_from_db()
        assert (dep.replica_set.state, dep.replica_set.traffic_weight) == ("retired", 0)
        assert newer.traffic_weight == 100

    def test_redeploy_rejoins_a_set(self, mv, fleet, staff_user, enqueued):
        dep = services.request_deployment(model_version_id=mv.pk, server_id=fleet["triton-1"].pk, actor=staff_user)
        services.request_undeploy(deployment_id=dep.pk, actor=staff_user)

        dep = services.request_redeploy(deployment_id=dep.pk, actor=staff_user)

        assert dep.replica_set.state == "active" and dep.replica_set.replicas == 1
        assert ReplicaSet.objects.filter(state="active").count() == 1


class TestApi:
    def test_create_scale_retire(self, staff_client, mv, fleet, enqueued):
        resp = staff_client.post(
            SETS, {"model_version": mv.pk, "replicas": 2, "labels": {"zone": "phi"}, "memory_mb": 1024}, format="json"
        )
        assert resp.status_code == 202, resp.json()
        body = resp.json()
        assert (body["model"], body["version"], body["replicas"], body["ready"]) == ("triage", 1, 2, 0)
        assert sorted(body["servers"]) == ["triton-1", "triton-2"]
        assert body["traffic_weight"] == 100

        resp = staff_client.post(f"{SETS}{body['id']}/scale/", {"replicas": 1}, format="json")
        assert resp.status_code == 202, resp.json()
        assert resp.json()["replicas"] == 1 and len(resp.json()["servers"]) == 1

        resp = staff_client.post(f"{SETS}{body['id']}/retire/")
        assert resp.status_code == 202, resp.json()
        assert resp.json()["state"] == "retired"

        listed = staff_client.get(SETS, {"model__name": "triage"}).json()
        assert [row["id"] for row in listed["results"]] == [body["id"]]

    def test_impossible_placement_is_409_with_reasons(self, staff_client, mv, fleet, enqueued):
        resp = staff_client.post(
            SETS, {"model_version": mv.pk, "replicas": 3, "labels": {"zone": "phi"}}, format="json"
        )

        assert resp.status_code == 409
        body = resp.json()
        assert body["code"] == "placement_impossible"
        assert body["reasons"] == ["triton-3: lacks label zone=phi"]
        assert "triton-3: lacks label zone=phi" in body["detail"]
        nothing_saved()

    @pytest.mark.parametrize(
        ("payload", "code"),
        [
            ({"replicas": 0}, "invalid_replicas"),
            ({"labels": "zone=phi"}, "invalid_labels"),
            ({"accelerator": "tpu"}, "unknown_accelerator"),
        ],
    )
    def test_bad_input_is_400(self, staff_client, mv, fleet, payload, code):
        resp = staff_client.post(SETS, {"model_version": mv.pk, **payload}, format="json")

        assert resp.status_code == 400, resp.json()
        assert resp.json()["code"] == code

    def test_unknown_version_is_404(self, staff_client, fleet):
        resp = staff_client.post(SETS, {"model_version": 999_999}, format="json")

        assert (resp.status_code, resp.json()["code"]) == (404, "model_version_not_found")

    def test_retire_with_traffic_is_409(self, staff_client, mv, staff_user, fleet, enqueued):
        first = request(mv, staff_user)
        request(ModelVersionFactory(model_name="triage", actor=staff_user), staff_user)

        resp = staff_client.post(f"{SETS}{first.pk}/retire/")

        assert (resp.status_code, resp.json()["code"]) == (409, "replica_set_has_traffic")

    @pytest.mark.parametrize(
        ("persona", "read_status"), [("auditor_client", 200), ("user_client", 403), ("officer_client", 403)]
    )
    def test_only_the_admin_role_writes(self, request, mv, staff_user, fleet, enqueued, persona, read_status):
        rs = services.request_replica_set(model_version_id=mv.pk, actor=staff_user)
        client = request.getfixturevalue(persona)

        assert client.get(SETS).status_code == read_status
        assert client.post(SETS, {"model_version": mv.pk}, format="json").status_code == 403
        assert client.post(f"{SETS}{rs.pk}/scale/", {"replicas": 2}, format="json").status_code in (403, 404)
        assert client.post(f"{SETS}{rs.pk}/retire/").status_code in (403, 404)
        rs.refresh_from_db()
        assert (rs.replicas, rs.state) == (1, "active")

    def test_anonymous_is_401(self, anon_client):
        assert anon_client.get(SETS).status_code == 401

    def test_hand_deployment_shows_its_set(self, staff_client, mv, fleet, enqueued):
        resp = staff_client.post(
            "/api/v1/deployments/deployments/", {"model_version": mv.pk, "server": fleet["triton-1"].pk}, format="json"
        )
        assert resp.status_code == 202
        sets = staff_client.get(SETS).json()["results"]
        assert [(s["replicas"], s["servers"]) for s in sets] == [(1, ["triton-1"])]


class TestAdmin:
    @pytest.fixture
    def browser(self, admin_user):
        from django.test import Client

        from tests.conftest import otp_login

        client = Client()
        otp_login(client, admin_user)
        return client

    def test_add_places_through_the_service(self, browser, admin_user, mv, fleet, enqueued):
        resp = browser.post(
            "/admin/deployments/replicaset/add/",
            {"model_version": mv.pk, "replicas": 2, "labels": '{"zone": "phi"}', "accelerator": "", "memory_mb": 0},
        )

        assert resp.status_code == 302, resp.content.decode()[:3000]
        rs = ReplicaSet.objects.get()
        assert servers_of(rs) == ["triton-1", "triton-2"]
        assert AuditEvent.objects.get(event_type="deployment.replica_set.create").actor == admin_user
        page = browser.get("/admin/deployments/replicaset/").content.decode()
        assert "0 / 2" in page and "zone=phi" in page

    def test_impossible_placement_shows_the_reasons(self, browser, mv, fleet, enqueued):
        resp = browser.post(
            "/admin/deployments/replicaset/add/",
            {"model_version": mv.pk, "replicas": 3, "labels": '{"zone": "phi"}', "accelerator": "", "memory_mb": 0},
            follow=True,
        )

        page = resp.content.decode()
        assert "placement_impossible" in page and "triton-3: lacks label zone=phi" in page
        nothing_saved()

    def test_scale_and_retire_actions(self, browser, staff_user, mv, fleet, enqueued):
        rs = request(mv, staff_user)
        url = "/admin/deployments/replicaset/"

        form = browser.post(url, {"action": "scale", "_selected_action": [rs.pk]})
        assert form.status_code == 200 and b"Scale replica sets" in form.content
        browser.post(url, {"action": "scale", "_selected_action": [rs.pk], "apply": "1", "replicas": 2})
        rs.refresh_from_db()
        assert rs.replicas == 2 and len(servers_of(rs)) == 2

        browser.post(url, {"action": "retire", "_selected_action": [rs.pk]})
        rs.refresh_from_db()
        assert rs.state == "retired"

    def test_autoscale_action_goes_through_the_service(self, browser, admin_user, staff_user, mv, fleet, enqueued):
        rs = request(mv, staff_user)
        url = "/admin/deployments/replicaset/"
        fields = {"metric": "queue_ms", "target": 25, "min_replicas": 1, "max_replicas": 3, "cooldown_seconds": 60}

        apply = {"action": "autoscale", "_selected_action": [rs.pk], "apply": "1", "enabled": "on"}

        form = browser.post(url, {"action": "autoscale", "_selected_action": [rs.pk]})
        assert form.status_code == 200 and b"Autoscale replica sets" in form.content
        refused = browser.post(url, {**apply, **fields, "min_replicas": 5}, follow=True)
        assert "invalid_autoscale" in refused.content.decode()
        rs.refresh_from_db()
        assert not rs.autoscale
        browser.post(url, {**apply, **fields})

        rs.refresh_from_db()
        assert (rs.autoscale, rs.autoscale_metric, rs.autoscale_target, rs.max_replicas) == (True, "queue_ms", 25.0, 3)
        assert AuditEvent.objects.get(event_type="deployment.replica_set.autoscale").actor == admin_user
        assert "queue_ms 25/replica, 1–3, cooldown 60 s" in browser.get(url).content.decode()

    def test_auditor_sees_but_cannot_act(self, auditor_user, staff_user, mv, fleet, enqueued):
        from django.test import Client

        from tests.conftest import otp_login

        rs = request(mv, staff_user)
        client = Client()
        otp_login(client, auditor_user)

        page = client.get("/admin/deployments/replicaset/")
        assert page.status_code == 200
        assert b'value="retire"' not in page.content and b'value="scale"' not in page.content
        assert b'value="autoscale"' not in page.content
        assert client.get("/admin/deployments/replicaset/add/").status_code == 403
        client.post("/admin/deployments/replicaset/", {"action": "retire", "_selected_action": [rs.pk]})
        rs.refresh_from_db()
        assert rs.state == "active"
