"""Shared fixtures. One data directory (artifacts + dev KEK) per test session, shared with the
Triton server and Celery worker that integration tests start, because they are "this host"."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from apps.accounts.services import issue_token
from apps.keys.providers import get_kek_provider
from inference_backend.demo_model import build_test_onnx


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sovereign-data")
    (path / "artifacts").mkdir(mode=0o700)
    return path


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2 costs ~0.2 s per user; tests about passwords themselves override this."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_storage(settings, data_dir):
    settings.ARTIFACT_DIR = data_dir / "artifacts"
    settings.LOCAL_KEK_FILE = str(data_dir / "keystore" / "kek.bin")
    get_kek_provider.cache_clear()
    yield
    get_kek_provider.cache_clear()


@pytest.fixture
def onnx_bytes() -> bytes:
    return build_test_onnx(4, 3, seed=7)


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("root", "root@example.org", "correct-horse-battery-9")


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("ops", "ops@example.org", "correct-horse-battery-9", is_staff=True)


@pytest.fixture
def plain_user(db):
    return get_user_model().objects.create_user("alice", "alice@example.org", "correct-horse-battery-9")


def _client_for(user) -> tuple[APIClient, str]:
    _, token = issue_token(user=user, name="test", actor=user)
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
def anon_client():
    return APIClient()
