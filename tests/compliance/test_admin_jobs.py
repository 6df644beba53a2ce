"""Compliance jobs in the admin (issue 17): the officer attaches and detaches a profile and evaluates
now, the auditor watches; a finished report's files download (audited) for whom may export reports,
and its page says which provider really signs and wraps. Each write goes through the audited service."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from apps.audit.models import AuditEvent
from apps.compliance.models import EvaluationRun, ProfileAttachment
from apps.compliance.services import attach_profile
from tests.compliance.test_reports import make_report
from tests.conftest import make_user, otp_login
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db
ATTACHMENTS = "/admin/compliance/profileattachment/"
EVALUATE = "/admin/compliance/controlresult/evaluate/"


def _client(user) -> Client:
    client = Client()
    otp_login(client, user)
    return client


def test_officer_attaches_a_profile_to_a_model_and_detaches_it(officer_user, staff_user):
    model = ModelVersionFactory(model_name="triage", actor=staff_user).model
    client = _client(officer_user)
    form = client.get(f"{ATTACHMENTS}add/?model={model.pk}")
    assert form.status_code == 200 and f'value="{model.pk}" selected' in form.content.decode()

    response = client.post(f"{ATTACHMENTS}add/", {"attach_profile": "hipaa", "attach_model": model.pk})

    assert response.status_code == 302, response.content[:3000]
    attachment = ProfileAttachment.objects.get(profile="hipaa", model=model)
    event = AuditEvent.objects.get(event_type="compliance.profile.attach")
    assert (event.actor_id, event.target_id, event.details["model"]) == (officer_user.pk, str(attachment.pk), "triage")

    again = client.post(f"{ATTACHMENTS}add/", {"attach_profile": "hipaa", "attach_model": model.pk}, follow=True)
    assert b"profile_attached" in again.content and ProfileAttachment.objects.count() == 1

    section = client.get(f"/admin/registry/model/{model.pk}/change/").content.decode()
    assert f"{ATTACHMENTS}{attachment.pk}/delete/" in section and f"{ATTACHMENTS}add/?model={model.pk}" in section
    gone = client.post(f"{ATTACHMENTS}{attachment.pk}/delete/", {"post": "yes"})
    assert gone.status_code == 302 and gone["Location"] == ATTACHMENTS and not ProfileAttachment.objects.exists()
    detach = AuditEvent.objects.get(event_type="compliance.profile.detach")
    assert (detach.actor_id, detach.target_id) == (officer_user.pk, str(attachment.pk))


def test_auditor_and_admin_cannot_attach_or_detach(auditor_user, staff_user):
    attachment = attach_profile(profile="hipaa", actor=None)
    auditor = _client(auditor_user)
    assert auditor.get(ATTACHMENTS).status_code == 200
    assert auditor.get(f"{ATTACHMENTS}add/").status_code == 403
    assert auditor.post(f"{ATTACHMENTS}add/", {"attach_profile": "dengbao-l3"}).status_code == 403
    assert auditor.post(f"{ATTACHMENTS}{attachment.pk}/delete/", {"post": "yes"}).status_code == 403
    assert _client(staff_user).get(ATTACHMENTS).status_code == 403
    assert list(ProfileAttachment.objects.all()) == [attachment]


def test_evaluate_now_runs_the_service_and_shows_the_runs_results(officer_user, auditor_user):
    attach_profile(profile="hipaa", actor=None)
    client = _client(officer_user)
    assert b"Evaluate now" in client.get("/admin/compliance/controlresult/").content

    response = client.post(EVALUATE, follow=True)

    run = EvaluationRun.objects.get()
    assert response.redirect_chain[-1][0].endswith(f"?run__id__exact={run.pk}")
    page = response.content.decode()
    assert f"Evaluation #{run.pk}" in page and f"{run.passed} passed" in page
    assert AuditEvent.objects.filter(event_type="compliance.evaluate", actor_id=officer_user.pk).count() == 1
    auditor = _client(auditor_user)
    assert b"Evaluate now" not in auditor.get("/admin/compliance/controlresult/").content
    assert auditor.post(EVALUATE).status_code == 403
    assert EvaluationRun.objects.count() == 1


def test_report_files_download_audited_and_the_page_names_the_signer(
    auditor_user, officer_user, staff_user, django_capture_on_commit_callbacks
):
    report = make_report("hipaa", auditor_user, django_capture_on_commit_callbacks)
    client = _client(officer_user)
    page = client.get(f"/admin/compliance/compliancereport/{report.pk}/change/").content.decode()
    url = f"/admin/compliance/compliancereport/{report.pk}/download/"
    for fmt in ("pdf", "json", "pdf.sig"):
        assert f"{url}?file_format={fmt}" in page
    assert "local key file" in page and "not an HSM" in page  # the dev install signs with a file

    response = client.get(f"{url}?file_format=pdf")

    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    event = AuditEvent.objects.filter(event_type="compliance.report.download").latest("id")
    assert (event.actor_id, event.details["format"]) == (officer_user.pk, "pdf")
    assert client.post(f"{url}?file_format=pdf").status_code == 405
    assert _client(staff_user).get(f"{url}?file_format=pdf").status_code == 403
    downloads = AuditEvent.objects.filter(event_type="compliance.report.download").count()
    missing = client.get(f"{url}?file_format=exe")
    assert missing.status_code == 302
    assert AuditEvent.objects.filter(event_type="compliance.report.download").count() == downloads


def test_a_person_without_export_sees_no_links(auditor_user, django_capture_on_commit_callbacks):
    report = make_report("hipaa", auditor_user, django_capture_on_commit_callbacks)
    viewer = make_user("viewer")
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_compliancereport"))
    page = _client(viewer).get(f"/admin/compliance/compliancereport/{report.pk}/change/")
    assert page.status_code == 200 and b"/download/" not in page.content
