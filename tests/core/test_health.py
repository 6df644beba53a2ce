"""/healthz: public, and it answers only when the database does."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_healthz_is_public():
    resp = Client().get("/healthz")

    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_healthz_ignores_a_bad_token():
    assert Client(HTTP_AUTHORIZATION="Bearer svt_nonsense").get("/healthz").status_code == 200


def test_root_redirects_to_admin():
    resp = Client().get("/")

    assert (resp.status_code, resp["Location"]) == (302, "/admin/")
