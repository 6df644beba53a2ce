"""One error shape everywhere: JSON with a stable `code`, a human `detail`, and the `field` at fault."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from apps.core.errors import NotFound, get_or_404
from tests.conftest import session_client

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/accounts/tokens/"


@pytest.fixture
def user_client(plain_user):
    """alice in a portal session: tokens are issued from a session, never with a token."""
    return session_client(plain_user)


def test_validation_error_names_the_field(user_client):
    resp = user_client.post(TOKENS, {"days": 3}, format="json")

    assert resp.status_code == 400
    body = resp.json()
    assert (body["code"], body["field"]) == ("invalid", "name")
    assert body["detail"].startswith("name: ")
    assert body["errors"] == {"name": ["This field is required."]}


def test_malformed_json_is_parse_error(user_client):
    resp = user_client.post(TOKENS, data="{oops", content_type="application/json")

    assert resp.status_code == 400
    assert resp.json()["code"] == "parse_error"
    assert resp.json()["detail"]


def test_unsupported_media_type(user_client):
    resp = user_client.post(TOKENS, data="name=x", content_type="text/plain")

    assert resp.status_code == 415
    assert resp.json()["code"] == "unsupported_media_type"


def test_method_not_allowed(user_client):
    resp = user_client.delete(TOKENS)

    assert resp.status_code == 405
    assert resp.json()["code"] == "method_not_allowed"


def test_service_error_keeps_its_code_and_field(staff_client, staff_user):
    resp = staff_client.get("/api/v1/registry/models/unknown/versions/")

    assert resp.status_code == 404
    assert resp.json() == {"code": "model_not_found", "detail": "unknown model 'unknown'"}


def test_out_of_scope_object_is_404_not_500(user_client):
    resp = user_client.get(f"{TOKENS}999999/")

    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"


class TestGetOr404:
    """The one "load this row or answer 404 with the caller's code" helper."""

    def test_returns_the_row_from_a_model_or_a_queryset(self, plain_user):
        User = get_user_model()
        assert get_or_404(User, "user_not_found", "none", pk=plain_user.pk) == plain_user
        locked = User.objects.select_for_update()
        with transaction.atomic():
            assert get_or_404(locked, "user_not_found", "none", username=plain_user.username) == plain_user

    def test_missing_row_raises_the_callers_code_and_message(self, plain_user):
        with pytest.raises(NotFound) as err:
            get_or_404(get_user_model(), "user_not_found", "no user with id 0", pk=0)
        assert (err.value.code, err.value.detail, err.value.status_code) == ("user_not_found", "no user with id 0", 404)

    def test_the_lookup_narrows_the_queryset(self, plain_user):
        with pytest.raises(NotFound):  # the row exists but not with is_active=False
            get_or_404(get_user_model(), "user_not_found", "inactive", pk=plain_user.pk, is_active=False)
