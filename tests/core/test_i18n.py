"""The interface's translations (issue 17; docs/i18n.md): every msgid of every catalogue translated
(no empty or fuzzy entry), the committed .mo files compiled from the .po files as they are, the model
labels' msgid list current, and the browser's language or the person's own setting choosing the
language the admin is shown in, with times in the person's zone, with seconds and the zone's name."""

from __future__ import annotations

import gettext
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.utils import formats, timezone, translation

from apps.accounts.roles import ADMIN, AUDITOR
from apps.accounts.services import set_preferences
from apps.core.management.commands.model_labels import TARGET, render
from tests.conftest import make_user, otp_login

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = sorted(ROOT.glob("locale/*/LC_MESSAGES/django.po")) + sorted(
    ROOT.glob("apps/*/locale/*/LC_MESSAGES/django.po")
)


def _entries(po: Path):
    """(msgid, msgstr, flags) of each entry, continuation lines joined (a small reader: no polib here)."""
    for block in po.read_text().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith("#~")]
        flags = " ".join(line for line in lines if line.startswith("#,"))
        parts: dict[str, list[str]] = {"msgid": [], "msgstr": []}
        current = None
        for line in lines:
            if m := re.match(r"^(msgid|msgstr|msgctxt|msgid_plural|msgstr\[\d+\]) (\".*\")$", line):
                kind = "msgstr" if m.group(1).startswith("msgstr[") else m.group(1)  # a plural's forms
                current = kind if kind in parts else None
                if current:
                    parts[current].append(eval(m.group(2)))  # noqa: S307 - a .po string literal, from our repo
            elif line.startswith('"') and current:
                parts[current].append(eval(line))  # noqa: S307
        if parts["msgid"]:
            yield "".join(parts["msgid"]), "".join(parts["msgstr"]), flags


def test_there_is_a_project_catalogue_and_the_report_one():
    assert ROOT / "locale/zh_Hans/LC_MESSAGES/django.po" in CATALOGUES
    assert ROOT / "apps/compliance/locale/zh_Hans/LC_MESSAGES/django.po" in CATALOGUES


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_msgid_has_a_chinese_translation(po):
    entries = [e for e in _entries(po) if e[0]]
    assert len(entries) > 50
    untranslated = [msgid for msgid, msgstr, _flags in entries if not msgstr.strip()]
    fuzzy = [msgid for msgid, _msgstr, flags in entries if "fuzzy" in flags]
    assert not untranslated, f"{len(untranslated)} without a translation: {untranslated[:10]}"
    assert not fuzzy, f"{len(fuzzy)} fuzzy: {fuzzy[:10]}"


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_mo_file_is_compiled_from_the_po_file(po, tmp_path):
    """`make messages` recompiles them; the committed ones must say the same (a checkout without msgfmt)."""
    fresh = tmp_path / "fresh.mo"
    subprocess.run(["msgfmt", "--check-format", "-o", str(fresh), str(po)], check=True)
    with fresh.open("rb") as a, po.with_suffix(".mo").open("rb") as b:
        assert gettext.GNUTranslations(b)._catalog == gettext.GNUTranslations(a)._catalog


def test_the_model_labels_list_is_current():
    assert TARGET.read_text() == render(), "run `manage.py model_labels`, then makemessages, and translate"


def test_model_and_field_labels_follow_the_language(db):
    from apps.accounts.models import ApiToken

    field = ApiToken._meta.get_field("expires_at")
    with translation.override("zh-hans"):
        assert (str(ApiToken._meta.verbose_name), str(field.verbose_name)) == ("API 令牌", "到期时间")
    with translation.override("en"):
        assert (str(ApiToken._meta.verbose_name), str(field.verbose_name)) == ("api token", "expires at")


def test_times_show_seconds_and_the_zone():
    moment = datetime(2026, 11, 30, 13, 3, 7, tzinfo=UTC)
    for language in ("en", "zh-hans"):
        with translation.override(language), timezone.override("Asia/Shanghai"):
            shown = formats.localize(timezone.template_localtime(moment))
        assert shown == "2026-11-30 21:03:07 CST"


def _login(client, role=ADMIN):
    user = make_user("ops", role)
    otp_login(client, user)
    return user


def test_a_chinese_browser_sees_the_admin_in_chinese(client, db):
    _login(client)
    page = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert '<html lang="zh-hans"' in page and "语言和时区" in page and "注销" in page  # ours and Django's own
    page = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert '<html lang="en"' in page and "Language and time zone" in page and "Log out" in page


def test_the_persons_setting_wins_over_the_browser_and_is_audited(client, db):
    from apps.audit.models import AuditEvent

    user = _login(client)
    response = client.post("/accounts/preferences/", {"language": "zh-hans", "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    page = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert '<html lang="zh-hans"' in page
    event = AuditEvent.objects.get(event_type="auth.preferences.change")
    assert event.actor_id == user.pk and event.details["after"] == {"language": "zh-hans", "time_zone": ""}
    # the header's switch sends the language only: the zone set on the page stays
    set_preferences(user=user, language="zh-hans", time_zone="Asia/Shanghai")
    client.post("/accounts/preferences/", {"language": "en", "next": "/admin/"})
    user.profile.refresh_from_db()
    assert (user.profile.language, user.profile.time_zone) == ("en", "Asia/Shanghai")


def test_the_admin_shows_times_in_the_persons_zone_with_seconds(client, db):
    from apps.audit.models import AuditEvent

    user = _login(client, AUDITOR)  # the auditor reads the audit log
    set_preferences(user=user, language="en", time_zone="Asia/Shanghai")
    event = AuditEvent.objects.get(event_type="auth.preferences.change")
    local = timezone.localtime(event.timestamp, timezone=__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    page = client.get(f"/admin/audit/auditevent/{event.pk}/change/").content.decode()
    assert local.strftime("%Y-%m-%d %H:%M:%S CST") in page


@pytest.mark.parametrize(
    ("language", "zone", "code"),
    [("fr", "", "invalid_language"), ("en", "Mars/Olympus", "invalid_time_zone")],
)
def test_an_unknown_language_or_zone_is_refused_and_nothing_saved(db, language, zone, code):
    from apps.audit.models import AuditEvent
    from apps.core.errors import ServiceError

    user = make_user("alice")
    with pytest.raises(ServiceError) as err:
        set_preferences(user=user, language=language, time_zone=zone)
    assert err.value.code == code
    user.profile.refresh_from_db()
    assert (user.profile.language, user.profile.time_zone) == ("", "")
    assert not AuditEvent.objects.filter(event_type="auth.preferences.change").exists()
