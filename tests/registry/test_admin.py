"""The Django admin: the upload form calls the service, every changelist renders, secrets stay hidden."""

from __future__ import annotations

import base64
import hashlib

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.audit.models import AuditEvent
from apps.registry.models import Artifact, Model, ModelVersion
from tests.conftest import otp_login
from tests.factories import DeploymentFactory, ModelVersionFactory, token_for

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "/admin/registry/model/",
    "/admin/registry/modelversion/",
    "/admin/registry/artifact/",
    "/admin/deployments/inferenceserver/",
    "/admin/deployments/deployment/",
    "/admin/audit/auditevent/",
    "/admin/accounts/apitoken/",
]


@pytest.fixture
def admin_browser(admin_user) -> Client:
    client = Client()
    otp_login(client, admin_user)
    return client


@pytest.fixture
def populated(admin_user):
    """One row in every admin table, so each changelist renders its columns for real data."""
    dep = DeploymentFactory(model_version__actor=admin_user)
    token_for(admin_user, name="admin-cli")
    return dep


class TestUploadForm:
    def test_add_form_registers_an_encrypted_version(self, admin_browser, admin_user, onnx_bytes):
        resp = admin_browser.post(
            "/admin/registry/modelversion/add/",
            {
                "model_name": "triage",
                "upload": SimpleUploadedFile("triage.onnx", onnx_bytes),
                "version_number": "3",
                "description": "from the admin",
            },
        )

        assert resp.status_code == 302, resp.content.decode()[:2000]
        mv = ModelVersion.objects.select_related("model", "artifact").get()
        assert (mv.model.name, mv.version, mv.model.description) == ("triage", 3, "from the admin")
        assert mv.sha256 == hashlib.sha256(onnx_bytes).hexdigest()
        assert mv.artifact.suite == "AES-256-GCM"
        event = AuditEvent.objects.get(event_type="registry.version.create")
        assert event.actor == admin_user
        assert LogEntry.objects.get(object_id=str(mv.pk)).object_repr == "triage v3"

    def test_add_form_shows_the_refusal_and_saves_nothing(self, admin_browser, admin_user):
        resp = admin_browser.post(
            "/admin/registry/modelversion/add/",
            {"model_name": "triage", "upload": SimpleUploadedFile("x.onnx", b"not a model at all"), "description": ""},
            follow=True,
        )

        assert resp.status_code == 200
        assert "not_onnx" in resp.content.decode()
        assert not Model.objects.exists()
        assert AuditEvent.objects.get(event_type="registry.version.rejected").actor == admin_user

    def test_add_form_renders(self, admin_browser):
        resp = admin_browser.get("/admin/registry/modelversion/add/")

        assert resp.status_code == 200
        for field in ("model_name", "upload", "version_number", "description"):
            assert f'name="{field}"' in resp.content.decode()


class TestChangelists:
    @pytest.mark.parametrize("path", CHANGELISTS)
    def test_changelist_renders_for_superuser(self, admin_browser, populated, path):
        resp = admin_browser.get(path)

        assert resp.status_code == 200

    @pytest.mark.parametrize("path", CHANGELISTS)
    def test_changelist_refused_to_non_staff(self, plain_user, path):
        client = Client()
        client.force_login(plain_user)

        resp = client.get(path)

        assert resp.status_code == 302
        assert resp["Location"].startswith("/admin/login/")

    def test_model_version_detail_renders(self, admin_browser, populated):
        resp = admin_browser.get(f"/admin/registry/modelversion/{populated.model_version_id}/change/")

        assert resp.status_code == 200
        assert populated.model_version.sha256 in resp.content.decode()


class TestArtifactAdminHidesTheWrappedKey:
    def test_wrapped_key_never_rendered(self, admin_browser, admin_user):
        mv = ModelVersionFactory(actor=admin_user)
        art = Artifact.objects.get(version=mv)
        wrapped = bytes(art.data_key.wrapped)
        forms = {wrapped.hex(), base64.b64encode(wrapped).decode(), repr(wrapped)[2:-1]}

        for path in (
            "/admin/registry/artifact/",
            f"/admin/registry/artifact/{art.pk}/change/",
            "/admin/keys/datakey/",
            f"/admin/keys/datakey/{art.data_key_id}/change/",
        ):
            resp = admin_browser.get(path)
            assert resp.status_code == 200
            page = resp.content.decode()
            assert art.kek_id in page
            assert "wrapped_dek" not in page and f"{mv.model.name} v{mv.version}" in page
            for form in forms:
                assert form not in page, f"{path} shows the wrapped data key"


