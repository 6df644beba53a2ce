"""Servers declare their Triton backends; a language-model version deploys only where its backend
runs, and renders as the decoupled python model with its encrypted file set."""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from apps.deployments import services, tasks
from apps.deployments.models import Deployment, InferenceServer
from apps.registry.services import register_llm_version
from tests.registry.llm_sets import tiny_set

pytestmark = pytest.mark.django_db
SERVERS = "/api/v1/deployments/servers/"


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.reconcile_deployment_task, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def llm_version(staff_user):
    return register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)


class TestBackends:
    def test_default_and_declared_backends(self, staff_client):
        resp = staff_client.post(SERVERS, {"name": "cpu-1", "http_url": "http://triton-1:8000"}, format="json")
        assert resp.status_code == 201 and resp.json()["backends"] == ["python", "onnxruntime"]
        resp = staff_client.post(
            SERVERS, {"name": "gpu-1", "http_url": "http://triton-2:8000", "backends": ["vllm"]}, format="json"
        )
        assert resp.status_code == 201 and resp.json()["backends"] == ["vllm"]
        assert InferenceServer.objects.get(name="gpu-1").backends == ["vllm"]

    @pytest.mark.parametrize("backends", [["pytorch"], [], ["vllm", "vllm"]])
    def test_unknown_backend_is_refused_and_audited(self, staff_client, backends):
        resp = staff_client.post(
            SERVERS, {"name": "gpu-1", "http_url": "http://triton-2:8000", "backends": backends}, format="json"
        )
        assert resp.status_code == 400 and resp.json()["code"] == "invalid_backends", resp.json()
        assert not InferenceServer.objects.exists()
        assert AuditEvent.objects.filter(
            event_type="deployment.server.rejected", error_code="invalid_backends"
        ).exists()

    def test_llm_refused_on_a_server_without_its_backend(self, staff_user, llm_version, enqueued):
        server = services.register_server(
            name="gpu-1", http_url="http://triton-2:8000", backends=["vllm"], actor=staff_user
        )
        with pytest.raises(ServiceError) as err:
            services.request_deployment(model_version_id=llm_version.pk, server_id=server.pk, actor=staff_user)
        assert err.value.code == "backend_unavailable" and err.value.status_code == 409
        assert not Deployment.objects.exists() and not enqueued
        event = AuditEvent.objects.get(event_type="deployment.request.rejected")
        assert event.error_code == "backend_unavailable" and event.details["server"] == "gpu-1"


class TestRender:
    def test_llm_renders_the_decoupled_model_with_every_encrypted_file(self, staff_user, llm_version, enqueued):
        server = services.register_server(name="cpu-1", http_url="http://triton-1:8000", actor=staff_user)
        dep = services.request_deployment(
            model_version_id=llm_version.pk, server_id=server.pk, batching={"max_batch_size": 4}, actor=staff_user
        )
        config, files = services.render_for_triton(dep)
        assert config["backend"] == "python" and config["model_transaction_policy"] == {"decoupled": True}
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        assert params["kek_id"] == llm_version.artifact.data_key.kek_id
        assert params["max_active_sequences"] == "4"
        listed = json.loads(params["artifact_files"])
        rows = {f.name: f for f in llm_version.artifact.files.all()}
        assert {e["name"] for e in listed} == set(rows)
        for entry in listed:
            row = rows[entry["name"]]
            assert entry == {"name": row.name, "file": row.storage_name, "aad": row.aad, "sha256": row.sha256}
            assert files[f"1/{row.storage_name}"] == row.path.read_bytes()
        assert files["1/model.py"] == services.TRITON_LLM_MODEL_SOURCE.read_bytes()
        assert set(files) == {"1/model.py", *(f"1/{r.storage_name}" for r in rows.values())}
