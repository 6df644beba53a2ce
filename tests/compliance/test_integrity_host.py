"""Integrity and the host: the checks decrypt real ciphertext through the KEK provider, read the
installed distributions and the code manifest, and flip when the thing they inspect is broken."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.compliance.checks.keystore import artifact_integrity, artifacts_encrypted
from apps.registry import services
from apps.registry.models import IntegrityRun
from inference_backend.demo_model import build_test_onnx

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(staff_user):
    """A registered ONNX version: its ciphertext is in the artifact store, its data key wrapped
    by the session's dev KEK."""
    data = build_test_onnx(4, 3, seed=11)
    mv = services.register_model_version(model_name="integrity-probe", data=data, actor=staff_user)
    return mv.artifact


def _flip(path, offset: int) -> bytes:
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[offset] ^= 0x01
    path.write_bytes(bytes(damaged))
    return original


class TestArtifactIntegrity:
    def test_no_run_fails(self, stored):
        result = artifact_integrity(None)
        assert result.status == "fail" and "never verified" in result.summary
        assert result.evidence["last_run"] is None

    def test_flipped_ciphertext_byte_fails_naming_the_artifact_then_restored_passes(self, stored):
        run = services.verify_artifacts(sample_size=1000)
        assert run.ok and stored.pk in run.artifact_ids and run.plaintext_bytes == stored.version.size_bytes
        result = artifact_integrity(None)
        assert result.status == "pass", result.summary
        assert result.evidence["last_run"]["verified"] == run.verified

        original = _flip(stored.path, len(stored.path.read_bytes()) // 2)  # inside segment 0's ciphertext
        try:
            run = services.verify_artifacts(sample_size=1000)
            failure = next(f for f in run.failures if f["artifact"] == stored.pk)
            assert failure["code"] == "ciphertext_invalid" and failure["version"] == "integrity-probe v1"
            result = artifact_integrity(None)
            assert result.status == "fail" and "integrity-probe v1" in result.summary
            assert any(f["artifact"] == stored.pk for f in result.evidence["last_run"]["failures"])
            event = AuditEvent.objects.filter(event_type="registry.integrity.verify").order_by("-id").first()
            assert event.outcome == "failure" and event.target_id == str(run.pk)
        finally:
            stored.path.write_bytes(original)
        assert services.verify_artifacts(sample_size=1000).ok
        assert artifact_integrity(None).status == "pass"

    def test_a_stale_run_fails(self, stored, settings):
        run = services.verify_artifacts(sample_size=1000)
        settings.INTEGRITY_MAX_AGE_HOURS = 24
        IntegrityRun.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(hours=25))
        result = artifact_integrity(None)
        assert result.status == "fail" and "older than 24 h" in result.summary

    def test_a_digest_mismatch_is_a_failure(self, stored):
        """The AEAD tag holds but the recorded plaintext digest is not the plaintext's."""
        type(stored.version).objects.filter(pk=stored.version.pk).update(sha256="0" * 64)
        run = services.verify_artifacts(sample_size=1000)
        assert any(f["artifact"] == stored.pk and f["code"] == "digest_mismatch" for f in run.failures)

    def test_the_beat_task_is_scheduled_and_runs(self, stored, settings):
        from apps.registry.tasks import verify_artifacts_task

        entry = settings.CELERY_BEAT_SCHEDULE["registry-verify-artifacts"]
        assert entry["task"] == verify_artifacts_task.name
        assert "failed" in verify_artifacts_task.apply().get()
        assert IntegrityRun.objects.exists()


