"""Language-model versions: the file set is validated, every file encrypted under the version's
one data key with its own AAD, recorded with a signature; refusals leave nothing and are audited;
shredding and the compliance checks cover every file."""

from __future__ import annotations

import io
import json
import os

import pytest
from django.conf import settings

from apps.audit.models import AuditEvent, Outcome
from apps.compliance.checks.keystore import artifact_integrity, artifacts_encrypted, no_stray_files
from apps.core.errors import ServiceError
from apps.keys import services as keys
from apps.registry import services
from apps.registry.models import Artifact, ArtifactFile, Model, ModelFormat, ModelVersion
from tests.registry.llm_sets import tiny_decoder, tiny_set

pytestmark = pytest.mark.django_db


def open_file(af: ArtifactFile, aad: str | None = None) -> bytes:
    out = io.BytesIO()
    with open(af.path, "rb") as src:
        keys.open_stream(src, out, (aad or af.aad).encode(), data_key=af.artifact.data_key)
    return out.getvalue()


def store() -> set[str]:
    return {p.name for p in settings.ARTIFACT_DIR.iterdir() if p.is_file()}


class TestRegister:
    def test_every_file_encrypted_under_one_key_and_signature_recorded(self, staff_user):
        files = tiny_set()
        mv = services.register_llm_version(model_name="tiny-llm", files=files, actor=staff_user)
        assert mv.format == ModelFormat.LLM and mv.is_llm
        sig = mv.signature
        assert sig["kind"] == "llm" and sig["architecture"] == "llama" and sig["context_length"] == 64
        assert sig["chat_template"] == files["chat_template.jinja"].decode()
        assert sig["eos_token"] == "</s>" and sig["generation_defaults"]["top_k"] == 50
        assert {f["name"]: f["size"] for f in sig["files"]} == {n: len(b) for n, b in files.items()}
        rows = list(ArtifactFile.objects.filter(artifact__version=mv))
        assert len(rows) == 5 and len({r.artifact_id for r in rows}) == 1
        for row in rows:
            ciphertext = row.path.read_bytes()
            assert len(ciphertext) == row.ciphertext_bytes and oct(os.stat(row.path).st_mode & 0o777) == "0o600"
            assert files[row.name] not in ciphertext
            assert open_file(row) == files[row.name]
            assert row.aad.endswith(f":{row.name}") and mv.artifact.storage_name in row.aad
        assert mv.size_bytes == sum(len(b) for b in files.values())

    def test_aad_binds_the_file_name(self, staff_user):
        mv = services.register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)
        config = mv.artifact.files.get(name="config.json")
        other = mv.artifact.files.get(name="generation_config.json")
        with pytest.raises(ServiceError) as err:
            open_file(config, aad=other.aad)
        assert err.value.code == "ciphertext_invalid"

    def test_audit_event_names_format_and_files(self, staff_user):
        mv = services.register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)
        event = AuditEvent.objects.get(event_type="registry.version.create", target_id=str(mv.pk))
        after = event.details["after"]
        assert after["format"] == "llm" and after["architecture"] == "llama"
        assert sorted(f["name"] for f in after["files"]) == sorted(tiny_set())
        assert event.actor_id == staff_user.pk

    def test_streamed_sources_give_the_same_plaintext(self, staff_user):
        files = tiny_set()
        sources = {
            "model.onnx": iter([files["model.onnx"][:100], files["model.onnx"][100:]]),  # not seekable
            "tokenizer.json": io.BytesIO(files["tokenizer.json"]),
            "chat_template.jinja": iter([files["chat_template.jinja"]]),
            "generation_config.json": io.BytesIO(files["generation_config.json"]),
            "config.json": files["config.json"],
        }
        mv = services.register_llm_version(model_name="tiny-llm", files=sources, actor=staff_user)
        for row in mv.artifact.files.all():
            assert open_file(row) == files[row.name]

    def test_external_data_in_the_same_set_is_allowed(self, staff_user):
        files = tiny_set(
            **{
                "model.onnx": tiny_decoder(2, external={"location": "model.onnx.data", "offset": 0, "length": 32}),
                "model.onnx.data": bytes(32),
            }
        )
        mv = services.register_llm_version(model_name="tiny-llm", files=files, actor=staff_user)
        assert mv.artifact.files.filter(name="model.onnx.data").exists()

    def test_next_version_and_rotation_rewrap_keep_the_set(self, staff_user):
        services.register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)
        mv = services.register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)
        assert mv.version == 2


