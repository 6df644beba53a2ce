"""Every admin page says when the installation runs in development mode, and which provider really wraps
the data keys (issue 17: the development install signs and wraps with local files, not an HSM)."""

import re

import pytest

from portal.context_processors import translated_reason
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


def test_the_banner_is_in_chinese_for_a_chinese_reader_reasons_included(staff_user, settings):
    settings.KEK_PROVIDER = "local"
    settings.DEBUG = True
    page = session_client(staff_user).get("/admin/", HTTP_ACCEPT_LANGUAGE="zh-CN").content.decode()
    banner = page[page.index('class="sovereign-dev-banner"') : page.index("</div>", page.index("sovereign-dev-banner"))]

    assert "开发模式" in banner and "不得用于患者数据" in banner
    assert "SOVEREIGN_ENV 不是 production" in banner and "DEBUG 已开启" in banner
    assert "本地密钥文件——不是硬件安全模块（HSM）" in banner
    assert "development settings" not in banner and "not an HSM" not in banner and "DEBUG is on" not in banner


def test_each_insecure_override_is_named_in_chinese(settings, monkeypatch):
    """A production installation running with every override: each weakness in the reader's language."""
    from types import SimpleNamespace

    from django.utils import translation

    from apps.compliance.reports.data import development_mode
    from apps.core import production

    weak = SimpleNamespace(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3"}},
        KEK_PROVIDER="local",
        DEBUG=True,
        SECURE_SSL_REDIRECT=False,
        SESSION_COOKIE_SECURE=False,
        CSRF_COOKIE_SECURE=False,
        SECURE_HSTS_SECONDS=0,
    )
    monkeypatch.setattr(production, "weaknesses", lambda s, real=production.weaknesses: real(weak))
    settings.SOVEREIGN_ENV = "production"
    settings.DEBUG = True
    settings.INSECURE_OVERRIDE = list(production.OVERRIDES)
    reasons = development_mode()["reasons"]
    overrides = [r for r in reasons if r.startswith("SOVEREIGN_INSECURE_OVERRIDE=")]
    assert len(overrides) == len(production.OVERRIDES)
    with translation.override("zh-hans"):
        shown = [translated_reason(r) for r in reasons]
    for english, chinese in zip(reasons, shown, strict=True):
        assert chinese != english, english
        assert re.search(r"[\u4e00-\u9fff]", chinese), chinese