class TestArtifactsEncrypted:
    def test_plaintext_model_in_place_of_an_artifact_fails_then_restored_passes(self, stored):
        assert artifacts_encrypted(None).status == "pass"
        original = stored.path.read_bytes()
        plaintext = build_test_onnx(4, 3, seed=11)
        # same size as recorded, so only the content tells: ONNX protobuf padded to the size
        stored.path.write_bytes((plaintext + bytes(len(original)))[: len(original)])
        try:
            result = artifacts_encrypted(None)
            assert result.status == "fail"
            problem = next(p for p in result.evidence["problems"] if stored.storage_name in p)
            assert "plaintext (ONNX protobuf" in problem
            stored.path.write_bytes(b"GGUF" + original[4:])
            problem = next(p for p in artifacts_encrypted(None).evidence["problems"] if stored.storage_name in p)
            assert "GGUF" in problem
        finally:
            stored.path.write_bytes(original)
        assert artifacts_encrypted(None).status == "pass"

    def test_envelope_that_does_not_authenticate_fails(self, stored):
        original = _flip(stored.path, len(stored.path.read_bytes()) - 3)  # in segment 0's tag
        try:
            problem = next(p for p in artifacts_encrypted(None).evidence["problems"] if stored.storage_name in p)
            assert "does not decrypt under its data key (ciphertext_invalid)" in problem
        finally:
            stored.path.write_bytes(original)
        assert artifacts_encrypted(None).status == "pass"


