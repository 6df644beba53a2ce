"""KEK rotation with the local keystore: new version, re-wrap in resumable batches, retirement,
uploads racing a rotation, the API and its audit trail. (SoftHSM2 and a serving Triton:
tests/integration/test_kek_rotation.py.)"""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import ServiceError
from apps.keys import services
from apps.keys.models import DataKey, KekRotation, KekState, KeyEncryptionKey, Purpose, RotationState
from apps.keys.providers import get_kek_provider
from apps.registry.models import Artifact
from apps.registry.services import read_artifact_ciphertext, shred_model_version
from inference_backend import envelope
from inference_backend.kek import KekError
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_keystore(settings, tmp_path):
    """A keystore per test, so versions created here do not leak into other tests."""
    settings.LOCAL_KEK_FILE = str(tmp_path / "keystore" / "kek.bin")
    settings.PSEUDONYM_KEY_FILE = str(tmp_path / "keystore" / "pseudonym-key.json")
    get_kek_provider.cache_clear()
    yield
    get_kek_provider.cache_clear()


@pytest.fixture
def versions(staff_user):
    return [ModelVersionFactory(model_name=f"m-{n}", actor=staff_user) for n in range(5)]


def _plaintext_ok(mv) -> bool:
    art = Artifact.objects.get(version=mv)
    data = services.open_sealed(read_artifact_ciphertext(art), art.aad.encode(), data_key=art.data_key)
    return envelope.sha256_hex(data) == mv.sha256


def test_first_upload_registers_version_one(versions):
    kek = KeyEncryptionKey.objects.get()
    assert (kek.version, kek.state, kek.provider) == (1, KekState.ACTIVE, "local")
    assert set(DataKey.objects.values_list("kek_id", flat=True)) == {kek.kek_id}
    assert AuditEvent.objects.filter(event_type="keys.kek.register", target_id=str(kek.pk)).count() == 1


def test_rotation_rewraps_every_data_key_and_the_old_version_becomes_retirable(versions, officer_user):
    old = KeyEncryptionKey.objects.get()
    before = {a.pk: bytes(a.data_key.wrapped) for a in Artifact.objects.all()}
    files = {a.pk: read_artifact_ciphertext(a) for a in Artifact.objects.all()}
    shred_model_version(model_version_id=versions[0].pk, reason="gone", actor=officer_user)

    rotation = services.start_rotation(actor=officer_user, reason="annual")

    old.refresh_from_db()
    new = rotation.to_kek
    assert (old.state, new.state, new.version) == (KekState.DEACTIVATED, KekState.ACTIVE, 2)
    assert old.rotated_at is not None and rotation.from_kek_ids == [old.kek_id]
    assert rotation.total == 4  # the shredded version has no data key left to re-wrap
    with pytest.raises(ServiceError) as refused:
        services.retire_kek(kek_pk=old.pk, actor=officer_user)
    assert refused.value.code == "kek_in_use" and "4 data key(s)" in refused.value.detail

    done = services.run_rotation(rotation.pk, batch=3)

    assert (done.state, done.rewrapped, done.progress) == (RotationState.DONE, 4, 1.0)
    live = Artifact.objects.live()
    assert set(live.values_list("data_key__kek_id", flat=True)) == {new.kek_id}
    for art in live:
        assert bytes(art.data_key.wrapped) != before[art.pk]
        assert read_artifact_ciphertext(art) == files[art.pk]  # the ciphertext is not rewritten
    assert all(_plaintext_ok(mv) for mv in versions[1:])
    batches = AuditEvent.objects.filter(event_type="keys.dek.rewrap").order_by("id")
    assert [e.details["count"] for e in batches] == [3, 1]
    # Keys knows nothing of the registry; the registry's label provider names what each key protects.
    assert {m["protects"] for e in batches for m in e.details["data_keys"]} == {str(mv) for mv in versions[1:]}
    assert AuditEvent.objects.filter(event_type="keys.kek.rotation_complete").count() == 1

    retired = services.retire_kek(kek_pk=old.pk, actor=officer_user)

    assert retired.state == KekState.RETIRED and retired.retired_at is not None
    with pytest.raises(KekError, match="this host has KEK"):
        get_kek_provider().unwrap(before[versions[1].artifact.pk], old.kek_id)
    assert all(_plaintext_ok(mv) for mv in versions[1:])
    event = AuditEvent.objects.get(event_type="keys.kek.retire")
    assert event.actor == officer_user and event.details == {"kek_id": old.kek_id}
    # New uploads use the new version.
    assert ModelVersionFactory(model_name="after", actor=officer_user).artifact.kek_id == new.kek_id


