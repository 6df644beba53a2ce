"""Shared fixtures. One data directory (artifacts + dev KEK) per test session, shared with the
Triton server and Celery worker that integration tests start, because they are "this host"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from apps.accounts.otp import OTP_AT
from apps.accounts.roles import ADMIN, ANALYST, AUDITOR, GUEST, PRIVILEGED, SECURITY_OFFICER
from apps.accounts.services import grant_model_access, issue_token
from apps.audit.signing import get_signer
from apps.keys.providers import get_kek_provider
from inference_backend.demo_model import build_test_onnx
from tests.llm_models import smollm2_decoder, smollm2_files, smollm2_gguf  # noqa: F401 - fixtures for every test dir
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
# The test worker's own queue: only tests that ask for `celery_worker` send there. Every other test's
# tasks (a deploy's reconcile queued on commit, say) go to the default queue, which nobody consumes —
# else the session's worker would run them against the test database while pytest-django truncates
# it after a transactional test (a deadlock, seen in CI).
WORKER_QUEUE = "sovereign-test-worker"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sovereign-data")
    (path / "artifacts").mkdir(mode=0o700)
    return path


def start_local_triton(data_dir, folder, **options):
    """A real tritonserver (from the nvidia-pytriton wheel) on free ports whose python backend unwraps
    with this session's dev KEK; `options` go to LocalTritonServer (e.g. a credential). Started."""
    from inference_backend.server import LocalTritonServer, free_port

    server = LocalTritonServer(
        folder,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        extra_env={
            "SOVEREIGN_KEK_PROVIDER": "local",
            "SOVEREIGN_LOCAL_KEK_FILE": str(data_dir / "keystore" / "kek.bin"),
        },
        **options,
    )
    server.start(timeout=180)
    return server


@pytest.fixture(scope="session")
def triton(data_dir, tmp_path_factory):
    """A real tritonserver for integration tests, shared by the session."""
    server = start_local_triton(data_dir, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_b(data_dir, tmp_path_factory):
    """A second real tritonserver, shared by the session: the fleet's tests (replica sets across
    servers, rollouts, the autoscaler, the split across data-plane processes) need two. Tests that
    kill or restrict a server start their own with start_local_triton."""
    server = start_local_triton(data_dir, tmp_path_factory.mktemp("triton-b"))
    yield server
    server.stop()


@pytest.fixture
def dataplane(live_server):
    """The data plane (apps/gateway/dataplane) serving on a free port in a background thread, on
    the live server's committed database: what tritonclient talks to in end-to-end tests."""
    from apps.gateway.dataplane.server import ServerThread

    server = ServerThread().start()
    yield server
    server.stop()


def _database_url(settings_dict: dict) -> str:
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def _celery_worker_process(django_db_setup, data_dir, tmp_path_factory):
    """A real `celery worker` process consuming WORKER_QUEUE from Redis, on the test database; one per
    session, started by the first test that asks for `celery_worker`."""
    from django.db import connection

    redis_url = os.environ.get("REDIS_URL")
    if not redis_url or connection.vendor != "postgresql":
        pytest.fail("the Celery worker needs REDIS_URL and a PostgreSQL DATABASE_URL (use `make test`)")
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
    command = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--queues", WORKER_QUEUE]
    command += ["--pool", "threads", "--concurrency", "2", "--loglevel", "INFO"]
    command += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
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


@pytest.fixture
def celery_worker(_celery_worker_process):
    """The session's real Celery worker, receiving this test's tasks (sent to WORKER_QUEUE while it lasts)."""
    from portal.celery import app

    default = app.conf.task_default_queue
    app.conf.task_default_queue = WORKER_QUEUE
    try:
        yield _celery_worker_process
    finally:
        app.conf.task_default_queue = default


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory):
    """One SoftHSM2 token per test session: the library reads SOFTHSM2_CONF once per process."""
    from tests.inference_backend.softhsm import SoftHsmMissing, init_token

    try:
        return init_token(tmp_path_factory.mktemp("softhsm"))
    except SoftHsmMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2 costs ~0.2 s per user; tests about passwords themselves override this."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_storage(settings, data_dir):
    settings.ARTIFACT_DIR = data_dir / "artifacts"
    settings.LOCAL_KEK_FILE = str(data_dir / "keystore" / "kek.bin")
    settings.AUDIT_SIGNING_KEY_FILE = str(data_dir / "keystore" / "audit-signing.pem")
    settings.AUDIT_SM2_SIGNING_KEY_FILE = str(data_dir / "keystore" / "audit-signing-sm2.json")
    settings.AUDIT_ARCHIVE_DIR = data_dir / "audit-archive"
    settings.PSEUDONYM_KEY_FILE = str(data_dir / "keystore" / "pseudonym-key.json")
    get_kek_provider.cache_clear()
    get_signer.cache_clear()
    yield
    get_kek_provider.cache_clear()
    get_signer.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Rate-limit buckets and collapsed-refusal counters live in Redis (or the process), outside
    the test's rolled-back transaction: start every test with none."""
    from apps.audit.refusals import counter
    from apps.core.throttling import limiter

    limiter().reset()
    counter().reset()
    _forget_quota_counters()


