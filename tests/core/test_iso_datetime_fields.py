"""Date-times typed in the admin (issue 17): the report period, the audit export's bounds and a grant's
expiry are text boxes in ISO order (`YYYY-MM-DD HH:MM:SS`) with the format shown, whatever the
browser's locale (an `<input type=date|datetime-local>` showed "mm/dd/yyyy" on a Chinese page), and a
bad date is refused beside the field, in the page's language, with the format to use."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import ModelUserGrant
from apps.accounts.roles import ANALYST
from apps.compliance.models import ComplianceReport
from tests.conftest import make_user, otp_login
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db
BAD = {"en": "Enter the date and time as YYYY-MM-DD HH:MM:SS", "zh-hans": "请按 YYYY-MM-DD HH:MM:SS 输入日期和时间"}
LANGS = ("en", "zh-hans")


def client_for(user, lang) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=lang)
    otp_login(client, user)
    return client


def text_boxes(page: str, *names: str) -> dict[str, str]:
    """name -> the <input> of each field: a text box with the format as its placeholder."""
    found = {}
    for name in names:
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', page).group(0)
        assert 'type="text"' in tag and 'placeholder="YYYY-MM-DD HH:MM:SS"' in tag, tag
        found[name] = tag
    assert "datetime-local" not in page and 'type="date"' not in page
    return found


@pytest.mark.parametrize("lang", LANGS)
def test_the_report_period_is_iso_text_in_both_languages(auditor_user, lang):
    client = client_for(auditor_user, lang)
    page = client.get("/admin/compliance/compliancereport/add/").content.decode()

    boxes = text_boxes(page, "start", "end")
    # the proposed period in ISO order (zh_Hans' own input format would have been 2026/11/01 00:00)
    assert re.search(r'value="\d{4}-\d{2}-\d{2} 00:00:00"', boxes["start"]), boxes["start"]
    assert re.search(r'value="\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"', boxes["end"]), boxes["end"]

    bad = client.post(
        "/admin/compliance/compliancereport/add/",
        {"report_profile": "hipaa", "start": "11/01/2026", "end": "2026-11-30 08:00:00", "report_language": ""},
    )
    assert bad.status_code == 200 and BAD[lang] in bad.content.decode()
    assert 'value="11/01/2026"' in bad.content.decode()  # what was typed is kept
    assert not ComplianceReport.objects.exists()


@pytest.mark.parametrize("lang", LANGS)
def test_the_audit_export_bounds_are_iso_text(auditor_user, lang):
    client = client_for(auditor_user, lang)
    page = client.get("/admin/audit/auditevent/export/").content.decode()

    text_boxes(page, "since", "until")
    bad = client.post("/admin/audit/auditevent/export/", {"since": "2026-13-01", "file_format": "jsonl"})
    assert bad.status_code == 200 and BAD[lang] in bad.content.decode()

    since = timezone.localtime(timezone.now() - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    good = client.post("/admin/audit/auditevent/export/", {"since": since, "file_format": "jsonl"})
    assert good.status_code == 200 and good["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("lang", LANGS)
def test_a_grant_expiry_is_iso_text(officer_user, lang):
    model = ModelVersionFactory(model_name=f"triage-{lang}").model
    person = make_user("pat", ANALYST)
    client = client_for(officer_user, lang)
    url = reverse("admin:registry_model_grants", args=[model.pk])

    text_boxes(client.get(url).content.decode(), "expires_at")
    bad = client.post(url, {"user": person.pk, "permission": "invoke_model", "expires_at": "12/31/2026"})
    assert BAD[lang] in bad.content.decode() and not ModelUserGrant.objects.filter(user=person).exists()

    until = timezone.localtime(timezone.now() + timedelta(days=3)).replace(microsecond=0)
    client.post(url, {"user": person.pk, "permission": "invoke_model", "expires_at": f"{until:%Y-%m-%d %H:%M:%S}"})
    assert {g.expires_at for g in ModelUserGrant.objects.filter(user=person)} == {until}
