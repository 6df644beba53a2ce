"""Production refuses insecure settings at start (issue 10 item 7, docs/production.md).

Every test starts the real project in a subprocess with SOVEREIGN_ENV=production: the secure
baseline (PostgreSQL, the pkcs11 KEK provider on a SoftHSM2 token, DEBUG off, TLS enforced behind
a TLS proxy) passes `check --deploy` with nothing but the documented silences; each insecure
setting stops the start with a message naming it; an explicit override lets it start, is recorded
in the audit log, and makes the compliance checks fail with evidence naming it."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = "SOVEREIGN_INSECURE_OVERRIDE"

# How to make each weakness, and the words the refusal must use for it.
WEAKEN = {
    "sqlite": ({"DATABASE_URL": "sqlite:///{tmp}/portal.sqlite3"}, "sqlite: the database is SQLite"),
    "local_kek": ({"SOVEREIGN_KEK_PROVIDER": "local"}, "local_kek: SOVEREIGN_KEK_PROVIDER is 'local'"),
    "debug": ({"SOVEREIGN_DEBUG": "true"}, "debug: SOVEREIGN_DEBUG is on"),
    "no_tls": ({"SOVEREIGN_SSL_REDIRECT": "false"}, "no_tls: TLS is not enforced: SOVEREIGN_SSL_REDIRECT is off"),
    "no_tls-cookies": ({"SOVEREIGN_SECURE_COOKIES": "false"}, "no_tls: TLS is not enforced: SOVEREIGN_SECURE_COOKIES"),
    "no_tls-hsts": ({"SOVEREIGN_HSTS_SECONDS": "0"}, "no_tls: TLS is not enforced: SOVEREIGN_HSTS_SECONDS is 0"),
}
NAMES = ("sqlite", "local_kek", "debug", "no_tls")


def _postgres_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgres") else "postgres://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def secure_env(tmp_path, softhsm_token) -> dict:
    """A production environment with nothing insecure in it (no database connection is needed)."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        # DJANGO_ALLOW_ASYNC_UNSAFE: a test process's setting (the browser tests'), never production's.
        if not k.startswith("SOVEREIGN_")
        and k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "SOVEREIGN_ENV": "production",
        "SOVEREIGN_SECRET_KEY": secrets.token_urlsafe(50),
        "SOVEREIGN_ALLOWED_HOSTS": "portal.example.org",
        "SOVEREIGN_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": _postgres_url(),
        "SOVEREIGN_KEK_PROVIDER": "pkcs11",
        "SOVEREIGN_PKCS11_MODULE": softhsm_token.module,
        "SOVEREIGN_PKCS11_TOKEN": softhsm_token.token_label,
        "SOVEREIGN_PKCS11_PIN_FILE": str(softhsm_token.pin_file),
        "SOVEREIGN_PKCS11_KEY_LABEL": "sovereign-kek-v1",
        "SOFTHSM2_CONF": str(softhsm_token.conf),
        "SOVEREIGN_BEHIND_TLS_PROXY": "true",  # TLS ends at nginx (deploy/), which sets X-Forwarded-Proto
    }


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def weakened(env: dict, tmp_path: Path, *which: str) -> dict:
    env = dict(env)
    for key in which:
        env.update({k: v.format(tmp=tmp_path) for k, v in WEAKEN[key][0].items()})
    return env


def _silenced_ids() -> list[str]:
    from django.conf import settings

    return list(settings.SILENCED_SYSTEM_CHECKS)