def _forget_quota_counters() -> None:
    """Token-quota windows live in Redis keyed by the quota's id, and a test database numbers its
    quotas from 1 again in every session: start every test with no counts."""
    from django.conf import settings

    from apps.gateway.quota import PREFIX

    if not settings.REDIS_URL:
        return
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=PREFIX + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def onnx_bytes() -> bytes:
    return build_test_onnx(4, 3, seed=7)


def make_user(username: str, role: str | None = None, **extra):
    """A user holding `role` (a group created by the roles data migration)."""
    user = get_user_model().objects.create_user(
        username, f"{username}@example.org", "correct-horse-battery-9", is_staff=role in PRIVILEGED, **extra
    )
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def otp_login(client, user) -> None:
    """Log `client` in with a session that has passed the second factor (a confirmed TOTP device)."""
    device, _ = TOTPDevice.objects.get_or_create(user=user, name="test", defaults={"confirmed": True})
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session[OTP_AT] = timezone.now().timestamp()  # as apps.accounts.otp.verified records it
    session.save()


def session_client(user) -> APIClient:
    """An API client with a logged-in session, the way a person issues tokens (privileged people:
    second factor passed just now)."""
    client = APIClient()
    if user.is_superuser or user.groups.filter(name__in=PRIVILEGED).exists():
        otp_login(client, user)
    else:
        client.force_login(user)
    return client


def grant(user, model, permission: str = "invoke_model", expires_at=None) -> None:
    grant_model_access(model_id=model.pk, permission=permission, user_id=user.pk, expires_at=expires_at, actor=None)


@pytest.fixture
def admin_user(db):
    """The installer's superuser (break-glass account): privileged, so sessions need 2FA."""
    return get_user_model().objects.create_superuser("root", "root@example.org", "correct-horse-battery-9")


@pytest.fixture
def staff_user(db):
    """Holds the admin role: registry, servers, deployments, users."""
    return make_user("ops", ADMIN)


@pytest.fixture
def plain_user(db):
    """An analyst with no grants yet."""
    return make_user("alice", ANALYST)


@pytest.fixture
def auditor_user(db):
    return make_user("audrey", AUDITOR)


@pytest.fixture
def officer_user(db):
    return make_user("sofia", SECURITY_OFFICER)


@pytest.fixture
def guest_user(db):
    return make_user("gus", GUEST)


def _client_for(user, scopes=("invoke", "read", "manage")) -> tuple[APIClient, str]:
    # As if the person had just passed the second factor (privileged accounts need it to issue).
    _, token = issue_token(user=user, name="test", scopes=scopes, actor=user, otp_verified_at=timezone.now())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client, token


@pytest.fixture
def staff_client(staff_user):
    return _client_for(staff_user)[0]


@pytest.fixture
def user_client(plain_user):
    return _client_for(plain_user)[0]


@pytest.fixture
def admin_client_api(admin_user):
    return _client_for(admin_user)[0]


@pytest.fixture
def auditor_client(auditor_user):
    return _client_for(auditor_user)[0]


@pytest.fixture
def officer_client(officer_user):
    return _client_for(officer_user)[0]


@pytest.fixture
def guest_client(guest_user):
    return _client_for(guest_user)[0]


@pytest.fixture
def anon_client():
    return APIClient()


# Portal sessions (privileged ones past the second factor): the way accounts are changed. A token,
# whatever its scopes, makes no accounts write (tests/security/test_token_accounts_writes.py).


@pytest.fixture
def staff_session(staff_user):
    return session_client(staff_user)


@pytest.fixture
def user_session(plain_user):
    return session_client(plain_user)


@pytest.fixture
def auditor_session(auditor_user):
    return session_client(auditor_user)


@pytest.fixture
def officer_session(officer_user):
    return session_client(officer_user)


@pytest.fixture
def guest_session(guest_user):
    return session_client(guest_user)