class TestRefusals:
    @pytest.mark.parametrize(
        ("change", "code"),
        [
            ({"extra.bin": b"x"}, "unexpected_file"),
            ({"config.json": None}, "missing_file"),
            ({"config.json": json.dumps({"architecture": "gpt2", "n_layers": 2}).encode()}, "unsupported_architecture"),
            ({"config.json": b"{not json"}, "invalid_llm_file"),
            ({"tokenizer.json": b"[]"}, "invalid_llm_file"),
            ({"chat_template.jinja": b"  "}, "invalid_llm_file"),
            ({"model.onnx": b"\x00garbage"}, "invalid_model"),
            ({"model.onnx": tiny_decoder(3)}, "invalid_decoder"),  # config says 2 layers
            ({"model.onnx": tiny_decoder(2, extra_input=True)}, "invalid_decoder"),
            ({"model.onnx": tiny_decoder(2, external={"location": "/etc/passwd"})}, "external_data_refused"),
            ({"model.onnx": tiny_decoder(2, external={"location": "model.onnx.data"})}, "missing_file"),
            (
                {
                    "model.onnx": tiny_decoder(2, external={"location": "model.onnx.data", "offset": 8, "length": 32}),
                    "model.onnx.data": bytes(32),
                },
                "external_data_refused",
            ),
            ({"model.onnx.data": bytes(16)}, "unexpected_file"),
        ],
    )
    def test_refused_with_code_nothing_saved_and_audited(self, staff_user, change, code):
        files = tiny_set()
        for name, value in change.items():
            if value is None:
                files.pop(name)
            else:
                files[name] = value
        before = store()
        with pytest.raises(ServiceError) as err:
            services.register_llm_version(model_name="tiny-llm", files=files, actor=staff_user)
        assert err.value.code == code, err.value.detail
        assert not Model.objects.exists() and not ModelVersion.objects.exists() and not Artifact.objects.exists()
        assert store() == before
        event = AuditEvent.objects.get(event_type="registry.version.rejected")
        assert event.outcome == Outcome.FAILURE and event.error_code == code and event.details["format"] == "llm"

    def test_failure_in_the_transaction_removes_every_file(self, staff_user, monkeypatch):
        before = store()

        def boom(*args, **kwargs):
            raise RuntimeError("audit down")

        monkeypatch.setattr(services, "record_event", boom)
        with pytest.raises(RuntimeError):
            services.register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)
        assert store() == before and not ModelVersion.objects.exists()


class TestShredAndCompliance:
    def test_shred_destroys_the_key_and_every_file(self, staff_user, django_capture_on_commit_callbacks):
        mv = services.register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)
        paths = [f.path for f in mv.artifact.files.all()]
        with django_capture_on_commit_callbacks(execute=True):
            services.shred_model_version(model_version_id=mv.pk, reason="test", actor=staff_user)
        assert all(not p.exists() for p in paths)
        mv.artifact.data_key.refresh_from_db()
        assert mv.artifact.data_key.is_destroyed

    def test_checks_cover_every_file_of_the_set(self, staff_user):
        mv = services.register_llm_version(model_name="tiny-llm", files=tiny_set(), actor=staff_user)
        assert artifacts_encrypted(None).status == "pass"
        run = services.verify_artifacts(sample_size=1000)  # every file of the set decrypted and hashed
        assert run.ok and mv.artifact.pk in run.artifact_ids
        assert artifact_integrity(None).status == "pass"
        # the session's artifact directory holds earlier tests' files too: only this set's matter here
        stray = set(no_stray_files(None).evidence["stray"])
        assert not stray & {f.storage_name for f in mv.artifact.files.all()}
        victim = mv.artifact.files.get(name="tokenizer.json")
        victim.path.write_bytes(victim.path.read_bytes()[:-1])
        result = artifacts_encrypted(None)
        assert result.status == "fail" and "tokenizer.json" in result.evidence["problems"][0]
        victim.path.unlink()
        assert "missing" in artifacts_encrypted(None).evidence["problems"][0]


class TestRealSet:
    def test_the_smollm2_int4_set_registers(self, staff_user, int4_set):
        mv = services.register_llm_version(model_name="smollm2", files=int4_set, actor=staff_user)
        sig = mv.signature
        assert sig["quantization"] == "int4" and sig["context_length"] == 8192 and sig["architecture"] == "llama"
        graph = mv.artifact.files.get(name="model.onnx")
        assert graph.size_bytes == len(int4_set["model.onnx"])
        assert open_file(graph) == int4_set["model.onnx"]
