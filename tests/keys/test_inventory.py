"""GET /api/v1/keys/inventory/: one row per KEK, counts of what it protects, never key material."""

from __future__ import annotations

import base64

import pytest

from apps.keys.models import DataKey
from apps.keys.selectors import key_inventory, protected_by
from apps.registry.models import Artifact
from apps.registry.services import shred_model_version
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/inventory/"
HSM_KEK = "pkcs11:sovereign:sovereign-kek-v2"


@pytest.fixture
def versions(staff_user):
    local = [ModelVersionFactory(model_name=f"local-{n}", actor=staff_user) for n in range(3)]
    hsm = ModelVersionFactory(model_name="hsm", actor=staff_user)
    # The HSM provider is exercised in tests/inference_backend; here only the id matters.
    DataKey.objects.filter(pk=hsm.artifact.data_key_id).update(kek_id=HSM_KEK)
    return local, hsm


def test_one_row_per_kek_with_counts(versions, officer_user):
    local, _ = versions
    shred_model_version(model_version_id=local[0].pk, reason="retired", actor=officer_user)

    rows = {row.kek_id: row for row in key_inventory()}

    local_row = rows[local[0].artifact.kek_id]
    assert (local_row.provider, local_row.hsm_token, local_row.hsm_label) == ("local", None, None)
    assert (local_row.artifacts_protected, local_row.artifacts_shredded) == (2, 1)
    assert (local_row.data_keys_protected, local_row.data_keys_destroyed) == (2, 1)
    assert local_row.by_purpose == {"artifact": {"protected": 2, "destroyed": 1}}
    assert local_row.algorithm == "AES-256" and "RFC 5649" in local_row.key_wrap
    assert local_row.suites == ["AES-256-GCM"]
    created = sorted(DataKey.objects.filter(kek_id=local_row.kek_id).values_list("created_at", flat=True))
    assert (local_row.first_wrapped_at, local_row.last_wrapped_at) == (created[0], created[-1])
    hsm_row = rows[HSM_KEK]
    assert (hsm_row.provider, hsm_row.hsm_token, hsm_row.hsm_label) == ("pkcs11", "sovereign", "sovereign-kek-v2")
    assert hsm_row.artifacts_protected == 1


def test_labels_come_from_the_registry_through_its_provider(versions, officer_user):
    local, hsm = versions
    shred_model_version(model_version_id=local[0].pk, reason="retired", actor=officer_user)

    assert protected_by(local[1].artifact.kek_id) == ["local-1 v1", "local-2 v1"]  # the shredded one is gone
    assert protected_by(HSM_KEK) == ["hsm v1"]


def test_response_carries_no_key_material(versions, officer_client):
    response = officer_client.get(URL)

    assert response.status_code == 200
    assert len(response.json()) == 2
    for artifact in Artifact.objects.all():
        wrapped = bytes(artifact.data_key.wrapped)
        assert base64.b64encode(wrapped) not in response.content
        assert wrapped.hex().encode() not in response.content
        assert wrapped.hex().upper().encode() not in response.content
    assert b"wrapped" not in response.content.replace(b"wrapped_at", b"")


@pytest.mark.parametrize("client_name", ["officer_client", "auditor_client"])
def test_security_officer_and_auditor_may_read_it(versions, client_name, request):
    assert request.getfixturevalue(client_name).get(URL).status_code == 200


@pytest.mark.parametrize("client_name", ["staff_client", "user_client", "guest_client"])
def test_others_are_refused(versions, client_name, request):
    response = request.getfixturevalue(client_name).get(URL)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_anonymous_is_refused(client):
    assert client.get(URL).status_code == 401


def test_admin_artifact_changelist_shows_the_inventory(versions, officer_user):
    from django.test import Client

    from tests.conftest import otp_login

    client = Client()
    otp_login(client, officer_user)

    response = client.get("/admin/registry/artifact/")

    assert response.status_code == 200
    assert b"Key inventory" in response.content and HSM_KEK.encode() in response.content
    for artifact in Artifact.objects.all():
        assert base64.b64encode(bytes(artifact.data_key.wrapped)) not in response.content
        assert bytes(artifact.data_key.wrapped).hex().encode() not in response.content


@pytest.mark.parametrize("user_name", ["officer_user", "auditor_user"])
def test_admin_data_key_list_names_what_each_key_protects(versions, user_name, request):
    from django.test import Client

    from tests.conftest import otp_login

    client = Client()
    otp_login(client, request.getfixturevalue(user_name))

    response = client.get("/admin/keys/datakey/")

    assert response.status_code == 200
    assert b"local-0 v1" in response.content and b"hsm v1" in response.content
    for key in DataKey.objects.all():
        assert base64.b64encode(bytes(key.wrapped)) not in response.content
        assert bytes(key.wrapped).hex().encode() not in response.content
