"""Describes the API's authentication to drf-spectacular: `Bearer svt_...` tokens and the console's
session cookie."""

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.accounts.authentication.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A Sovereign API token: `Authorization: Bearer svt_...`",
        }


class PortalSessionScheme(SessionScheme):
    """The console's session cookie (DRF's SessionAuthentication, refusing another site's requests)."""

    target_class = "apps.accounts.authentication.SessionAuthentication"