def _fake_distribution(site, name: str, version: str):
    """A real (wheel-less) distribution: a dist-info directory importlib.metadata reads."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return info


class TestMinimalInstall:
    @pytest.fixture
    def clean(self, settings, tmp_path):
        """DEBUG off, and an allow-list that also names whatever this shared venv holds beyond the
        requirements (a developer's tools), so that the test is about the distribution it adds."""
        from apps.compliance.checks.host import minimal_install

        settings.DEBUG = False
        baseline = minimal_install(None).evidence
        extra = [entry.split(" ")[0] for entry in baseline["not_required"]]
        allow = tmp_path / "allow.txt"
        allow.write_text(settings.INSTALL_ALLOWLIST_FILE.read_text() + "\n".join(extra) + "\n")
        settings.INSTALL_ALLOWLIST_FILE = allow
        assert not baseline["version_mismatch"], baseline["version_mismatch"]
        return minimal_install

    def test_an_installed_distribution_no_requirement_needs_fails_then_removed_passes(
        self, clean, tmp_path, monkeypatch
    ):
        import shutil
        import sys

        first = clean(None)
        assert first.status == "pass", (first.summary, first.evidence)
        site = tmp_path / "site"
        info = _fake_distribution(site, "sneaky-tool", "1.0")
        monkeypatch.syspath_prepend(str(site))
        result = clean(None)
        assert result.status == "fail" and "sneaky-tool" in result.summary
        assert "sneaky-tool 1.0" in result.evidence["not_required"]
        shutil.rmtree(info)
        sys.path.remove(str(site))
        assert clean(None).status == "pass"

    def test_a_pinned_distribution_at_another_version_fails(self, clean, tmp_path, monkeypatch):
        site = tmp_path / "site"
        _fake_distribution(site, "django-environ", "0.1.0")  # first on sys.path: what `import environ` finds
        monkeypatch.syspath_prepend(str(site))
        result = clean(None)
        assert result.status == "fail"
        assert any(m.startswith("django-environ 0.1.0 installed") for m in result.evidence["version_mismatch"])

    def test_the_allowlist_file_is_honoured_and_shown(self, clean, settings, tmp_path, monkeypatch):
        site = tmp_path / "site"
        _fake_distribution(site, "sneaky-tool", "1.0")
        monkeypatch.syspath_prepend(str(site))
        with open(settings.INSTALL_ALLOWLIST_FILE, "a") as f:
            f.write("sneaky_tool  # declared on purpose\n")
        result = clean(None)
        assert result.status == "pass" and "sneaky-tool" in result.evidence["allowed_extras"]


class TestCodeManifest:
    @pytest.fixture
    def tree(self, settings, tmp_path):
        """A copy of the covered code, so that the test can change files without touching the repo."""
        import shutil

        base = tmp_path / "code"
        for root in ("apps", "portal", "inference_backend"):
            shutil.copytree(settings.BASE_DIR / root, base / root, ignore=shutil.ignore_patterns("__pycache__"))
        settings.CODE_MANIFEST_BASE = base
        settings.CODE_MANIFEST_FILE = tmp_path / "manifest" / "code-manifest.json"
        return base

    def test_written_passes_modified_fails_restored_passes(self, tree):
        from apps.compliance.checks.host import code_manifest
        from apps.compliance.manifest import signature_path, write_manifest

        assert code_manifest(None).status == "fail"  # none written yet
        manifest = write_manifest()
        event = AuditEvent.objects.filter(event_type="platform.code_manifest.write").latest("id")
        assert event.details["files"] == len(manifest["files"]) > 300
        assert oct(signature_path().stat().st_mode & 0o777) == "0o600"
        result = code_manifest(None)
        assert result.status == "pass", result.summary

        victim = tree / "apps" / "registry" / "services.py"
        original = victim.read_bytes()
        victim.write_bytes(original + b"\n# injected\n")
        result = code_manifest(None)
        assert result.status == "fail" and "apps/registry/services.py" in result.summary
        assert result.evidence["changed"] == ["apps/registry/services.py"]
        victim.write_bytes(original)
        assert code_manifest(None).status == "pass"

        planted = tree / "portal" / "backdoor.py"
        planted.write_text("import os\n")
        result = code_manifest(None)
        assert result.status == "fail" and result.evidence["added"] == ["portal/backdoor.py"]
        planted.unlink()
        assert code_manifest(None).status == "pass"

    def test_a_tampered_manifest_fails_its_signature(self, tree, settings):
        import json

        from apps.compliance.checks.host import code_manifest
        from apps.compliance.manifest import manifest_path, write_manifest

        write_manifest()
        (tree / "apps" / "core" / "errors.py").write_text("# replaced\n")
        data = json.loads(manifest_path().read_text())
        data["files"]["apps/core/errors.py"] = hashlib_sha256(b"# replaced\n")  # the attacker updates the digest
        manifest_path().write_text(json.dumps(data, sort_keys=True, indent=1))
        result = code_manifest(None)
        assert result.status == "fail" and "signature does not verify" in result.summary

    def test_a_new_distribution_fails_and_start_up_audits_the_mismatch(self, tree, tmp_path, monkeypatch):
        from apps.compliance.checks.host import code_manifest
        from apps.compliance.manifest import verify_at_start, write_manifest

        write_manifest()
        assert verify_at_start("web").ok
        site = tmp_path / "site"
        _fake_distribution(site, "sneaky-tool", "1.0")
        monkeypatch.syspath_prepend(str(site))
        result = code_manifest(None)
        assert result.status == "fail" and "sneaky-tool 1.0 installed since" in result.evidence["distributions_changed"]
        report = verify_at_start("web")
        assert report.status == "differs"
        event = AuditEvent.objects.filter(event_type="platform.code_manifest.mismatch").latest("id")
        assert event.outcome == "failure" and event.target_id == "web"
        assert "sneaky-tool 1.0 installed since" in event.details["distributions_changed"]


def hashlib_sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


class TestNoExecutableArtifacts:
    def test_a_pickle_sealed_under_the_artifacts_key_fails_then_restored_passes(self, stored):
        import pickle

        from apps.compliance.checks.artifacts import no_executable_artifacts
        from apps.keys.services import seal_with

        result = no_executable_artifacts(None)
        assert result.status == "pass", result.summary
        assert (
            result.evidence["upload_probe"] == {"pickle_refused": True, "code": "invalid_onnx"}
            or (result.evidence["upload_probe"]["pickle_refused"])
        )
        original = stored.path.read_bytes()
        # what a registry without validation would have stored: a pickle, properly encrypted
        payload = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)
        stored.path.write_bytes(seal_with(payload, stored.aad.encode(), data_key=stored.data_key))
        try:
            result = no_executable_artifacts(None)
            assert result.status == "fail"
            assert any(
                "integrity-probe v1: model.onnx holds executable content (Python pickle)" in p
                for p in result.evidence["problems"]
            )
        finally:
            stored.path.write_bytes(original)
        assert no_executable_artifacts(None).status == "pass"

    def test_a_format_the_registry_does_not_accept_fails(self, stored):
        from apps.compliance.checks.artifacts import no_executable_artifacts

        type(stored.version).objects.filter(pk=stored.version.pk).update(format="pytorch")
        result = no_executable_artifacts(None)
        assert result.status == "fail" and "format 'pytorch' is not one the registry accepts" in result.summary

    def test_the_registry_refuses_a_pickle_upload(self, staff_user):
        import pickle

        from apps.core.errors import ServiceError

        with pytest.raises(ServiceError) as err:
            services.register_model_version(model_name="pickled", data=pickle.dumps([1, 2]), actor=staff_user)
        assert err.value.code == "not_onnx" and err.value.field == "file"


