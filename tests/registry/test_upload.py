"""POST /api/v1/registry/models/{name}/versions/: validate, read the signature, encrypt at rest, audit."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import onnx
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from onnx import TensorProto, helper
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent, Outcome
from apps.keys.services import open_sealed
from apps.registry import services
from apps.registry.models import Artifact, Model, ModelVersion
from tests.factories import token_for

pytestmark = pytest.mark.django_db


def url(name: str) -> str:
    return f"/api/v1/registry/models/{name}/versions/"


def upload(client, name: str, data: bytes | None, **fields):
    payload = dict(fields)
    if data is not None:
        payload["file"] = SimpleUploadedFile("model.onnx", data, content_type="application/octet-stream")
    return client.post(url(name), payload, format="multipart")


def artifact_files() -> set[str]:
    return set(os.listdir(settings.ARTIFACT_DIR))


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def windows(data: bytes, size: int = 64, step: int = 16):
    """Every `step`-th window of `size` bytes: the ciphertext must contain none of them."""
    return (data[i : i + size] for i in range(0, max(1, len(data) - size + 1), step))


def invalid_onnx() -> bytes:
    """Parses as ONNX but fails onnx.checker: the node reads a tensor nobody defines."""
    graph = helper.make_graph(
        nodes=[helper.make_node("Relu", ["UNDEFINED"], ["OUTPUT"])],
        name="broken",
        inputs=[helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    return model.SerializeToString()


class TestUploadSuccess:
    def test_returns_signature_digest_and_suite(self, staff_client, onnx_bytes):
        resp = upload(staff_client, "triage", onnx_bytes, description="first")

        assert resp.status_code == 201, resp.json()
        body = resp.json()
        assert body["model"] == "triage"
        assert body["version"] == 1
        assert body["format"] == "onnx"
        assert body["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
        assert body["size_bytes"] == len(onnx_bytes)
        assert body["signature"] == {
            "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]}],
            "batch_dynamic": True,
        }
        assert body["artifact"]["suite"] == "AES-256-GCM"
        assert "wrapped_dek" not in body["artifact"]
        assert Model.objects.get(name="triage").description == "first"

    def test_ciphertext_is_private_encrypted_and_opens_to_the_plaintext(self, staff_client, onnx_bytes):
        before = artifact_files()

        resp = upload(staff_client, "triage", onnx_bytes)

        assert resp.status_code == 201, resp.json()
        art = Artifact.objects.get(version_id=resp.json()["id"])
        assert artifact_files() - before == {art.storage_name}
        path = Path(settings.ARTIFACT_DIR) / art.storage_name
        assert mode(path) == 0o600
        assert mode(settings.LOCAL_KEK_FILE) == 0o600
        ciphertext = path.read_bytes()
        assert len(ciphertext) == art.ciphertext_bytes
        assert hashlib.sha256(ciphertext).hexdigest() == art.ciphertext_sha256
        assert not any(w in ciphertext for w in windows(onnx_bytes))
        assert onnx_bytes not in bytes(art.data_key.wrapped)
        assert art.data_key.purpose == "artifact" and art.data_key.kek_id == art.kek_id
        assert open_sealed(ciphertext, art.aad.encode(), data_key=art.data_key) == onnx_bytes

    def test_records_model_and_version_events_with_actor(self, staff_client, staff_user, onnx_bytes):
        resp = upload(staff_client, "triage", onnx_bytes)

        assert resp.status_code == 201
        model_event = AuditEvent.objects.get(event_type="registry.model.create")
        version_event = AuditEvent.objects.get(event_type="registry.version.create")
        for event in (model_event, version_event):
            assert event.actor == staff_user
            assert event.actor_name == "ops"
            assert event.outcome == Outcome.SUCCESS
            assert event.token_id is not None
        assert version_event.target_type == "registry.modelversion"
        assert version_event.target_id == str(resp.json()["id"])
        assert version_event.details["after"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
        assert version_event.details["after"]["suite"] == "AES-256-GCM"

    def test_next_upload_gets_next_version_of_same_model(self, staff_client, onnx_bytes):
        assert upload(staff_client, "triage", onnx_bytes).status_code == 201

        resp = upload(staff_client, "triage", onnx_bytes)

        assert resp.status_code == 201
        assert resp.json()["version"] == 2
        assert Model.objects.count() == 1
        assert AuditEvent.objects.filter(event_type="registry.model.create").count() == 1
        assert AuditEvent.objects.filter(event_type="registry.version.create").count() == 2

    def test_a_renamed_output_is_recorded_as_breaking_against_the_previous_version(self, staff_client, onnx_bytes):
        from inference_backend.demo_model import build_demo_onnx

        assert upload(staff_client, "triage", onnx_bytes).json()["breaking_changes"] == []  # no previous
        same = upload(staff_client, "triage", onnx_bytes).json()
        renamed = upload(staff_client, "triage", build_demo_onnx()).json()  # OUTPUT → PROBABILITIES, 4 → 3

        assert same["breaking_changes"] == []
        assert "output 'OUTPUT' removed or renamed" in renamed["breaking_changes"]
        assert ModelVersion.objects.get(version=3).breaking_changes == renamed["breaking_changes"]
        event = AuditEvent.objects.filter(event_type="registry.version.create").latest("id")
        assert event.details["after"]["breaking_changes"] == renamed["breaking_changes"]

    def test_explicit_version_number(self, staff_client, onnx_bytes):
        resp = upload(staff_client, "triage", onnx_bytes, version=7)

        assert resp.status_code == 201
        assert ModelVersion.objects.get().version == 7


class TestUploadRefused:
    """Each refusal: stable code, nothing saved, no file left, one `registry.version.rejected` event."""

    @pytest.fixture
    def existing(self, staff_client, onnx_bytes):
        assert upload(staff_client, "triage", onnx_bytes, version=1).status_code == 201

    def assert_nothing_saved(self, before_rows, before_files):
        assert (Model.objects.count(), ModelVersion.objects.count(), Artifact.objects.count()) == before_rows
        assert artifact_files() == before_files

    @staticmethod
    def rows():
        return Model.objects.count(), ModelVersion.objects.count(), Artifact.objects.count()

    @pytest.mark.parametrize(
        ("name", "data", "fields", "status", "code", "field"),
        [
            ("triage", b"this is a text file, not a model" * 4, {}, 400, "not_onnx", "file"),
            ("triage", b"", {}, 400, "invalid", "file"),
            ("triage", "INVALID", {}, 400, "invalid_onnx", "file"),
            ("Triage Model", "ONNX", {}, 400, "invalid_model_name", "name"),
            ("-triage", "ONNX", {}, 400, "invalid_model_name", "name"),
            ("triage", "ONNX", {"version": 1}, 409, "duplicate_version", "version"),
            ("triage", None, {}, 400, "invalid", "file"),
            ("triage", "ONNX", {"version": "two"}, 400, "invalid", "version"),
            ("triage", "ONNX", {"version": 0}, 400, "invalid_version", "version"),
        ],
        ids=[
            "not-onnx",
            "empty",
            "invalid-onnx",
            "bad-name",
            "bad-name-leading-dash",
            "duplicate",
            "missing-file",
            "version-not-a-number",
            "version-zero",
        ],
    )
    def test_refused_upload(
        self, existing, staff_client, staff_user, onnx_bytes, name, data, fields, status, code, field
    ):
        data = {"INVALID": invalid_onnx(), "ONNX": onnx_bytes}.get(data, data) if isinstance(data, str) else data
        before_rows, before_files = self.rows(), artifact_files()

        resp = upload(staff_client, name, data, **fields)

        assert resp.status_code == status, resp.json()
        assert resp.json()["code"] == code
        assert resp.json()["field"] == field
        assert resp.json()["detail"]
        self.assert_nothing_saved(before_rows, before_files)
        event = AuditEvent.objects.get(event_type="registry.version.rejected")
        assert event.outcome == Outcome.FAILURE
        assert event.error_code == code
        assert event.actor == staff_user
        assert event.target_display == name

    def test_oversized_upload(self, existing, staff_client, staff_user, onnx_bytes, settings):
        settings.MAX_UPLOAD_BYTES = len(onnx_bytes) - 1
        before_rows, before_files = self.rows(), artifact_files()

        resp = upload(staff_client, "triage", onnx_bytes)

        assert resp.status_code == 413, resp.json()
        assert resp.json()["code"] == "file_too_large"
        assert resp.json()["field"] == "file"
        self.assert_nothing_saved(before_rows, before_files)
        event = AuditEvent.objects.get(event_type="registry.version.rejected")
        assert (event.outcome, event.error_code, event.actor) == (Outcome.FAILURE, "file_too_large", staff_user)

    def test_oversized_upload_refused_by_the_service_too(self, staff_user, onnx_bytes, settings):
        """Callers other than the API (admin, bootstrap) get the same limit from the service."""
        settings.MAX_UPLOAD_BYTES = len(onnx_bytes) - 1

        with pytest.raises(services.ServiceError) as exc:
            services.register_model_version(model_name="triage", data=onnx_bytes, actor=staff_user)

        assert (exc.value.code, exc.value.status_code) == ("file_too_large", 413)
        assert not Model.objects.exists()
        assert AuditEvent.objects.get(event_type="registry.version.rejected").error_code == "file_too_large"


class TestUploadPermissions:
    def test_anonymous_is_401(self, anon_client, onnx_bytes):
        resp = upload(anon_client, "triage", onnx_bytes)

        assert resp.status_code == 401
        assert resp.json()["code"] == "not_authenticated"
        assert not Model.objects.exists()

    @pytest.mark.parametrize("persona", ["user_client", "auditor_client", "officer_client", "guest_client"])
    def test_roles_other_than_admin_are_403(self, request, onnx_bytes, persona):
        before = artifact_files()

        resp = upload(request.getfixturevalue(persona), "triage", onnx_bytes)

        assert resp.status_code == 403
        assert resp.json()["code"] == "permission_denied"
        assert not Model.objects.exists()
        assert artifact_files() == before

    def test_token_without_manage_scope_is_403(self, staff_user, onnx_bytes):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(staff_user, scopes=['invoke', 'read'])}")

        resp = upload(client, "triage", onnx_bytes)

        assert (resp.status_code, resp.json()["code"]) == (403, "insufficient_scope")
        assert not Model.objects.exists()


class TestFailClosed:
    def test_audit_failure_rolls_back_rows_and_file(self, staff_user, onnx_bytes, monkeypatch):
        real = services.record_event

        def record_event(event_type, **kwargs):
            if event_type == "registry.version.create":
                raise RuntimeError("audit store unavailable")
            return real(event_type, **kwargs)

        monkeypatch.setattr(services, "record_event", record_event)
        client = APIClient(raise_request_exception=False)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(staff_user, scopes=['manage'])}")
        before = artifact_files()

        resp = upload(client, "triage", onnx_bytes)

        assert resp.status_code == 500
        assert (Model.objects.count(), ModelVersion.objects.count(), Artifact.objects.count()) == (0, 0, 0)
        assert artifact_files() == before
        assert not AuditEvent.objects.filter(event_group="registry").exists()

    def test_service_raises_and_leaves_nothing(self, staff_user, onnx_bytes, monkeypatch):
        def record_event(event_type, **kwargs):
            raise RuntimeError("audit store unavailable")

        monkeypatch.setattr(services, "record_event", record_event)
        before = artifact_files()

        with pytest.raises(RuntimeError, match="audit store unavailable"):
            services.register_model_version(model_name="triage", data=onnx_bytes, actor=staff_user)

        assert not Model.objects.exists()
        assert artifact_files() == before