def test_artifact_pages_name_their_columns_in_the_page_language(admin_browser, admin_user):
    """nu18's first `make run`: the Chinese artifact list and page read "Suite", "Kek id", "Shredded at: None"
    (model properties, so no verbose name)."""
    art = Artifact.objects.get(version=ModelVersionFactory(actor=admin_user))

    for path in ("/admin/registry/artifact/", f"/admin/registry/artifact/{art.pk}/change/"):
        page = admin_browser.get(path, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

        assert "算法套件" in page and "KEK ID" in page and "销毁时间" in page, path
        for english in ("Suite", "Kek id", "Shredded at", "None"):
            assert english not in page, (path, english)


class TestIssue17ModelPages:
    """Issue 17: a refused upload keeps the form and says why in plain words; the model page shows
    its versions, what is live with which servers, grants, usage and history."""

    def test_a_refused_upload_keeps_the_form_and_says_why_plainly(self, admin_browser, admin_user):
        resp = admin_browser.post(
            "/admin/registry/modelversion/add/",
            {"model_name": "triage", "upload": SimpleUploadedFile("x.onnx", b"not a model at all"), "description": "d"},
        )

        assert resp.status_code == 200  # the form again, not a redirect to the list
        page = resp.content.decode()
        assert 'value="triage"' in page and "d</textarea>" in page
        assert "This file is not an ONNX model, or it is damaged" in page
        assert "ModelProto" not in page  # not the protobuf parser's words
        assert resp.context["adminform"].form.errors["upload"]  # on the file's field
        assert not Model.objects.exists()
        assert AuditEvent.objects.get(event_type="registry.version.rejected").error_code == "not_onnx"

    def test_the_model_page_shows_versions_live_replicas_grants_usage_and_history(self, admin_browser, admin_user):
        from apps.accounts.services import grant_model_access
        from apps.gateway.models import LLMUsage
        from tests.conftest import make_user

        dep = DeploymentFactory(model_version__actor=admin_user, server__state="down", server__last_error="refused")
        model = dep.model
        reader = make_user("reader")
        grant_model_access(model_id=model.pk, permission="view_model", user_id=reader.pk, actor=admin_user)
        LLMUsage.objects.create(
            request_id="r1", model=model, model_name=model.name, prompt_tokens=11, completion_tokens=5
        )

        resp = admin_browser.get(f"/admin/registry/model/{model.pk}/change/")

        page = resp.content.decode()
        assert resp.status_code == 200
        assert 'id="live-versions"' in page and f"{dep.model_version}</a>" in page
        assert f"/admin/deployments/deployment/{dep.pk}/change/" in page
        assert "sv-badge sv-badge--down" in page and "refused" in page  # the server's state, with why
        assert f"/admin/auth/user/{reader.pk}/change/" in page and "view the model" in page  # the grant in words
        usage = page[page.index('id="model-usage"') :]
        assert "<td>1</td>" in usage and "<td>11</td>" in usage and "<td>5</td>" in usage
        history = page[page.index('id="model-history"') :]
        assert "registry.version.create" in history
        read = AuditEvent.objects.get(event_type="audit.search", actor=admin_user)  # showing it is a read of the log
        assert read.details["model"] == model.pk

    def test_the_history_is_only_for_who_may_read_the_audit_log(self, admin_user):
        from apps.accounts.roles import ADMIN, AUDITOR
        from tests.conftest import make_user

        mv = ModelVersionFactory(actor=admin_user)
        seen = {}
        for role in (ADMIN, AUDITOR):
            client = Client()
            otp_login(client, make_user(f"someone-{role}", role))
            resp = client.get(f"/admin/registry/model/{mv.model_id}/change/")
            assert resp.status_code == 200
            seen[role] = 'id="model-history"' in resp.content.decode()

        assert seen == {ADMIN: False, AUDITOR: True}
