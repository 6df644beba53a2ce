"""Production refuses insecure settings at start (docs/production.md).

With SOVEREIGN_ENV=production, four weaknesses stop every process (web, worker, beat, manage.py)
while Django starts, in one ImproperlyConfigured that names each of them:

- `sqlite`    — the database is SQLite: no trigger keeps the audit log append-only;
- `local_kek` — the KEK provider is not an HSM (`local`: a key file on this host);
- `debug`     — SOVEREIGN_DEBUG is on: error pages show settings, code and SQL;
- `no_tls`    — TLS is not enforced: no HTTPS redirect, cookies without `Secure`, or HSTS off.

An operator who must run so anyway (a lab, a benchmark) names each allowed weakness in
SOVEREIGN_INSECURE_OVERRIDE, e.g. `sqlite,local_kek`; only the named ones are allowed. An override
in effect is (1) recorded once in the audit log as the alert `config.insecure_override` by the
first process that reaches the database, and again whenever the set changes (apps/audit/platform.py:
core is the floor and writes no audit event itself), (2) a warning of
`check --deploy` (apps/core/checks.py) and (3) a failing compliance check whose evidence names it.

Values production cannot do without are refused too and cannot be overridden: the PKCS#11 token,
PIN file and key label when the provider is `pkcs11`, and real host names in ALLOWED_HOSTS.

This module reads settings only; it imports no model at import time, so `ready()` can call it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext, gettext_noop

log = logging.getLogger(__name__)

ENVIRONMENTS = ("development", "production")
OVERRIDE_VAR = "SOVEREIGN_INSECURE_OVERRIDE"
OVERRIDES = ("sqlite", "local_kek", "debug", "no_tls")
EVENT = "config.insecure_override"  # the audit event apps/audit/platform.py records


@dataclass(frozen=True)
class Weakness:
    name: str  # the word SOVEREIGN_INSECURE_OVERRIDE uses for it
    problem: str
    remedy: str


def is_production(s) -> bool:
    return getattr(s, "SOVEREIGN_ENV", "development") == "production"


def _tls_gaps(s) -> list[str]:
    gaps = []
    if not s.SECURE_SSL_REDIRECT:
        gaps.append("SOVEREIGN_SSL_REDIRECT is off")
    if not (s.SESSION_COOKIE_SECURE and s.CSRF_COOKIE_SECURE):
        gaps.append("SOVEREIGN_SECURE_COOKIES is off (session and CSRF cookies would travel over plain HTTP)")
    if (s.SECURE_HSTS_SECONDS or 0) <= 0:
        gaps.append("SOVEREIGN_HSTS_SECONDS is 0")
    return gaps


def weaknesses(s) -> list[Weakness]:
    """The insecure settings of `s` (django.conf.settings or a stand-in), in OVERRIDES order."""
    found = []
    if any("sqlite" in db.get("ENGINE", "") for db in s.DATABASES.values()):
        found.append(
            Weakness(
                "sqlite",
                "the database is SQLite (DATABASE_URL): no trigger keeps the audit log append-only",
                "set DATABASE_URL to PostgreSQL",
            )
        )
    if s.KEK_PROVIDER != "pkcs11":
        found.append(
            Weakness(
                "local_kek",
                f"SOVEREIGN_KEK_PROVIDER is {s.KEK_PROVIDER!r}: the key-encryption key is not in an HSM",
                "set SOVEREIGN_KEK_PROVIDER=pkcs11 with SOVEREIGN_PKCS11_MODULE, _TOKEN, _PIN_FILE and _KEY_LABEL",
            )
        )
    if s.DEBUG:
        found.append(
            Weakness(
                "debug",
                "SOVEREIGN_DEBUG is on: error pages show settings, code and SQL to any caller",
                "unset SOVEREIGN_DEBUG",
            )
        )
    gaps = _tls_gaps(s)
    if gaps:
        found.append(
            Weakness(
                "no_tls",
                "TLS is not enforced: " + "; ".join(gaps),
                "set SOVEREIGN_SSL_REDIRECT=true, SOVEREIGN_SECURE_COOKIES=true, SOVEREIGN_HSTS_SECONDS=31536000 "
                "(behind a TLS proxy also SOVEREIGN_BEHIND_TLS_PROXY=true)",
            )
        )
    return found


def parse_override(s) -> tuple[set[str], list[str]]:
    """(the names SOVEREIGN_INSECURE_OVERRIDE allows, the unknown words in it)."""
    words = {str(w).strip().lower() for w in getattr(s, "INSECURE_OVERRIDE", []) if str(w).strip()}
    return words & set(OVERRIDES), sorted(words - set(OVERRIDES))


def in_effect(s) -> dict[str, str]:
    """{override name: problem} for each weakness a production process runs with because the
    override allows it. Empty outside production (development allows everything anyway)."""
    if not is_production(s):
        return {}
    allowed, _ = parse_override(s)
    return {w.name: w.problem for w in weaknesses(s) if w.name in allowed}


def _missing_values(s) -> list[str]:
    missing = []
    if s.KEK_PROVIDER == "pkcs11":
        for key in ("TOKEN", "PIN_FILE", "KEY_LABEL"):
            if not s.PKCS11.get(key):
                missing.append(f"SOVEREIGN_PKCS11_{key} must be set for the pkcs11 KEK provider")
    hosts = list(s.ALLOWED_HOSTS)
    if not hosts or "*" in hosts:
        missing.append("SOVEREIGN_ALLOWED_HOSTS must list the portal's host names (not empty, not '*')")
    return missing


def refusals(s) -> list[str]:
    """One line per reason a production start is refused (empty: it may start)."""
    allowed, unknown = parse_override(s)
    lines = [f"{w.name}: {w.problem}; fix: {w.remedy}" for w in weaknesses(s) if w.name not in allowed]
    if unknown:  # a typo must not pass silently as "nothing overridden"
        lines.append(f"{OVERRIDE_VAR} names unknown setting(s) {', '.join(unknown)} (known: {', '.join(OVERRIDES)})")
    return lines + _missing_values(s)


def enforce(s) -> None:
    """Raise ImproperlyConfigured naming every refusal, in production; do nothing elsewhere."""
    env = getattr(s, "SOVEREIGN_ENV", "development")
    if env not in ENVIRONMENTS:  # `prod` or `Production` must not quietly mean "development"
        raise ImproperlyConfigured(f"SOVEREIGN_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    if not is_production(s):
        return
    lines = refusals(s)
    if lines:
        raise ImproperlyConfigured(
            "SOVEREIGN_ENV=production refuses to start with insecure settings:\n"
            + "\n".join(f"  - {line}" for line in lines)
            + f"\nTo run so anyway, name each allowed weakness in {OVERRIDE_VAR} (e.g. {OVERRIDE_VAR}=sqlite,debug): "
            "the override is recorded in the audit log and the compliance checks report it as failing "
            "(docs/production.md)."
        )
    for name, problem in in_effect(s).items():
        log.warning("%s allows %s: %s", OVERRIDE_VAR, name, problem)


# development_mode()'s reasons (apps/compliance/reports/data.py) are English (the signed report's JSON keeps them so);
# the banner above every page and the report's PDF show them in the reader's or the report's language. A reason
# not listed here is shown as written.
_REASONS = {
    reason: reason
    for reason in (
        gettext_noop("SOVEREIGN_ENV is not production: development settings, no production start-up refusals"),
        gettext_noop("DEBUG is on"),
    )
}
# SOVEREIGN_INSECURE_OVERRIDE=<name>: <problem> — the problem named per override (OVERRIDES above)
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
