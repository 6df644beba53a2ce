"""An analyst signs in from a browser (issue 17): opening their API tokens sends them to everyone's
login, `/accounts/login/` (the admin's own takes staff only), they type their name and password, land
on /accounts/tokens/ and issue a token — in English and in Chinese."""

import re

import pytest

from apps.accounts.models import ApiToken
from apps.accounts.roles import ANALYST
from tests.conftest import make_user
from tests.factories import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    ("locale", "lang", "username_label"), [("en-US", "en", "Username"), ("zh-CN", "zh-hans", "用户名")]
)
def test_an_analyst_types_their_password_and_issues_a_token(browser, live_server, locale, lang, username_label):
    user = make_user("reader", ANALYST)
    context = browser.new_context(locale=locale)
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        page.goto(f"{live_server.url}/accounts/tokens/")
        page.wait_for_url(re.compile(r"/accounts/login/\?next=/accounts/tokens/$"))
        assert page.locator("html").get_attribute("lang") == lang
        assert username_label in page.locator("#login-form").inner_text()

        page.fill("#id_username", "reader")
        page.fill("#id_password", "not-the-password")
        page.click("#login-form input[type=submit]")
        page.locator(".errornote").wait_for()  # refused: the form again
        page.fill("#id_username", "reader")
        page.fill("#id_password", PASSWORD)
        page.click("#login-form input[type=submit]")
        page.wait_for_url(re.compile(r"/accounts/tokens/$"))
        assert page.locator("html").get_attribute("lang") == lang

        page.fill("#id_name", "notebook")
        page.click("#token-form input[type=submit]")
        plaintext = page.locator("#token-plaintext").inner_text()
        assert plaintext and ApiToken.objects.get(user=user, name="notebook").status == "active"
    finally:
        context.close()