def test_check_deploy_in_production_reports_only_documented_silences(secure_env):
    result = manage(secure_env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    silenced = _silenced_ids()
    assert result.stdout.strip() == f"System check identified no issues ({len(silenced)} silenced)."


def test_every_silenced_check_is_justified_in_settings_and_listed_in_the_docs():
    settings_text = (ROOT / "portal" / "settings.py").read_text()
    docs = (ROOT / "docs" / "production.md").read_text()
    for check_id in _silenced_ids():
        # the line before the id in SILENCED_SYSTEM_CHECKS is a comment that names it and says why
        quoted = re.escape(check_id)
        assert re.search(rf"#[^\n]*{quoted}[^\n]*\n(\s*#[^\n]*\n)*\s*\"{quoted}\"", settings_text), check_id
        assert f"`{check_id}`" in docs


@pytest.mark.parametrize("weakness", list(WEAKEN))
def test_each_insecure_setting_refuses_to_start_and_is_named(secure_env, tmp_path, weakness):
    result = manage(weakened(secure_env, tmp_path, weakness), "check")

    assert result.returncode != 0
    assert "ImproperlyConfigured: SOVEREIGN_ENV=production refuses to start" in result.stderr
    assert f"- {WEAKEN[weakness][1]}" in result.stderr
    named = weakness.split("-")[0]
    assert [n for n in NAMES if f"  - {n}: " in result.stderr] == [named]


def test_all_insecure_settings_are_named_in_one_message(secure_env, tmp_path):
    result = manage(weakened(secure_env, tmp_path, *NAMES), "check")

    assert result.returncode != 0
    assert result.stderr.count("refuses to start") == 1
    for name in NAMES:
        assert f"- {WEAKEN[name][1]}" in result.stderr


def test_the_override_allows_only_what_it_names(secure_env, tmp_path):
    env = {**weakened(secure_env, tmp_path, *NAMES), OVERRIDE: "sqlite,debug"}

    result = manage(env, "check")

    assert result.returncode != 0
    assert [n for n in NAMES if f"  - {n}: " in result.stderr] == ["local_kek", "no_tls"]


def test_a_misspelt_override_is_refused(secure_env, tmp_path):
    env = {**weakened(secure_env, tmp_path, "debug"), OVERRIDE: "dbeug"}

    result = manage(env, "check")

    assert result.returncode != 0
    assert f"{OVERRIDE} names unknown setting(s) dbeug" in result.stderr
    assert "- debug: SOVEREIGN_DEBUG is on" in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SOVEREIGN_ENV": "prod", "SOVEREIGN_DEBUG": "true"}, "SOVEREIGN_ENV must be one of development, production"),
        ({"SOVEREIGN_PKCS11_PIN_FILE": ""}, "SOVEREIGN_PKCS11_PIN_FILE must be set"),
        ({"SOVEREIGN_ALLOWED_HOSTS": "*"}, "SOVEREIGN_ALLOWED_HOSTS must list the portal's host names"),
        ({"SOVEREIGN_ALLOWED_HOSTS": "*", OVERRIDE: "sqlite,local_kek,debug,no_tls"}, "SOVEREIGN_ALLOWED_HOSTS"),
    ],
)
def test_required_production_values_cannot_be_overridden(secure_env, change, message):
    result = manage({**secure_env, **change}, "check")

    assert result.returncode != 0
    assert message in result.stderr


SHOW = """
import json
from apps.audit.models import AuditEvent
from apps.compliance.checks import Context, run_check
checks = ("settings.tls", "keys.kek_in_hsm", "audit.append_only", "settings.deploy_check", "platform.minimal_install")
out = {"checks": {}, "events": []}
for name in checks:
    result = run_check(name, Context(profile="hipaa"))
    out["checks"][name] = {"status": result.status, "summary": result.summary, "evidence": result.evidence}
rows = AuditEvent.objects.filter(event_type="config.insecure_override").order_by("id")
out["events"] = list(rows.values("id", "actor_name", "details"))
print("RESULT " + json.dumps(out, default=str))
"""


