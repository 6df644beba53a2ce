import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# 等保 8.1.4.6: verify the installed code against its signed manifest at start (logged; a mismatch
# is audited as platform.code_manifest.mismatch). Never stops the portal.
from apps.compliance.manifest import verify_at_start  # noqa: E402 - needs the application set up

verify_at_start("web")
