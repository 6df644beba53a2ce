"""What every admin page says about the installation itself (issue 17: truthful labels)."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext

from apps.core.production import translated_reason


def installation(request) -> dict:
    """`sovereign_mode`: whether this installation runs in development mode (not SOVEREIGN_ENV=production,
    DEBUG, or SOVEREIGN_INSECURE_OVERRIDE weaknesses in effect) and why — the same facts the compliance
    report prints on its cover, in the reader's language; `sovereign_kek`: which provider really wraps
    the data keys. Only for signed-in staff pages: nothing is computed for anonymous requests."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from apps.compliance.reports.data import development_mode

    if settings.KEK_PROVIDER == "pkcs11":
        kek = gettext("PKCS#11 token %(token)s") % {"token": repr(settings.PKCS11["TOKEN"])}
    else:
        kek = gettext("a local key file — not an HSM")
    mode = development_mode()
    mode["reasons"] = [translated_reason(reason) for reason in mode["reasons"]]
    return {"sovereign_mode": mode, "sovereign_kek": kek}
