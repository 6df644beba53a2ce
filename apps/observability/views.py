"""The dashboard's JSON endpoint, polled by the admin index every 15 s (docs/dashboard.md). Mounted
by the admin site (portal/admin_site.py) behind its staff check."""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .selectors import WINDOWS, dashboard

# The dashboard's own script and Chart.js are static files of the portal; nothing else runs. Styles
# inline: the admin's templates and the development banner carry style attributes.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@never_cache
@require_GET
def dashboard_data(request):
    window = request.GET.get("window", "1h")
    if window not in WINDOWS:
        return JsonResponse(
            {"code": "invalid_window", "detail": f"window must be one of {', '.join(WINDOWS)}", "field": "window"},
            status=400,
        )
    return JsonResponse(dashboard(request.user, window))
