"""The client address (issue 10, item 8): X-Forwarded-For is believed only as far as trusted
proxies wrote it, and every place that reads the address reads it through one function."""

from __future__ import annotations

import ipaddress

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, digest_token
from apps.audit.models import AuditEvent
from apps.core.netaddr import client_address, limit_key, parse_networks
from tests.factories import token_for

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("198.51.100.7", None, "198.51.100.7"),  # no header
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "203.0.113.1", "203.0.113.1"),  # one trusted proxy
        ("10.0.0.2", "203.0.113.1, 10.0.0.9", "203.0.113.1"),  # two trusted proxies in a row
        ("10.0.0.2", "6.6.6.6, 203.0.113.1", "203.0.113.1"),  # the client's own forgery stays left
        ("10.0.0.2", "203.0.113.1, 198.51.100.9, 10.0.0.9", "198.51.100.9"),  # rightmost untrusted hop
        ("10.0.0.2", "10.0.0.7, 10.0.0.9", "10.0.0.7"),  # every hop trusted: the leftmost
        ("10.0.0.2", "not-an-ip", "10.0.0.2"),  # malformed: stop at the last trusted hop
        ("10.0.0.2", "203.0.113.1, garbage, 10.0.0.9", "10.0.0.9"),
        ("10.0.0.2", "203.0.113.1:4711", "203.0.113.1"),  # a port, as some proxies write it
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8:ffff::1", "2001:db8::5", "2001:db8::5"),
        ("::ffff:10.0.0.2", "203.0.113.1", "203.0.113.1"),  # IPv4-mapped peer
        ("", "203.0.113.1", None),
    ],
)
def test_rightmost_untrusted_hop(peer, xff, expected):
    assert client_address(peer, xff, PROXIES) == expected


def test_no_trusted_proxies_means_the_header_is_ignored():
    assert client_address("10.0.0.2", "203.0.113.1", ()) == "10.0.0.2"


def test_a_malformed_proxy_setting_is_named():
    with pytest.raises(ValueError, match="'10.0.0.300/8'"):
        parse_networks(["10.0.0.300/8"])


def test_an_ipv6_client_is_limited_by_its_prefix():
    a, b = "2001:db8:1:2::1", "2001:db8:1:2:ffff::9"
    assert limit_key(a) == limit_key(b) == str(ipaddress.ip_network("2001:db8:1:2::/64"))
    assert limit_key("198.51.100.7") == "198.51.100.7"


@pytest.mark.django_db
class TestEveryReaderUsesIt:
    """Behind a trusted proxy the audit log, django-axes and a token's last use all see the client,
    not the proxy; without trusting it they see the proxy, whatever the header says."""

    def test_audit_source_of_a_refusal(self, settings):
        settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
        Client().post("/api/v1/accounts/tokens/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.1")
        settings.TRUSTED_PROXIES = []
        Client().post("/api/v1/accounts/users/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.1")

        ips = list(AuditEvent.objects.filter(event_type="access.refused").order_by("id").values_list("source_ip"))
        assert ips == [("203.0.113.1",), ("10.0.0.2",)]

    def test_token_last_used_ip_and_denials(self, settings, plain_user):
        settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
        token = token_for(plain_user)
        api = APIClient(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.1")

        assert api.get("/api/v1/accounts/me/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
        assert api.get("/api/v1/accounts/me/", HTTP_AUTHORIZATION="Bearer svt_wrong").status_code == 401

        assert ApiToken.objects.get(digest=digest_token(token)).last_used_ip == "203.0.113.1"
        assert AuditEvent.objects.get(event_type="auth.token.denied").source_ip == "203.0.113.1"

    def test_axes_counts_the_client(self, settings, plain_user):
        from axes.models import AccessFailureLog

        settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
        APIClient(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.1").post(
            "/api/v1/accounts/login/", {"username": "alice", "password": "wrong-password-1"}, format="json"
        )

        assert list(AccessFailureLog.objects.values_list("ip_address", flat=True)) == ["203.0.113.1"]
        event = AuditEvent.objects.get(event_type="auth.login.failure")
        assert event.source_ip == "203.0.113.1"
