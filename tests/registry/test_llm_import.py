"""GGUF imports: `manage.py import_gguf` and POST /api/v1/registry/imports/ (staged encrypted,
converted and registered by the task). Malformed input is refused with a stable code, audited,
and leaves nothing; ONE end-to-end import converts the real SmolLM2 GGUF (~10-35 s)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.registry import imports
from apps.registry.models import ImportJob, ImportState, ModelVersion
from apps.registry.staging import staging_dir

pytestmark = pytest.mark.django_db

URL = "/api/v1/registry/imports/"


@pytest.fixture
def smollm2_gguf_path(smollm2_gguf) -> Path:
    return smollm2_gguf


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(imports, "_enqueue", lambda *args: calls.append(args))
    return calls


def staged_files() -> set[str]:
    d = staging_dir()
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def post(client, data: bytes, **fields):
    payload = {"name": "smol", **fields, "file": SimpleUploadedFile("m.gguf", data)}
    return client.post(URL, payload, format="multipart")


class TestCommand:
    def test_malformed_gguf_is_refused_audited_and_leaves_nothing(self, tmp_path):
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\x00" * 60)
        with pytest.raises(CommandError) as err:
            call_command("import_gguf", str(bad), "--name", "smol", stderr=io.StringIO())
        code = str(err.value).split(":")[0]
        assert code.startswith("gguf_")
        assert not ModelVersion.objects.exists()
        assert AuditEvent.objects.get(event_type="registry.version.rejected").error_code == code

    def test_missing_file_and_bad_options(self, tmp_path):
        with pytest.raises(CommandError, match="gguf_unreadable"):
            call_command("import_gguf", str(tmp_path / "nope.gguf"), "--name", "smol", stderr=io.StringIO())
        with pytest.raises(CommandError, match="invalid_model_name"):
            call_command("import_gguf", str(tmp_path / "x.gguf"), "--name", "Bad Name", stderr=io.StringIO())


class TestApi:
    def test_upload_is_staged_encrypted_and_a_job_queued(self, staff_client, staff_user, enqueued):
        data = b"GGUF" + b"\x01" * 5000
        before = staged_files()
        resp = post(staff_client, data, quant="fp32")
        assert resp.status_code == 202, resp.content
        job = ImportJob.objects.get(pk=resp.json()["id"])
        assert job.state == ImportState.QUEUED and job.quant == "fp32" and job.upload_bytes == len(data)
        new = staged_files() - before
        assert new == {job.staging_name}
        ciphertext = (staging_dir() / job.staging_name).read_bytes()
        assert data not in ciphertext and ciphertext.startswith(b"SVRN")
        assert job.staging_wrapped_key and job.created_by == staff_user
        assert AuditEvent.objects.filter(event_type="registry.import.create", target_id=str(job.pk)).exists()

    def test_malformed_gguf_fails_the_job_with_the_code_and_cleans_up(
        self, staff_client, enqueued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            resp = post(staff_client, b"not a gguf at all" * 10)
        job_id = resp.json()["id"]
        assert enqueued == [(job_id, enqueued[0][1])]
        job = imports.run_import_job(job_id)
        assert job.state == ImportState.FAILED and job.error_code.startswith("gguf_"), job.message
        assert not job.staging_name and not bytes(job.staging_wrapped_key)
        assert not ModelVersion.objects.exists()
        body = staff_client.get(f"{URL}{job_id}/").json()
        assert body["state"] == "failed" and body["error_code"] == job.error_code
        assert AuditEvent.objects.filter(event_type="registry.version.rejected", error_code=job.error_code).exists()
        assert imports.run_import_job(job_id) is None  # not claimed twice

    def test_oversized_upload_is_refused_and_nothing_staged(self, staff_client, settings, enqueued):
        settings.MAX_IMPORT_BYTES = 1000
        before = staged_files()
        resp = post(staff_client, b"G" * 5000)
        assert resp.status_code == 413 and resp.json()["code"] == "file_too_large"
        assert staged_files() == before and not ImportJob.objects.exists()
        assert AuditEvent.objects.filter(event_type="registry.version.rejected", error_code="file_too_large").exists()

    def test_invalid_form_deletes_the_staged_upload(self, staff_client, enqueued):
        before = staged_files()
        resp = post(staff_client, b"GGUF" * 100, quant="int2")
        assert resp.status_code == 400
        assert staged_files() == before and not ImportJob.objects.exists()

    def test_other_roles_cannot_import_or_see_jobs(self, user_client, enqueued):
        before = staged_files()
        assert post(user_client, b"GGUF" * 10).status_code == 403
        assert staged_files() == before
        assert user_client.get(URL).status_code == 403

    def test_end_to_end_import_of_the_real_gguf(
        self, staff_client, enqueued, django_capture_on_commit_callbacks, smollm2_gguf_path
    ):
        with django_capture_on_commit_callbacks(execute=True):
            resp = post(staff_client, smollm2_gguf_path.read_bytes(), name="smollm2", description="SmolLM2 135M")
        job = imports.run_import_job(resp.json()["id"])
        assert job.state == ImportState.SUCCEEDED, (job.error_code, job.message)
        assert job.progress == 1.0 and not job.staging_name
        mv = job.result
        assert mv.is_llm and mv.signature["quantization"] == "int4" and mv.signature["context_length"] == 8192
        assert "<|im_start|>" in mv.signature["chat_template"]
        assert mv.artifact.files.count() == 5
        body = staff_client.get(f"{URL}{job.pk}/").json()
        assert body["state"] == "succeeded" and body["result"] == mv.pk and body["result_version"] == 1


def test_a_session_that_may_not_import_stages_nothing(rf, plain_user, staff_user):
    """DRF's CSRF check parses a session's body before the permission check: for a user without
    registry.add_modelversion the upload is dropped as it arrives, never staged or encrypted."""
    from apps.registry.api.views import ImportJobViewSet
    from apps.registry.uploads import DiscardingUploadHandler, StagingUploadHandler

    for user, expected in ((plain_user, DiscardingUploadHandler), (staff_user, StagingUploadHandler)):
        request = rf.post(URL, data={"name": "x"})
        request.user = user
        ImportJobViewSet(action_map={"post": "create"}).initialize_request(request)
        assert [type(h) for h in request.upload_handlers] == [expected]
