"""Signed compliance reports: the PDF renders with every control id (read back with pdftotext),
Chinese text survives, signatures verify and any change breaks them; bad periods are refused."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.compliance import services
from apps.compliance.catalog import get_profile
from apps.compliance.evaluation import run_evaluation
from apps.compliance.models import ComplianceReport
from apps.compliance.reports.generate import generate_report
from apps.compliance.storage import directory
from apps.core.errors import ServiceError

pytestmark = pytest.mark.django_db


def pdftotext(path: Path) -> str:
    exe = shutil.which("pdftotext")
    if exe is None:
        pytest.fail("pdftotext is missing: `make system-deps` installs poppler-utils")
    text = subprocess.run([exe, "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return " ".join(text.split())


def make_report(profile: str, actor=None, django_capture_on_commit_callbacks=None, **options) -> ComplianceReport:
    services.attach_profile(profile=profile, options=options, actor=None)
    run_evaluation()
    seal_pending(checkpoint=True)
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=False):
        report = services.request_report(
            profile=profile, period_start=now - timedelta(hours=1), period_end=now + timedelta(hours=1), actor=actor
        )
    done = generate_report(report.pk, actor=actor)
    assert done.state == "done", done.error
    return done


def path_of(report: ComplianceReport, fmt: str) -> Path:
    return directory("reports") / report.files[fmt]


@pytest.fixture
def hipaa_report(auditor_user, django_capture_on_commit_callbacks):
    return make_report("hipaa", auditor_user, django_capture_on_commit_callbacks)


def test_pdf_shows_every_control_and_the_inventories(hipaa_report):
    text = pdftotext(path_of(hipaa_report, "pdf"))
    for control in get_profile("hipaa").controls:
        assert control.id in text, control.id
    for heading in ("Summary by control family", "Users and roles", "Keys (no key material)", "Checkpoint heads"):
        assert heading in text
    assert "audrey" in text and "auditor" in text  # the user inventory
    assert hipaa_report.progress == 100
    assert (path_of(hipaa_report, "pdf").stat().st_mode & 0o777) == 0o600
    event = AuditEvent.objects.get(event_type="compliance.report.generate", target_id=str(hipaa_report.pk))
    assert event.actor_name == "audrey" and event.details["key_id"] == hipaa_report.key_id


def test_signature_verifies_and_one_changed_byte_does_not(hipaa_report, tmp_path, capsys):
    pdf, sig = path_of(hipaa_report, "pdf"), path_of(hipaa_report, "pdf.sig")
    call_command("verify_report", str(pdf), str(sig))
    assert f"signed by key {hipaa_report.key_id}" in capsys.readouterr().out

    data = bytearray(pdf.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="report altered"):
        call_command("verify_report", str(tampered), str(sig))


def test_tampered_or_foreign_signature_is_refused(hipaa_report, tmp_path):
    pdf, sig = path_of(hipaa_report, "pdf"), path_of(hipaa_report, "pdf.sig")
    forged = json.loads(sig.read_text())
    forged["statement"]["sha256"] = "0" * 64
    (tmp_path / "forged.sig").write_text(json.dumps(forged))
    with pytest.raises(CommandError, match="signature file altered"):
        call_command("verify_report", str(pdf), str(tmp_path / "forged.sig"))

    unknown = json.loads(sig.read_text())
    unknown["statement"]["key_id"] = "f" * 16
    (tmp_path / "unknown.sig").write_text(json.dumps(unknown))
    with pytest.raises(CommandError, match="not a trusted key"):
        call_command("verify_report", str(pdf), str(tmp_path / "unknown.sig"))

    (tmp_path / "garbage.sig").write_text("not json")
    with pytest.raises(CommandError, match="NOT VERIFIED"):
        call_command("verify_report", str(pdf), str(tmp_path / "garbage.sig"))
    with pytest.raises(CommandError, match="report altered"):  # the CSV's signature does not fit the PDF
        call_command("verify_report", str(pdf), str(path_of(hipaa_report, "csv.sig")))


def test_csv_and_json_carry_the_same_controls_and_are_signed(hipaa_report):
    rows = list(csv.DictReader(io.StringIO(path_of(hipaa_report, "csv").read_text(encoding="utf-8-sig"))))
    ids = [c.id for c in get_profile("hipaa").controls]
    assert [r["id"] for r in rows] == ids
    assert all(r["status"] in ("pass", "fail", "manual", "not_applicable") for r in rows)
    data = json.loads(path_of(hipaa_report, "json").read_text())
    assert [c["id"] for c in data["controls"]] == ids
    assert data["audit"]["checkpoints"] and "verification" in data["audit"]
    assert all("material" not in json.dumps(k) and "wrapped" not in json.dumps(k) for k in data["inventory"]["keys"])
    for fmt in ("csv", "json"):
        call_command("verify_report", str(path_of(hipaa_report, fmt)), str(path_of(hipaa_report, f"{fmt}.sig")))


def test_dengbao_report_is_in_chinese_by_default(auditor_user, django_capture_on_commit_callbacks):
    report = make_report("dengbao-l3", auditor_user, django_capture_on_commit_callbacks)
    assert report.language == "zh-hans"
    text = pdftotext(path_of(report, "pdf"))
    assert "合规报告" in text and "按控制类别汇总" in text
    assert "身份鉴别" in text and "安全审计" in text  # control families from the catalogue
    for control in get_profile("dengbao-l3").controls_for({}):
        assert control.id in text, control.id
    assert "GB/T 39786 8.4 h" not in text  # the 国密 option is off


def test_empty_or_inverted_period_is_refused():
    now = timezone.now()
    with pytest.raises(ServiceError) as err:
        services.request_report(
            profile="hipaa", period_start=now - timedelta(days=2), period_end=now - timedelta(days=1), actor=None
        )
    assert err.value.code == "empty_period"
    with pytest.raises(ServiceError) as err:
        services.request_report(profile="hipaa", period_start=now, period_end=now - timedelta(days=1), actor=None)
    assert err.value.code == "invalid_period"
    with pytest.raises(ServiceError) as err:
        services.request_report(profile="nope", period_start=now - timedelta(days=1), period_end=now, actor=None)
    assert err.value.code == "unknown_profile"


def test_api_download_is_audited_and_limited_to_auditors_and_officers(
    hipaa_report, auditor_client, officer_client, staff_client, user_client
):
    url = f"/api/v1/compliance/reports/{hipaa_report.pk}/download/"
    response = auditor_client.get(url, {"file_format": "pdf"})
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    event = AuditEvent.objects.filter(event_type="compliance.report.download").latest("id")
    assert event.actor_name == "audrey" and event.details["format"] == "pdf"
    assert officer_client.get(url, {"file_format": "json.sig"}).status_code == 200
    assert staff_client.get(url).status_code == 403
    assert user_client.get(url).status_code == 403
    assert auditor_client.get(url, {"file_format": "exe"}).json()["code"] == "invalid_format"


def test_api_report_request_and_bad_input(auditor_client, django_capture_on_commit_callbacks):
    services.attach_profile(profile="hipaa", actor=None)
    run_evaluation()
    now = timezone.now()
    body = {"profile": "hipaa", "period_start": (now - timedelta(hours=1)).isoformat(), "period_end": now.isoformat()}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auditor_client.post("/api/v1/compliance/reports/", body, format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["state"] == "queued" and len(callbacks) == 1
    old = {
        **body,
        "period_start": (now - timedelta(days=9)).isoformat(),
        "period_end": (now - timedelta(days=8)).isoformat(),
    }
    assert auditor_client.post("/api/v1/compliance/reports/", old, format="json").json()["code"] == "empty_period"