def _show(env: dict) -> dict:
    result = manage(env, "shell", "-c", SHOW)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_an_override_starts_is_audited_once_and_fails_the_compliance_checks(secure_env, tmp_path):
    """Production on SQLite, the local KEK, DEBUG on and no TLS, every one of them named."""
    env = {
        **weakened(secure_env, tmp_path, *NAMES),
        "SOVEREIGN_SECURE_COOKIES": "false",
        "SOVEREIGN_HSTS_SECONDS": "0",
        "SOVEREIGN_LOCAL_KEK_FILE": str(tmp_path / "kek.bin"),
        OVERRIDE: "sqlite,local_kek,debug,no_tls",
    }
    for key in ("SOVEREIGN_PKCS11_TOKEN", "SOVEREIGN_PKCS11_PIN_FILE", "SOVEREIGN_PKCS11_KEY_LABEL"):
        env.pop(key)

    migrated = manage(env, "migrate", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr

    deploy_check = manage(env, "check", "--deploy")
    for name in NAMES:
        assert f"(sovereign.W001) {OVERRIDE} allows {name}:" in deploy_check.stderr + deploy_check.stdout

    shown = _show(env)
    [event] = shown["events"]  # recorded by the first start (migrate), not again by the later ones
    assert event["actor_name"] == ""  # the system, at start
    assert event["details"]["in_effect"] == sorted(NAMES)
    assert event["details"]["previous"] == []
    assert event["details"][OVERRIDE] == sorted(NAMES)
    assert set(event["details"]["problems"]) == set(NAMES)
    expected = {
        "settings.tls": "no_tls",
        "keys.kek_in_hsm": "local_kek",
        "audit.append_only": "sqlite",
        "settings.deploy_check": "debug",
        "platform.minimal_install": "debug",
    }
    for check, name in expected.items():
        result = shown["checks"][check]
        assert result["status"] == "fail", (check, result)
        assert f"(allowed by {OVERRIDE}={name})" in result["summary"]
        override = result["evidence"]["insecure_override"]
        assert override["setting"] == f"{OVERRIDE}={name}"
        assert override["audit_event"] == event["id"]
    assert sorted(shown["checks"]["settings.deploy_check"]["evidence"]["insecure_overrides"]) == sorted(NAMES)

    # DEBUG turned off, the override still naming it: a new event records the smaller set; the
    # debug-only check passes again and names no override.
    shown = _show({**env, "SOVEREIGN_DEBUG": "false"})
    first, second = shown["events"]
    assert second["details"]["in_effect"] == ["local_kek", "no_tls", "sqlite"]
    assert second["details"]["previous"] == sorted(NAMES)
    assert shown["checks"]["platform.minimal_install"]["status"] == "pass"
    assert "insecure_override" not in shown["checks"]["platform.minimal_install"]["evidence"]
    assert shown["checks"]["settings.tls"]["evidence"]["insecure_override"]["audit_event"] == second["id"]


@pytest.fixture
def production_debug(settings):
    """In-process: production with DEBUG on, allowed by the override (the start-up guard already ran)."""
    settings.SOVEREIGN_ENV = "production"
    settings.INSECURE_OVERRIDE = ["debug"]
    settings.DEBUG = True
    return settings


def _override_events() -> list[dict]:
    from apps.audit.models import AuditEvent

    return list(AuditEvent.objects.filter(event_type="config.insecure_override").order_by("id").values("details"))


@pytest.mark.django_db
def test_the_override_is_recorded_when_set_and_when_withdrawn_never_twice(production_debug):
    from apps.audit.platform import audit_override

    assert audit_override() is not None
    assert audit_override() is None  # another process starting with the same override
    production_debug.DEBUG = False  # still named, no longer in effect: the override is withdrawn
    assert audit_override() is not None
    assert audit_override() is None

    assert [(e["details"]["previous"], e["details"]["in_effect"]) for e in _override_events()] == [
        ([], ["debug"]),
        (["debug"], []),
    ]


@pytest.mark.django_db(transaction=True)
def test_processes_starting_together_record_the_override_once(production_debug):
    """Gunicorn workers and Celery children connect at the same moment: the PostgreSQL advisory lock
    makes one of them record the change and the others see it."""
    import threading

    from django.db import connection

    from apps.audit.platform import audit_override

    start = threading.Barrier(6)
    errors = []

    def worker():
        try:
            start.wait()
            audit_override()
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert not errors
    assert len(_override_events()) == 1
