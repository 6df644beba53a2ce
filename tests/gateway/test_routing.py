"""Gateway authentication and routing: who may call, and which model has somewhere to go."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.audit.models import AuditEvent, Outcome
from apps.deployments.models import Desired, Observed
from tests.factories import ModelVersionFactory, UserFactory, token_for
from tests.gateway.dataplane_client import DataPlaneClient as Client

from .helpers import deploy, infer, valid_request

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/v2/models/triage", "inference.metadata"),
    ("get", "/v2/models/triage/ready", "inference.ready"),
    ("post", "/v2/models/triage/infer", "inference.infer"),
]


def call(client: Client, method: str, path: str):
    if method == "post":
        return client.post(path, data=b'{"inputs": []}', content_type="application/json")
    return client.get(path)


def assert_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.content
    assert resp["Content-Type"] == "application/json"
    body = resp.json()
    assert body["code"] == code
    assert body["error"] == body["detail"] and body["error"]
    return body


def single_event(event_type: str) -> AuditEvent:
    return AuditEvent.objects.get(event_group="inference", event_type=event_type)


class TestAuthentication:
    @pytest.mark.parametrize(("method", "path", "event_type"), ENDPOINTS)
    def test_no_token_is_401_missing_token(self, model_version, method, path, event_type):
        deploy(model_version)

        resp = call(Client(), method, path)

        assert_error(resp, 401, "missing_token")
        event = single_event(event_type)
        assert (event.outcome, event.error_code, event.details["status"]) == (Outcome.DENIED, "missing_token", 401)
        assert event.actor is None

    @pytest.mark.parametrize(
        ("header", "code"),
        [
            ("Basic dXNlcjpwYXNz", "malformed_authorization"),
            ("Bearer", "malformed_authorization"),
            ("Bearer svt_unknown", "invalid_token"),
        ],
    )
    def test_bad_header(self, model_version, header, code):
        deploy(model_version)

        resp = infer(Client(HTTP_AUTHORIZATION=header), valid_request())

        assert_error(resp, 401, code)
        assert single_event("inference.infer").error_code == code

    @pytest.mark.parametrize("field", ["revoked_at", "expires_at"])
    def test_revoked_or_expired_token(self, model_version, plain_user, field):
        deploy(model_version)
        token = token_for(plain_user)
        value = timezone.now() - timedelta(seconds=1)
        ApiToken.objects.filter(user=plain_user).update(**{field: value})

        resp = infer(Client(HTTP_AUTHORIZATION=f"Bearer {token}"), valid_request())

        code = {"revoked_at": "token_revoked", "expires_at": "token_expired"}[field]
        assert_error(resp, 401, code)
        assert single_event("inference.infer").error_code == code

    def test_inactive_user(self, model_version):
        user = UserFactory()
        token = token_for(user)
        user.is_active = False
        user.save()
        deploy(model_version)

        resp = infer(Client(HTTP_AUTHORIZATION=f"Bearer {token}"), valid_request())

        assert_error(resp, 401, "user_inactive")


class TestRouting:
    def test_unknown_model_is_404(self, caller, plain_user):
        resp = infer(caller, valid_request(), name="nope")

        assert_error(resp, 404, "model_not_found")
        event = single_event("inference.infer")
        assert (event.outcome, event.error_code, event.details["status"]) == (Outcome.DENIED, "model_not_found", 404)
        assert event.actor == plain_user
        assert event.token_id == ApiToken.objects.get(user=plain_user).pk
        assert event.target_display == "nope"

    @pytest.mark.parametrize(("method", "path", "event_type"), ENDPOINTS)
    def test_model_without_deployment_is_409(self, caller, model_version, method, path, event_type):
        resp = call(caller, method, path)

        assert_error(resp, 409, "model_not_deployed")
        event = single_event(event_type)
        assert (event.outcome, event.error_code, event.details["status"]) == (
            Outcome.FAILURE,
            "model_not_deployed",
            409,
        )

    @pytest.mark.parametrize(
        ("desired", "observed"),
        [
            (Desired.ACTIVE, Observed.PENDING),
            (Desired.ACTIVE, Observed.LOADING),
            (Desired.ACTIVE, Observed.FAILED),
            (Desired.INACTIVE, Observed.ACTIVE),
            (Desired.INACTIVE, Observed.INACTIVE),
        ],
    )
    def test_deployment_not_serving_is_409(self, caller, model_version, desired, observed):
        deploy(model_version, desired_state=desired, observed_state=observed)

        resp = infer(caller, valid_request())

        assert_error(resp, 409, "model_not_deployed")

    def test_other_models_deployment_does_not_serve(self, caller, model_version, staff_user):
        deploy(ModelVersionFactory(model_name="other", actor=staff_user))

        assert_error(infer(caller, valid_request()), 409, "model_not_deployed")

    def test_version_not_deployed_is_404(self, caller, model_version):
        deploy(model_version)

        resp = caller.post("/v2/models/triage/versions/2/infer", data=b"{}", content_type="application/json")

        assert_error(resp, 404, "model_version_not_deployed")
        assert single_event("inference.infer").error_code == "model_version_not_deployed"