def test_active_version_cannot_be_retired(versions, officer_user):
    kek = KeyEncryptionKey.objects.get()
    with pytest.raises(ServiceError) as refused:
        services.retire_kek(kek_pk=kek.pk, actor=officer_user)
    assert refused.value.code == "kek_active"
    assert KeyEncryptionKey.objects.get().state == KekState.ACTIVE


def test_a_failed_batch_saves_nothing_and_the_rotation_resumes(versions, officer_user, monkeypatch):
    rotation = services.start_rotation(actor=officer_user)
    provider = get_kek_provider()
    real_wrap, calls = provider.wrap, []

    def flaky_wrap(dek, kek_id=None):
        calls.append(kek_id)
        if len(calls) == 3:
            raise KekError("HSM went away")
        return real_wrap(dek, kek_id)

    monkeypatch.setattr(provider, "wrap", flaky_wrap)

    failed = services.run_rotation(rotation.pk, batch=2)

    assert (failed.state, failed.rewrapped) == (RotationState.FAILED, 2)
    assert "HSM went away" in failed.last_error
    assert DataKey.objects.filter(kek_id=rotation.to_kek.kek_id).count() == 2  # the failed batch rolled back
    assert AuditEvent.objects.get(event_type="keys.kek.rotation_fail").outcome == "failure"

    services.resume_rotation(rotation_id=rotation.pk, actor=officer_user)
    done = services.run_rotation(rotation.pk, batch=2)

    assert (done.state, done.rewrapped) == (RotationState.DONE, 5)
    assert set(DataKey.objects.values_list("kek_id", flat=True)) == {rotation.to_kek.kek_id}
    assert all(_plaintext_ok(mv) for mv in versions)
    with pytest.raises(ServiceError) as again:
        services.resume_rotation(rotation_id=rotation.pk, actor=officer_user)
    assert again.value.code == "rotation_done"


def test_a_second_rotation_while_one_runs_is_refused_and_audited(versions, officer_user):
    services.start_rotation(actor=officer_user)
    with pytest.raises(ServiceError) as refused:
        services.start_rotation(actor=officer_user)
    assert refused.value.code == "rotation_in_progress"
    assert KeyEncryptionKey.objects.count() == 2
    failure = AuditEvent.objects.get(event_type="keys.kek.rotate", outcome="failure")
    assert failure.error_code == "rotation_in_progress"


def test_provider_failure_saves_nothing(versions, officer_user, monkeypatch):
    def broken():
        raise KekError("PKCS#11 token 'hsm' not found")

    monkeypatch.setattr(get_kek_provider(), "create_version", broken)
    with pytest.raises(ServiceError) as refused:
        services.start_rotation(actor=officer_user)
    assert refused.value.code == "kek_unavailable" and refused.value.status_code == 503
    assert list(KeyEncryptionKey.objects.values_list("state", flat=True)) == [KekState.ACTIVE]
    assert not KekRotation.objects.exists()
    assert AuditEvent.objects.get(event_type="keys.kek.rotate").error_code == "kek_unavailable"


def test_an_upload_wrapped_before_the_switch_is_rewrapped_when_it_commits(versions, officer_user):
    """The race: an upload sealed (wrapped its data key with v1), then a rotation switched to v2
    before the upload's transaction stored the key. The upload must not commit a v1 key after the switch."""
    old_id = KeyEncryptionKey.objects.get().kek_id
    sealed = services.seal(b"plaintext", b"aad", purpose=Purpose.ARTIFACT)
    assert sealed.data_key.kek_id == old_id and sealed.data_key.pk is None
    rotation = services.start_rotation(actor=officer_user)

    stored = services.store_data_key(sealed.data_key, actor=officer_user)

    stored.refresh_from_db()
    assert stored.kek_id == rotation.to_kek.kek_id
    assert services.open_sealed(sealed.ciphertext, b"aad", data_key=stored) == b"plaintext"
    event = AuditEvent.objects.get(event_type="keys.dek.create", target_id=str(stored.pk))
    assert event.details == {"purpose": "artifact", "suite": "AES-256-GCM", "kek_id": rotation.to_kek.kek_id}


