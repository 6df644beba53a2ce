"""Swagger UI and ReDoc render in a real browser from the portal's own static files (issue 17): a
hospital network reaches no CDN, and no third-party script is pulled into a logged-in page."""

from urllib.parse import urlsplit

import pytest

from apps.accounts.roles import ANALYST
from tests.conftest import make_user
from tests.factories import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _hosts_reached(page) -> set[str]:
    """Hosts of the http(s) requests that went out: finished, or failed other than by the page's
    Content-Security-Policy (ReDoc's bundle asks for a logo on cdn.redoc.ly; the policy stops it in
    the browser)."""
    hosts: set[str] = set()

    def seen(request, failed: bool = False) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("http", "https") and not (failed and request.failure == "csp"):
            hosts.add(url.netloc)

    page.on("requestfinished", seen)
    page.on("requestfailed", lambda request: seen(request, failed=True))
    return hosts


def _login(page, base: str) -> None:
    """An analyst signs in on everyone's login form (the admin's is for staff): the docs need only a login."""
    make_user("reader", ANALYST)
    page.goto(f"{base}/accounts/login/?next=/accounts/tokens/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", PASSWORD)
    page.click("#login-form input[type=submit]")
    page.wait_for_url(f"{base}/accounts/tokens/")


@pytest.mark.parametrize(
    ("path", "rendered"),
    [("/api/docs/", ".swagger-ui .opblock"), ("/api/redoc/", "[data-section-id^='tag/']")],
)
def test_api_docs_render_from_the_portal_alone(page, live_server, path, rendered):
    hosts = _hosts_reached(page)
    _login(page, live_server.url)
    page.goto(f"{live_server.url}{path}")

    page.locator(rendered).first.wait_for()

    assert page.locator(rendered).count() > 5  # the operations of the schema, not an empty shell
    assert hosts == {urlsplit(live_server.url).netloc}, f"requests left the portal: {hosts}"
