"""Describes BearerTokenAuthentication to drf-spectacular, so the schema documents `Bearer svt_...`."""

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
