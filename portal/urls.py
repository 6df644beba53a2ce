from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated

from apps.core.views import healthz
from portal import metrics

# The API docs pages load Swagger UI / ReDoc from drf-spectacular-sidecar's static files; this policy
# keeps them from reaching any other host (ReDoc's bundle shows a logo from cdn.redoc.ly) and from
# running script that is not the portal's own.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class _DocsPolicy:
    """Adds DOCS_CSP to the page; a view class still (its methods are what the route walks see)."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_CSP
        return response


class SwaggerDocs(_DocsPolicy, SpectacularSwaggerView):
    pass


class RedocDocs(_DocsPolicy, SpectacularRedocView):
    pass


admin.site.site_header = "Sovereign"
admin.site.site_title = "Sovereign"
admin.site.index_title = _("Governance portal")

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    # Prometheus: a metrics bearer token or an allowed network, not a user (docs/metrics.md)
    path("metrics", metrics.metrics, name="metrics"),
    path("metrics/triton/<str:server>", metrics.triton_metrics, name="metrics-triton"),
    path("admin/", admin.site.urls),
    path("accounts/", include("apps.accounts.urls")),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="schema"),
    path(
        "api/docs/",
        SwaggerDocs.as_view(url_name="schema", permission_classes=[IsAuthenticated]),
        name="api-docs",
    ),
    path(
        "api/redoc/",
        RedocDocs.as_view(url_name="schema", permission_classes=[IsAuthenticated]),
        name="api-redoc",
    ),
    path("api/v1/registry/", include("apps.registry.api.urls")),
    path("api/v1/deployments/", include("apps.deployments.api.urls")),
    path("api/v1/accounts/", include("apps.accounts.api.urls")),
    path("api/v1/audit/", include("apps.audit.api.urls")),
    path("api/v1/keys/", include("apps.keys.api.urls")),
    path("api/v1/compliance/", include("apps.compliance.api.urls")),
    path("api/v1/llm/", include("apps.gateway.api.urls")),
    path("api/v1/usage/", include("apps.gateway.api.usage_urls")),
]