def test_a_destroyed_data_key_cannot_be_opened_nor_destroyed_again(versions, officer_user):
    art = versions[0].artifact
    key = services.destroy_data_key(data_key_id=art.data_key_id, reason="drill", actor=officer_user)

    assert bytes(key.wrapped) == b"" and key.destroyed_at is not None
    with pytest.raises(ServiceError) as closed:
        services.open_sealed(read_artifact_ciphertext(art), art.aad.encode(), data_key=key)
    assert closed.value.code == "data_key_destroyed"
    with pytest.raises(ServiceError) as again:
        services.destroy_data_key(data_key_id=art.data_key_id, reason="drill", actor=officer_user)
    assert again.value.code == "already_shredded"
    event = AuditEvent.objects.get(event_type="keys.dek.destroy")
    assert event.target_type == "keys.datakey" and event.details["reason"] == "drill"


def test_stalled_rotation_is_found_by_the_sweep(versions, officer_user, time_machine):
    rotation = services.start_rotation(actor=officer_user)
    assert services.stalled_rotations() == []  # just started: its worker has had no time yet
    time_machine.move_to(rotation.started_at + services.LEASE * 2)
    assert services.stalled_rotations() == [rotation.pk]


class TestApi:
    def test_officer_rotates_and_follows_progress(self, versions, officer_client, officer_user):
        response = officer_client.post("/api/v1/keys/rotate/", {"reason": "key compromise drill"}, format="json")

        assert response.status_code == 202, response.json()
        body = response.json()
        assert body["state"] == "running" and body["total"] == 5 and body["reason"] == "key compromise drill"
        services.run_rotation(body["id"])
        detail = officer_client.get(f"/api/v1/keys/rotations/{body['id']}/").json()
        assert (detail["state"], detail["rewrapped"], detail["progress"]) == ("done", 5, 1.0)
        assert detail["requested_by"] == officer_user.username

        rows = {r["version"]: r for r in officer_client.get("/api/v1/keys/inventory/").json()}
        assert rows[1]["state"] == "deactivated" and rows[1]["artifacts_protected"] == 0
        assert rows[1]["rotated_at"] is not None
        assert rows[2]["state"] == "active" and rows[2]["artifacts_protected"] == 5

        retired = officer_client.post(f"/api/v1/keys/{rows[1]['id']}/retire/")
        assert retired.status_code == 200 and retired.json()["state"] == "retired"
        again = officer_client.post(f"/api/v1/keys/{rows[1]['id']}/retire/")
        assert (again.status_code, again.json()["code"]) == (409, "kek_retired")
        missing = officer_client.post("/api/v1/keys/999999/retire/")
        assert (missing.status_code, missing.json()["code"]) == (404, "kek_not_found")

    def test_bad_reason_is_refused(self, versions, officer_client):
        response = officer_client.post("/api/v1/keys/rotate/", {"reason": "x" * 501}, format="json")
        assert response.status_code == 400
        assert KeyEncryptionKey.objects.count() == 1

    @pytest.mark.parametrize("client_name", ["staff_client", "auditor_client", "user_client"])
    def test_only_the_security_officer_rotates(self, versions, client_name, request):
        response = request.getfixturevalue(client_name).post("/api/v1/keys/rotate/", {}, format="json")
        assert response.status_code == 403
        assert KeyEncryptionKey.objects.count() == 1


def test_rotation_rewraps_the_pseudonymisation_key_and_retirement_waits_for_it(versions, officer_user):
    from apps.keys import pseudonym

    key = pseudonym.pseudonym_key()
    old = KeyEncryptionKey.objects.get()
    assert pseudonym.wrapping_kek_id() == old.kek_id
    rotation = services.start_rotation(actor=officer_user)
    services.run_rotation(rotation.pk)

    assert pseudonym.wrapping_kek_id() == rotation.to_kek.kek_id
    pseudonym.forget()
    assert pseudonym.pseudonym_key() == key  # same key, now wrapped by the new version
    services.retire_kek(kek_pk=old.pk, actor=officer_user)
    pseudonym.forget()
    assert pseudonym.pseudonym_key() == key


def test_a_pseudonymisation_key_that_cannot_be_rewrapped_fails_the_rotation_resumably(versions, officer_user, settings):
    from pathlib import Path

    Path(settings.PSEUDONYM_KEY_FILE).parent.mkdir(parents=True, exist_ok=True)
    Path(settings.PSEUDONYM_KEY_FILE).write_text('{"kek_id": "pkcs11:elsewhere:kek-v1", "wrapped": "AAAA"}')
    rotation = services.start_rotation(actor=officer_user)

    failed = services.run_rotation(rotation.pk)

    assert failed.state == RotationState.FAILED and failed.rewrapped == 5
    assert failed.last_error.startswith("the pseudonymisation key: ")