class TestDisposal:
    @pytest.fixture
    def store(self, settings, tmp_path):
        """A fresh artifact store and temporary directory, so that other tests' files do not count."""
        settings.ARTIFACT_DIR = tmp_path / "artifacts"
        settings.ARTIFACT_DIR.mkdir(mode=0o700)
        settings.RESIDUE_TEMP_DIR = tmp_path / "tmp"
        settings.RESIDUE_TEMP_DIR.mkdir()
        return settings.ARTIFACT_DIR

    def _shred(self, mv, actor, capture):
        with capture(execute=True):
            services.shred_model_version(model_version_id=mv.pk, reason="disposal test", actor=actor)

    def test_shredded_version_leaves_nothing_then_leftover_ciphertext_fails(
        self, store, staff_user, django_capture_on_commit_callbacks
    ):
        from apps.compliance.checks.artifacts import disposal

        mv = services.register_model_version(
            model_name="to-dispose", data=build_test_onnx(4, 3, seed=5), actor=staff_user
        )
        path = mv.artifact.path
        ciphertext = path.read_bytes()
        self._shred(mv, staff_user, django_capture_on_commit_callbacks)
        result = disposal(None)
        assert result.status == "pass", result.summary
        assert result.evidence["destroyed_data_keys"] >= 1 and result.evidence["dek_destroy_events"] >= 1
        path.write_bytes(ciphertext)  # the shred's file deletion did not happen
        result = disposal(None)
        assert result.status == "fail" and "ciphertext of shredded to-dispose v1" in result.summary
        path.unlink()
        assert disposal(None).status == "pass"

    def test_plaintext_and_partial_residue_fail(self, store, settings):
        from apps.compliance.checks.artifacts import disposal

        assert disposal(None).status == "pass"
        leaked = store / "staging" / "model.bin"
        leaked.parent.mkdir()
        leaked.write_bytes(b"GGUF" + bytes(60))
        result = disposal(None)
        assert result.status == "fail" and str(leaked) in result.summary and "GGUF model" in result.summary
        leaked.unlink()
        cwd = settings.RESIDUE_TEMP_DIR / "sovereign-model-abc"
        cwd.mkdir()
        (cwd / "weights.onnx.partial").write_bytes(b"\x00" * 10)
        result = disposal(None)
        assert result.status == "fail" and "partial decryption" in result.summary
        (cwd / "weights.onnx.partial").unlink()
        assert disposal(None).status == "pass"

    def test_a_retired_kek_the_provider_still_holds_fails(self, store):
        from apps.compliance.checks.artifacts import disposal
        from apps.keys.models import KekState, KeyEncryptionKey
        from apps.keys.services import active_kek

        kek = active_kek()
        assert disposal(None).status == "pass"
        # retirement recorded, but the provider still holds the key (its destruction failed or was skipped)
        KeyEncryptionKey.objects.filter(pk=kek.pk).update(state=KekState.RETIRED)
        result = disposal(None)
        assert result.status == "fail" and f"retired KEK {kek.kek_id} is still usable" in result.summary
        KeyEncryptionKey.objects.filter(pk=kek.pk).update(state=KekState.ACTIVE)
        assert disposal(None).status == "pass"

    def test_a_really_retired_kek_is_refused(self, store, staff_user, officer_user, settings, tmp_path):
        """A rotation then retirement destroys the old version in the provider: the probe is refused."""
        from apps.compliance.checks.artifacts import disposal
        from apps.keys import services as keys
        from apps.keys.models import KeyEncryptionKey
        from apps.keys.providers import get_kek_provider

        settings.LOCAL_KEK_FILE = str(tmp_path / "keystore" / "kek.bin")  # not the session's: it is rotated
        get_kek_provider.cache_clear()

        old = keys.active_kek()
        keys.start_rotation(actor=officer_user)
        keys.run_rotation(keys.KekRotation.objects.latest("pk").pk)
        keys.retire_kek(kek_pk=KeyEncryptionKey.objects.get(pk=old.pk).pk, actor=officer_user)
        result = disposal(None)
        assert old.kek_id in result.evidence["retired_keks_probed"]
        assert result.evidence["retired_keks_usable"] == [] and result.status == "pass", result.summary


