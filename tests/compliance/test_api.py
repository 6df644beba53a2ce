"""The compliance API: attach and detach (with clear refusals), model policies, evaluation and
its history, attestation upload (file stored 0600)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.compliance.models import Attestation
from apps.compliance.storage import directory
from tests.factories import InferenceServerFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db
BASE = "/api/v1/compliance"


def test_profiles_list_the_catalogue(auditor_client):
    profiles = {p["id"]: p for p in auditor_client.get(f"{BASE}/profiles/").json()}
    assert set(profiles) == {"hipaa", "dengbao-l3"}
    assert profiles["dengbao-l3"]["options"]["guomi"]["zh"].startswith("商用密码")
    assert all(c["checks"] for c in profiles["hipaa"]["controls"])


def test_attach_detach_and_refusals(officer_client, auditor_client, settings):
    settings.ARTIFACT_SUITE = "AES-256-GCM"
    response = officer_client.post(f"{BASE}/attachments/", {"profile": "hipaa"}, format="json")
    assert response.status_code == 201 and response.json()["model"] is None
    assert officer_client.post(f"{BASE}/attachments/", {"profile": "hipaa"}, format="json").json()["code"] == (
        "profile_attached"
    )
    body = officer_client.post(f"{BASE}/attachments/", {"profile": "x"}, format="json").json()
    assert body["code"] == "unknown_profile" and body["field"] == "profile"
    refused = officer_client.post(
        f"{BASE}/attachments/", {"profile": "dengbao-l3", "options": {"guomi": True}}, format="json"
    )
    assert refused.status_code == 409 and "GB/T 39786 8.4 e" in refused.json()["detail"]
    assert auditor_client.post(f"{BASE}/attachments/", {"profile": "hipaa"}, format="json").status_code == 403

    pk = response.json()["id"]
    assert officer_client.delete(f"{BASE}/attachments/{pk}/").status_code == 204
    types = list(AuditEvent.objects.filter(event_group="compliance").values_list("event_type", flat=True))
    assert "compliance.profile.attach" in types and "compliance.profile.detach" in types


def test_model_policy_and_evaluate(officer_client, auditor_client, triton):
    model = ModelVersionFactory(model_name="triage").model
    officer_client.post(f"{BASE}/attachments/", {"profile": "hipaa", "model": model.name}, format="json")
    off = officer_client.post(f"{BASE}/model-policies/", {"model": "triage", "deid_mode": "off"}, format="json")
    assert off.status_code == 400 and off.json()["code"] == "deid_required"

    run = officer_client.post(f"{BASE}/evaluate/").json()
    results = auditor_client.get(f"{BASE}/results/", {"run": run["id"], "control_id": "164.514(b)(2)"}).json()
    assert results["results"][0]["status"] == "fail"  # no server to probe de-identification on
    assert "no_inference_server" in results["results"][0]["evidence"][0]["not_probed"]["triage"]
    InferenceServerFactory(http_url=triton.http_url)

    ok = officer_client.post(
        f"{BASE}/model-policies/", {"model": "triage", "phi": True, "deid_mode": "redact"}, format="json"
    )
    assert ok.status_code == 200 and ok.json()["deid_mode"] == "redact"
    run = officer_client.post(f"{BASE}/evaluate/").json()
    results = auditor_client.get(f"{BASE}/results/", {"run": run["id"], "control_id": "164.514(b)(2)"}).json()
    [probe, numeric] = results["results"][0]["evidence"]
    assert (probe["status"], numeric["status"]) == ("pass", "fail")  # triage's FP32 input is undeclared
    assert numeric["numeric_undeclared"] == {"triage": ["INPUT (FP32)"]}

    reason = {"numeric_inputs_reason": "four lab values, no identifiers"}
    body = {"model": "triage", "phi": True, "deid_mode": "redact", **reason}
    assert officer_client.post(f"{BASE}/model-policies/", body, format="json").status_code == 200
    run = officer_client.post(f"{BASE}/evaluate/").json()
    results = auditor_client.get(f"{BASE}/results/", {"run": run["id"], "control_id": "164.514(b)(2)"}).json()
    assert results["results"][0]["status"] == "pass"
    assert auditor_client.get(f"{BASE}/runs/").json()["count"] == 3


def test_numeric_inputs_reason_is_set_kept_and_withdrawn_through_the_policy_api(officer_client, auditor_client):
    ModelVersionFactory(model_name="tok")
    url = f"{BASE}/model-policies/"
    body = {"model": "tok", "phi": True, "deid_mode": "redact", "numeric_inputs_reason": " ages in years, no ids "}
    assert officer_client.post(url, body, format="json").json()["numeric_inputs_reason"] == "ages in years, no ids"
    kept = officer_client.post(url, {"model": "tok", "phi": True, "deid_mode": "mask"}, format="json").json()
    assert kept["numeric_inputs_reason"] == "ages in years, no ids"  # omitted: unchanged
    too_long = officer_client.post(url, {**body, "numeric_inputs_reason": "x" * 2001}, format="json")
    assert (too_long.status_code, too_long.json()["code"]) == (400, "reason_too_long")
    withdrawn = officer_client.post(url, {**body, "numeric_inputs_reason": ""}, format="json").json()
    assert withdrawn["numeric_inputs_reason"] == ""
    assert auditor_client.post(url, body, format="json").status_code == 403


def test_attestation_upload_is_stored_private(officer_client):
    expires = (timezone.now() + timedelta(days=180)).isoformat()
    upload = SimpleUploadedFile("drill-2026.pdf", b"%PDF restore drill record", content_type="application/pdf")
    response = officer_client.post(
        f"{BASE}/attestations/",
        {"profile": "dengbao-l3", "control_id": "8.1.4.9", "expires_at": expires, "file": upload},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    att = Attestation.objects.get(pk=response.json()["id"])
    path = directory("attestations") / att.storage_name
    assert path.read_bytes() == b"%PDF restore drill record" and (path.stat().st_mode & 0o777) == 0o600

    automatic = SimpleUploadedFile("x.txt", b"x")
    body = officer_client.post(
        f"{BASE}/attestations/",
        {"profile": "dengbao-l3", "control_id": "8.1.4.1 b", "expires_at": expires, "file": automatic},
        format="multipart",
    ).json()
    assert body["code"] == "not_manual"
