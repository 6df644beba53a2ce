"""Real components for integration tests: a Celery worker process on Redis and a Triton host on the
HSM, sharing this session's data directory (the dev KEK and the encrypted artifacts) and the
pytest-django test database. The plain tritonserver (`triton`) is in tests/conftest.py, for the
gateway's integration tests too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from apps.keys.providers import get_kek_provider
from inference_backend.pkcs11_kek import create_kek
from inference_backend.server import LocalTritonServer, free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
KEY_LABEL = "sovereign-kek-v1"


def _database_url(settings_dict: dict) -> str:
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, data_dir, tmp_path_factory):
    """A real `celery worker` process consuming from Redis, on the test database."""
    from django.db import connection

    redis_url = os.environ.get("REDIS_URL")
    if not redis_url or connection.vendor != "postgresql":
        pytest.fail("integration tests need REDIS_URL and a PostgreSQL DATABASE_URL (use `make test`)")
    redis.Redis.from_url(redis_url).flushdb()  # no stale tasks from an earlier run
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connection.settings_dict),
        "REDIS_URL": redis_url,
        "SOVEREIGN_DATA_DIR": str(data_dir),
        "SOVEREIGN_ARTIFACT_DIR": str(data_dir / "artifacts"),
        "SOVEREIGN_LOCAL_KEK_FILE": str(data_dir / "keystore" / "kek.bin"),
        "SOVEREIGN_DEPLOY_MAX_RETRIES": "1",
        "SOVEREIGN_DEPLOY_RETRY_BASE_SECONDS": "0.2",
        "SOVEREIGN_DB_CONN_MAX_AGE": "0",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "2",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: proc.poll() is not None or b"ready." in log.read_bytes(), 60, what="the Celery worker")
        if proc.poll() is not None:
            pytest.fail(f"the Celery worker exited:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def hsm_triton(softhsm_token, tmp_path_factory):
    """A Triton host whose python backend reaches the HSM (its own settings, PIN from a file)."""
    create_kek(softhsm_token.module, softhsm_token.token_label, softhsm_token.pin, KEY_LABEL)
    server = LocalTritonServer(
        tmp_path_factory.mktemp("triton-hsm"),
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        extra_env={
            "SOFTHSM2_CONF": str(softhsm_token.conf),
            "SOVEREIGN_KEK_PROVIDER": "pkcs11",
            "SOVEREIGN_PKCS11_MODULE": softhsm_token.module,
            "SOVEREIGN_PKCS11_TOKEN": softhsm_token.token_label,
            "SOVEREIGN_PKCS11_PIN_FILE": str(softhsm_token.pin_file),
            "SOVEREIGN_PKCS11_KEY_LABEL": KEY_LABEL,
        },
    )
    server.start(timeout=180)
    yield server
    server.stop()


@pytest.fixture
def portal_uses_hsm(settings, softhsm_token, tmp_path):
    settings.KEK_PROVIDER = "pkcs11"
    # Its own pseudonymisation key: the session's was wrapped by the local keystore's KEK.
    settings.PSEUDONYM_KEY_FILE = str(tmp_path / "pseudonym-key.json")
    settings.PKCS11 = {
        "MODULE": softhsm_token.module,
        "TOKEN": softhsm_token.token_label,
        "PIN_FILE": str(softhsm_token.pin_file),
        "KEY_LABEL": KEY_LABEL,
    }
    get_kek_provider.cache_clear()
    yield
    get_kek_provider.cache_clear()
