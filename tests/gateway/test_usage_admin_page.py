"""The chat-usage page of one call, as a newcomer met it: the admin role was sent by the token's
link to a page it may not open (403), and the times were raw floats that pushed the list past the page."""

import pytest
from django.test import Client

from apps.accounts.models import ApiToken
from apps.accounts.roles import ADMIN, AUDITOR, SECURITY_OFFICER
from apps.gateway.models import LLMUsage
from tests.conftest import make_user, otp_login
from tests.factories import token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage():
    caller = make_user("caller")
    token_for(caller, name="caller key")
    token = ApiToken.objects.get(user=caller)
    return LLMUsage.objects.create(
        request_id="req-1", token=token, username="caller", model_name="smollm2",
        prompt_tokens=37, completion_tokens=8, ttft_ms=802.2116990005088, duration_ms=1006.7635230006999,
    )  # fmt: skip


def _page(role, path):
    client = Client()
    otp_login(client, make_user(f"who-{role}", role))
    resp = client.get(path)
    assert resp.status_code == 200
    return client, resp.content.decode()


@pytest.mark.parametrize("role, linked", [(ADMIN, False), (SECURITY_OFFICER, True), (AUDITOR, True)])
def test_the_token_links_only_to_a_page_the_viewer_may_open(usage, role, linked):
    token_url = f"/admin/accounts/apitoken/{usage.token_id}/change/"
    client, page = _page(role, f"/admin/gateway/llmusage/{usage.pk}/change/")

    assert "caller key" in page
    assert (token_url in page) is linked
    if linked:  # the link leads somewhere that opens
        assert client.get(token_url).status_code == 200
    else:
        assert client.get(token_url).status_code == 403  # why it must not be linked


def test_times_are_whole_milliseconds_in_the_list_and_the_page(usage):
    client, listing = _page(ADMIN, "/admin/gateway/llmusage/")
    one = client.get(f"/admin/gateway/llmusage/{usage.pk}/change/").content.decode()

    for page in (listing, one):
        assert "802.2116990005088" not in page and "1006.7635230006999" not in page
        assert "802<" in page and "1,007<" in page
        assert "time to first token (ms)" in page.lower()
