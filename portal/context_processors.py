"""What every admin page says about the installation itself (issue 17: truthful labels)."""

from __future__ import annotations

import re

from django.conf import settings
from django.utils.translation import gettext, gettext_noop

# development_mode()'s reasons are English (the signed report's JSON keeps them so); the banner shows
# them in the reader's language. A reason not listed here is shown as written.
_REASONS = {
    reason: reason
    for reason in (
        gettext_noop("SOVEREIGN_ENV is not production: development settings, no production start-up refusals"),
        gettext_noop("DEBUG is on"),
    )
}
# SOVEREIGN_INSECURE_OVERRIDE=<name>: <problem> — the problem named per override (apps/core/production.py)
_OVERRIDE = re.compile(r"^(?P<var>SOVEREIGN_INSECURE_OVERRIDE=(?P<name>\w+)): ")
_OVERRIDE_PROBLEMS = {
    "sqlite": gettext_noop("the database is SQLite (DATABASE_URL): no trigger keeps the audit log append-only"),
    "local_kek": gettext_noop("the key-encryption key is not in an HSM (SOVEREIGN_KEK_PROVIDER is not pkcs11)"),
    "debug": gettext_noop("SOVEREIGN_DEBUG is on: error pages show settings, code and SQL to any caller"),
    "no_tls": gettext_noop("TLS is not enforced (HTTPS redirect, secure cookies or HSTS is off)"),
}


def translated_reason(reason: str) -> str:
    """One of development_mode()'s reasons in the active language."""
    if reason in _REASONS:
        return gettext(reason)
    match = _OVERRIDE.match(reason)
    if match and match["name"] in _OVERRIDE_PROBLEMS:
        return f"{match['var']}: {gettext(_OVERRIDE_PROBLEMS[match['name']])}"
    return reason


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
