"""The 等保 report in Chinese, read back from the PDF (issue 17): check summaries and remedies in
Chinese, not only the headings; columns wide enough that no check name is broken into pieces and no
Chinese status is stacked one character per line; times in the requester's zone with seconds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from apps.accounts.services import set_preferences
from apps.compliance.reports.summaries import translate_summary, untranslated
from tests.compliance.test_reports import make_report, path_of

pytestmark = pytest.mark.django_db


def _lines(path) -> list[str]:
    exe = shutil.which("pdftotext")
    if exe is None:
        pytest.fail("pdftotext is missing: `make system-deps` installs poppler-utils")
    text = subprocess.run([exe, "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.fixture
def dengbao(auditor_user, django_capture_on_commit_callbacks):
    set_preferences(user=auditor_user, language="", time_zone="Asia/Shanghai")
    report = make_report("dengbao-l3", auditor_user, django_capture_on_commit_callbacks)
    content = json.loads(path_of(report, "json").read_bytes())
    return report, content, _lines(path_of(report, "pdf"))


def test_check_summaries_and_remedies_are_in_chinese(dengbao):
    _report, content, lines = dengbao
    evidence = [e for c in content["controls"] for e in c["evidence"]]
    texts = sorted({e.get("summary") for e in evidence} | {c["remedy"] for c in content["controls"]} - {None, ""})
    assert len(texts) > 20
    assert untranslated(texts) == []
    text = "\n".join(lines)
    # summaries the development install certainly produces, shown in Chinese and not in English
    assert "审计链验证通过" in text and "the audit chain verifies" not in text
    assert "需人工确认：尚未上传证明材料" in text and "needs a person" not in text
    for summary in texts[:5]:  # and each as the English the JSON keeps (the signed data is not rewritten)
        assert translate_summary(summary, "zh-hans") != summary


def test_columns_keep_words_and_statuses_whole(dengbao):
    _report, content, lines = dengbao
    checks = {e["check"] for c in content["controls"] for e in c["evidence"]}
    assert len(checks) > 20
    # every check name on one line, whole ("settings.deploy_…" was printed "sett ings .dep loy_")
    broken = [name for name in checks if not any(name in line for line in lines)]
    assert broken == []
    # statuses never stacked a character per line (不/符/合)
    assert any("不符合" in line for line in lines) and any("符合" in line for line in lines)
    assert not [line for line in lines if line in ("不", "符", "合", "需", "人", "工")]
    # column headings whole
    for heading in ("检查项", "结果", "检查内容"):
        assert any(heading in line for line in lines), heading


def test_times_are_in_the_requesters_zone_with_seconds(dengbao):
    _report, _content, lines = dengbao
    text = "\n".join(lines)
    assert "Asia/Shanghai" in text
    stamps = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CST", text)
    assert len(stamps) >= 3  # period start and end, generated at, evaluated at …
    cover = [line for line in lines if line.startswith(("报告期间", "生成时间"))]
    assert len(cover) == 2 and all(" CST" in line and not re.search(r"\dT\d", line) for line in cover), cover
