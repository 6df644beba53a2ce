"""Every admin page says when the installation runs in development mode, and which provider really wraps
the data keys (issue 17: the development install signs and wraps with local files, not an HSM)."""

import pytest

from tests.conftest import session_client

pytestmark = pytest.mark.django_db


def test_development_mode_banner_names_the_reasons_and_the_key_provider(staff_user, settings):
    settings.KEK_PROVIDER = "local"
    page = session_client(staff_user).get("/admin/").content.decode()

    assert "Development mode" in page
    assert "SOVEREIGN_ENV is not production" in page
    assert "a local key file — not an HSM" in page


def test_a_production_installation_without_overrides_shows_no_banner(staff_user, settings):
    settings.SOVEREIGN_ENV = "production"
    settings.DEBUG = False
    settings.INSECURE_OVERRIDE = []
    page = session_client(staff_user).get("/admin/").content.decode()

    assert "sovereign-dev-banner" not in page


def test_anonymous_login_page_says_nothing_about_the_installation(client):
    page = client.get("/admin/login/").content.decode()

    assert "sovereign-dev-banner" not in page
