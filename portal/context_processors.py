"""What every admin page says about the installation itself (issue 17: truthful labels)."""

from __future__ import annotations

from django.conf import settings


def installation(request) -> dict:
    """`sovereign_mode`: whether this installation runs in development mode (not SOVEREIGN_ENV=production,
    DEBUG, or SOVEREIGN_INSECURE_OVERRIDE weaknesses in effect) and why — the same facts the compliance
    report prints on its cover; `sovereign_kek`: which provider really wraps the data keys. Only for
    signed-in staff pages: nothing is computed for anonymous requests."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from apps.compliance.reports.data import development_mode

    if settings.KEK_PROVIDER == "pkcs11":
        kek = f"PKCS#11 token {settings.PKCS11['TOKEN']!r}"
    else:
        kek = "a local key file — not an HSM"
    return {"sovereign_mode": development_mode(), "sovereign_kek": kek}
