"""Interactive callers for the security tests: the policy is about what a person can do from
their own session (tokens reach no accounts write at all), so these tests act through sessions
that have passed the second factor, as a person at the portal would."""

from rest_framework.test import APIClient

from tests.conftest import otp_login


def session_api(user) -> APIClient:
    client = APIClient()
    otp_login(client, user)
    return client
