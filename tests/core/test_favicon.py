"""Every admin page names its icon (nu18's first `make run`: each page load asked for /favicon.ico, a 404
and a WARNING line in web.log per page)."""

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db


def test_login_page_names_a_served_icon():
    page = Client().get("/admin/login/").content.decode()

    assert '<link rel="icon" href="/static/portal/favicon.svg" type="image/svg+xml">' in page
    assert finders.find("portal/favicon.svg")