class TestListening:
    def _listen(self, address: str):
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen(1)
        return sock

    def test_an_internal_port_on_every_address_fails_then_loopback_passes(self, settings):
        from apps.compliance.checks.host import listening

        exposed = self._listen("0.0.0.0")  # noqa: S104 - the mistake the check must catch
        port = exposed.getsockname()[1]
        settings.LISTEN_INTERNAL = {"triton metrics": port}
        try:
            result = listening(None)
            assert result.status == "fail"
            assert f"triton metrics listens on 0.0.0.0:{port}" in result.summary
        finally:
            exposed.close()
        private = self._listen("127.0.0.1")
        settings.LISTEN_INTERNAL = {"triton metrics": private.getsockname()[1]}
        try:
            result = listening(None)
            assert result.status == "pass", result.summary
            assert result.evidence["internal"][f"triton metrics :{private.getsockname()[1]}"] == ["127.0.0.1"]
        finally:
            private.close()

    def test_a_registered_local_triton_port_is_internal(self, settings):
        from apps.compliance.checks.host import listening
        from apps.deployments.models import InferenceServer

        exposed = self._listen("0.0.0.0")  # noqa: S104
        port = exposed.getsockname()[1]
        settings.LISTEN_INTERNAL = {}
        InferenceServer.objects.create(name="local", http_url=f"http://127.0.0.1:{port}")
        try:
            result = listening(None)
            assert result.status == "fail" and f"triton local listens on 0.0.0.0:{port}" in result.summary
        finally:
            exposed.close()

    @pytest.mark.integration
    def test_the_embedded_triton_listens_on_loopback_only(self, settings, triton):
        from apps.compliance.checks.host import listening

        settings.LISTEN_INTERNAL = {
            "triton http": triton.http_port,
            "triton grpc": triton.grpc_port,
            "triton metrics": triton.metrics_port,
        }
        result = listening(None)
        assert result.status == "pass", result.summary
        for name, port in settings.LISTEN_INTERNAL.items():
            assert result.evidence["internal"][f"{name} :{port}"] == ["127.0.0.1"]


def test_disposal_probe_is_inconclusive_when_the_provider_refuses_everything(settings, tmp_path):
    """A retired KEK 'refused' by a provider that refuses the active one too proves nothing: fail."""
    from apps.compliance.checks.artifacts import disposal
    from apps.keys.models import KekState, KeyEncryptionKey
    from apps.keys.services import active_kek

    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    settings.RESIDUE_TEMP_DIR = tmp_path
    active_kek()
    KeyEncryptionKey.objects.create(kek_id="local:gone", provider="local", version=99, state=KekState.RETIRED)
    assert disposal(None).status == "pass"
    settings.LOCAL_KEK_FILE = str(tmp_path / "another" / "kek.bin")  # a keystore without the active KEK
    from apps.keys.providers import get_kek_provider

    get_kek_provider.cache_clear()
    result = disposal(None)
    assert result.status == "fail" and "refuses the active KEK too" in result.summary
