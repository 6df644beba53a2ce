from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated

from apps.core.views import healthz

admin.site.site_header = "Sovereign"
admin.site.site_title = "Sovereign"
admin.site.index_title = "Governance portal"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("apps.accounts.urls")),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[IsAuthenticated]),
        name="api-docs",
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
