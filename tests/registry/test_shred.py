"""Crypto-shredding a model version: the wrapped data key is destroyed, the ciphertext deleted
after commit, the act audited; refused while deployed, twice, without a reason, to other roles."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import Conflict, ServiceError
from apps.deployments.models import Deployment, Desired, Observed
from apps.deployments.services import request_deployment, request_redeploy
from apps.keys.models import DataKey
from apps.keys.services import open_sealed
from apps.registry.models import Artifact
from apps.registry.services import shred_model_version
from tests.conftest import grant
from tests.factories import InferenceServerFactory, ModelVersionFactory
from tests.gateway.helpers import deploy

pytestmark = pytest.mark.django_db


def url(mv) -> str:
    return f"/api/v1/registry/models/{mv.model.name}/versions/{mv.version}/shred/"


@pytest.fixture
def mv(staff_user):
    return ModelVersionFactory(model_name="triage", actor=staff_user)


def shred(client, mv, reason="contract ended"):
    return client.post(url(mv), {"reason": reason}, format="json")


def test_shred_destroys_the_key_and_the_file(mv, officer_client, officer_user, django_capture_on_commit_callbacks):
    path = mv.artifact.path
    assert path.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = shred(officer_client, mv)

    assert response.status_code == 200, response.content
    assert response.json()["artifact"]["shredded_at"] is not None
    artifact = Artifact.objects.get(pk=mv.artifact.pk)
    assert bytes(artifact.data_key.wrapped) == b"" and artifact.shredded_at is not None
    assert not path.exists()
    event = AuditEvent.objects.get(event_type="keys.dek.destroy")
    assert event.actor == officer_user
    assert event.details == {
        "model": "triage",
        "version": mv.version,
        "data_key": artifact.data_key_id,
        "purpose": "artifact",
        "kek_id": artifact.kek_id,
        "reason": "contract ended",
        "token_issuer_id": officer_user.pk,  # made with sofia's token, which sofia issued
        "token_issuer": "sofia",
    }


def test_shredded_artifact_cannot_be_opened(mv, officer_user):
    ciphertext = mv.artifact.path.read_bytes()
    shred_model_version(model_version_id=mv.pk, reason="gone", actor=officer_user)
    artifact = Artifact.objects.get(pk=mv.artifact.pk)

    assert bytes(artifact.data_key.wrapped) == b""  # nothing left to unwrap, whatever the service says
    with pytest.raises(ServiceError) as closed:
        open_sealed(ciphertext, artifact.aad.encode(), data_key=artifact.data_key)
    assert closed.value.code == "data_key_destroyed"


def test_missing_file_is_fine(mv, officer_client, django_capture_on_commit_callbacks):
    mv.artifact.path.unlink()

    with django_capture_on_commit_callbacks(execute=True):
        assert shred(officer_client, mv).status_code == 200


@pytest.mark.parametrize(
    ("desired", "observed"),
    [(Desired.ACTIVE, Observed.ACTIVE), (Desired.ACTIVE, Observed.PENDING), (Desired.INACTIVE, Observed.UNLOADING)],
)
def test_refused_while_deployed(mv, officer_client, desired, observed):
    deploy(mv, desired_state=desired, observed_state=observed)

    response = shred(officer_client, mv)

    assert response.status_code == 409
    assert response.json()["code"] == "version_deployed"
    assert bytes(Artifact.objects.get(pk=mv.artifact.pk).data_key.wrapped) != b""
    assert mv.artifact.path.exists()
    assert not AuditEvent.objects.filter(event_type="keys.dek.destroy").exists()


def test_allowed_once_undeployed_or_failed(mv, officer_client):
    deploy(mv, desired_state=Desired.INACTIVE, observed_state=Observed.INACTIVE)
    deploy(mv, desired_state=Desired.INACTIVE, observed_state=Observed.FAILED)

    assert shred(officer_client, mv).status_code == 200


def test_twice_is_a_conflict(mv, officer_client):
    assert shred(officer_client, mv).status_code == 200

    response = shred(officer_client, mv)

    assert response.status_code == 409
    assert response.json()["code"] == "already_shredded"
    assert AuditEvent.objects.filter(event_type="keys.dek.destroy").count() == 1


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
def test_reason_is_required(mv, officer_client, body):
    response = officer_client.post(url(mv), body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "reason_required"
    assert response.json()["field"] == "reason"
    assert Artifact.objects.get(pk=mv.artifact.pk).shredded_at is None


@pytest.mark.parametrize("client_name", ["staff_client", "auditor_client"])
def test_other_privileged_roles_are_refused(mv, client_name, request):
    response = shred(request.getfixturevalue(client_name), mv)

    assert response.status_code == 403
    assert Artifact.objects.get(pk=mv.artifact.pk).shredded_at is None


def test_analyst_granted_is_refused_and_ungranted_sees_nothing(mv, plain_user, user_client, staff_user):
    other = ModelVersionFactory(model_name="secret", actor=staff_user)
    grant(plain_user, mv.model)

    assert shred(user_client, mv).status_code == 403
    response = shred(user_client, other)
    assert response.status_code == 404
    assert DataKey.objects.filter(destroyed_at__isnull=False).count() == 0


def test_deploying_a_shredded_version_is_refused(mv, officer_user, staff_user):
    shred_model_version(model_version_id=mv.pk, reason="gone", actor=officer_user)

    with pytest.raises(Conflict) as err:
        request_deployment(model_version_id=mv.pk, server_id=InferenceServerFactory().pk, actor=staff_user)

    assert err.value.code == "artifact_shredded"
    assert err.value.status_code == 409


def test_redeploying_an_undeployed_version_after_its_shred_is_refused(mv, officer_user, staff_user):
    """Undeploy, shred, then ask to re-activate the old deployment: refused like a new deployment."""
    dep = request_deployment(model_version_id=mv.pk, server_id=InferenceServerFactory().pk, actor=staff_user)
    Deployment.objects.filter(pk=dep.pk).update(desired_state=Desired.INACTIVE, observed_state=Observed.INACTIVE)
    shred_model_version(model_version_id=mv.pk, reason="gone", actor=officer_user)

    with pytest.raises(Conflict) as err:
        request_redeploy(deployment_id=dep.pk, actor=staff_user)

    assert err.value.code == "artifact_shredded"
    assert Deployment.objects.get(pk=dep.pk).desired_state == Desired.INACTIVE
