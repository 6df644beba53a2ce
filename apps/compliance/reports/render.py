"""Render report data as JSON, CSV and PDF (WeasyPrint, from a Django template in the report's
language; Chinese needs a CJK font such as Debian's fonts-noto-cjk)."""

from __future__ import annotations

import copy
import csv
import io
import json
import zoneinfo
from datetime import datetime

from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext as _

from apps.core.production import translated_reason
from apps.core.spreadsheet import safe_cell

from .summaries import translate_summary

CSV_FIELDS = ("profile", "id", "framework", "family", "status", "summary", "evidence", "remedy", "evaluated_at")


def to_json(data: dict) -> bytes:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str).encode()


def to_csv(data: dict) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in data["controls"]:
        cells = {
            **row,
            "profile": data["report"]["profile"],
            "evidence": json.dumps(row["evidence"], ensure_ascii=False, sort_keys=True, default=str),
        }
        # summaries and remedies quote names (users, models) that others chose: no formula may run
        writer.writerow({k: safe_cell(cells.get(k)) for k in CSV_FIELDS})
    return ("\ufeff" + out.getvalue()).encode()  # BOM: spreadsheet programs then read UTF-8 Chinese correctly


def to_pdf(data: dict) -> bytes:
    from weasyprint import HTML

    data = copy.deepcopy(data)
    with translation.override(data["report"]["language"]):
        html = render_to_string("compliance/report.html", {"data": data, **_view(data)})
    return HTML(string=html).write_pdf()


def status_labels() -> dict:
    return {
        "pass": _("Pass"),
        "fail": _("Fail"),
        "manual": _("Manual"),
        "not_applicable": _("Not applicable"),
        "not_evaluated": _("Not evaluated"),
    }


def local_time(value: str | None, zone: str) -> str:
    """An ISO 8601 time from the report data, in `zone`, with seconds and the zone's name
    (`2026-11-30 21:03:07 CST`), as the portal shows times."""
    if not value:
        return ""
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo("UTC")
    return datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _localise_times(data: dict) -> dict:
    zone = data["report"].get("time_zone") or "UTC"
    data["report"]["time_zone"] = zone
    rows = [
        (data["controls"], ("evaluated_at",)),
        (data["inventory"]["users"], ("last_login",)),
        (data["inventory"]["grants"], ("expires_at",)),
        (data["audit"]["checkpoints"], ("created_at",)),
        (data.get("attestations", []), ("uploaded_at", "expires_at")),
    ]
    for items, keys in rows:
        for item in items:
            for key in keys:
                item[f"{key}_local"] = local_time(item.get(key), zone)
    return {k: local_time(data["report"].get(k), zone) for k in ("period_start", "period_end", "generated_at")}


def _view(data: dict) -> dict:
    """Translated status labels, check summaries and remedies, evidence in a readable form (one line
    per check), times in the requester's zone."""
    times = _localise_times(data)
    labels = status_labels()
    for row in data["controls"]:
        row["status_label"] = labels.get(row["status"], row["status"])
        row["evidence_lines"] = [
            {
                "check": e.get("check"),
                "status": e.get("status"),
                "summary": e.get("summary"),
                "details": json.dumps(
                    {k: v for k, v in e.items() if k not in ("check", "status", "summary")},
                    ensure_ascii=False,
                    sort_keys=True,
                    default=str,
                )[:1500],
            }
            for e in row["evidence"]
        ]
        for e in row["evidence_lines"]:
            e["status_label"] = labels.get(e["status"], e["status"])
            e["check_parts"] = str(e["check"] or "").split(".")  # a line may break after a dot, not inside a word
            e["summary"] = translate_summary(e["summary"])
        row["remedy"] = translate_summary(row["remedy"])
    signing = data.get("signing") or {}
    for key in ("provider", "kek"):  # where the keys are, in the report's language (paths as they are)
        if signing.get(key):
            signing[key] = translate_summary(signing[key])
    # the development-mode reasons in the report's language (the signed JSON keeps them in English)
    reasons = [translated_reason(r) for r in (data.get("development_mode") or {}).get("reasons", [])]
    return {"labels": labels, "times": times, "development_reasons": reasons}
