"""The operator jobs in real Chromium (issue 17): a person of a role, in English or in Chinese, with
a signed-in session whose second factor is passed, and screenshots saved to one artefact folder.

Every job test uses `job_page(role, lang)` and `shot(page, name)`:

    @pytest.mark.parametrize("lang", LANGS)
    def test_officer_grants_a_model(job_page, lang):
        page, user = job_page(SECURITY_OFFICER, lang)
        page.goto(...)
        shot(page, "grants-add")  # -> <artefacts>/<lang>/<role>/grants-add.png

Screenshots go to $SOVEREIGN_ARTEFACT_DIR, else var/artefacts/screenshots/ in the checkout (ignored by
git, kept after `make test` so a reviewer can page through every job in both languages). The session
is made the way tests/conftest.py's otp_login makes it (the login form itself is driven in test_i18n.py
and test_two_factor.py); the language comes from the browser's Accept-Language, as for a new person.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import make_user, otp_login

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(os.environ.get("SOVEREIGN_ARTEFACT_DIR") or ROOT / "var" / "artefacts" / "screenshots")
AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1.min.js"
LANGS = ("en", "zh-hans")
_LOCALE = {"en": "en-US", "zh-hans": "zh-CN"}


def shot(page, name: str) -> Path:
    """A full-page screenshot at <artefacts>/<lang>/<role>/<name>.png (the page's job_page labels)."""
    lang, role = getattr(page, "_sv_labels", ("unknown", "unknown"))
    folder = ARTEFACTS / lang / role
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_language(page, lang: str) -> None:
    """The page is really in `lang`: the html element says so (Django's LocaleMiddleware chose it)."""
    assert page.locator("html").get_attribute("lang") == lang


def axe_serious(page) -> list[dict]:
    """axe-core's serious and critical violations on the page (rule, impact, the first targets).
    Needs the context's bypass_csp (job_page sets it): the script is injected inline."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"rule": v["id"], "impact": v["impact"], "help": v["help"], "targets": [n["target"] for n in v["nodes"][:5]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def dump(obj) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False, default=str)


@pytest.fixture
def job_page(browser, live_server):
    """job_page(role, lang, user=None) -> (page, user): a fresh browser context in `lang` signed in
    as `user` (made with `role` when not given), second factor passed. Closed after the test."""
    contexts = []

    def make(role: str | None, lang: str, user=None, username: str | None = None):
        if user is None:
            user = make_user(username or f"{(role or 'person').replace('_', '')}-{lang.replace('-', '')}", role)
        client = Client()
        otp_login(client, user)
        context = browser.new_context(
            locale=_LOCALE[lang],
            viewport={"width": 1400, "height": 900},
            bypass_csp=True,  # only for axe's injected script; the portal's CSP is checked in test_api_docs
        )
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15000)
        page._sv_labels = (lang, role or "person")
        page._sv_base = live_server.url
        return page, user

    yield make
    for context in contexts:
        context.close()


def go(page, path: str):
    """Open a portal path on the live server the page belongs to."""
    return page.goto(f"{page._sv_base}{path}")
