"""Search (GET /api/v1/audit/events/) and export (GET /api/v1/audit/export/{jsonl,csv}/): filters,
malformed filters, cursor pages, who reads what, streamed exports that verify offline."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.audit.offline_verify import load_public_keys, verify_export
from apps.audit.services import Source, record_event
from apps.audit.signing import get_signer, public_pem
from apps.core.context import bound_request_id

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/audit/events/"


@pytest.fixture
def log(plain_user, time_machine):
    """A small log over three days, sealed with a checkpoint."""
    start = timezone.now().replace(microsecond=0) - timedelta(days=3)
    time_machine.move_to(start, tick=False)
    with bound_request_id("req-upload"):
        record_event("registry.model.create", actor=plain_user, target_display="triage", details={"note": "first"})
    time_machine.move_to(start + timedelta(days=1), tick=False)
    record_event(
        "inference.infer",
        actor=plain_user,
        source=Source(ip="10.1.2.3", user_agent="ua"),
        target_type="registry.model",
        target_id="7",
        details={"model": "sepsis-risk", "latency_ms": 3.1},
    )
    record_event("auth.token.denied", actor=None, outcome="denied", error_code="invalid_token")
    time_machine.move_to(start + timedelta(days=2), tick=False)
    record_event("keys.kek.rotate", actor=None, details={"from": "local:aa", "to": "local:bb"})
    record_event("inference.infer", actor=None, outcome="failure", error_code="triton_unavailable")
    time_machine.move_to(start + timedelta(days=3), tick=False)
    seal_pending(checkpoint=True)
    return start


def _types(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [e["event_type"] for e in response.json()["results"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"actor": "alice"}, ["inference.infer", "registry.model.create"]),
        ({"event_group": "keys"}, ["keys.kek.rotate"]),
        ({"event_type": "auth.token.denied"}, ["auth.token.denied"]),
        ({"outcome": "failure"}, ["inference.infer"]),
        ({"error_code": "invalid_token"}, ["auth.token.denied"]),
        ({"request_id": "req-upload"}, ["registry.model.create"]),
        ({"source_ip": "10.1.2.3"}, ["inference.infer"]),
        ({"target_type": "registry.model", "target_id": "7"}, ["inference.infer"]),
        ({"q": "SEPSIS"}, ["inference.infer"]),  # text in the details, any case
    ],
)
def test_filters(log, auditor_client, params, expected):
    assert _types(auditor_client.get(EVENTS, params)) == expected


def test_time_range_and_ordering(log, auditor_client):
    day1, day2 = (log + timedelta(days=1)).isoformat(), (log + timedelta(days=2)).isoformat()
    assert _types(auditor_client.get(EVENTS, {"since": day1, "until": day2})) == [
        "auth.token.denied",
        "inference.infer",
    ]
    oldest_first = _types(auditor_client.get(EVENTS, {"ordering": "timestamp", "event_group": "inference"}))
    assert oldest_first == ["inference.infer", "inference.infer"]
    everything = auditor_client.get(EVENTS, {"ordering": "timestamp", "until": day2}).json()["results"]
    assert [e["event_type"] for e in everything] == ["registry.model.create", "inference.infer", "auth.token.denied"]


def test_cursor_pages_walk_everything_once(log, auditor_client):
    seen, url, params = [], EVENTS, {"page_size": 2, "until": (log + timedelta(days=3)).isoformat()}
    while url:
        body = auditor_client.get(url, params).json()
        seen += [e["id"] for e in body["results"]]
        url, params = body["next"], None
    assert len(seen) == 5 == len(set(seen))


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"since": "yesterday"}, "invalid", "since"),
        ({"event_group": "nope"}, "invalid", "event_group"),
        ({"event_type": "auth.nope"}, "invalid", "event_type"),
        ({"outcome": "maybe"}, "invalid", "outcome"),
        ({"source_ip": "999.1.1.1"}, "invalid", "source_ip"),
        ({"actor_id": "bob"}, "invalid", "actor_id"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "invalid", "until"),
        ({"q": "x" * 201}, "invalid", "q"),
        ({"actr": "alice"}, "unknown_filter", "actr"),
        ({"ordering": "actor"}, "invalid", "ordering"),
    ],
)
def test_malformed_filters_are_refused_by_name(log, auditor_client, params, code, field):
    response = auditor_client.get(EVENTS, params)
    assert response.status_code == 400
    assert (response.json()["code"], response.json().get("field")) == (code, field)


def test_reading_the_log_is_audited(log, auditor_client, auditor_user):
    auditor_client.get(EVENTS, {"event_group": "keys"})
    event = AuditEvent.objects.filter(event_type="audit.search").latest("id")
    assert event.actor == auditor_user
    # the query, and the issuer of the token it was made with
    assert event.details == {"event_group": "keys", "token_issuer_id": auditor_user.pk, "token_issuer": "audrey"}


def test_security_officer_reads_key_events_only(log, officer_client):
    assert _types(officer_client.get(EVENTS)) == ["keys.kek.rotate"]
    other = AuditEvent.objects.get(event_type="registry.model.create")
    assert officer_client.get(f"{EVENTS}{other.pk}/").status_code == 404


@pytest.mark.parametrize("client_name", ["staff_client", "user_client", "guest_client"])
def test_others_read_nothing(log, client_name, request):
    for url in (EVENTS, "/api/v1/audit/export/jsonl/"):
        response = request.getfixturevalue(client_name).get(url)
        assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


def _body(response) -> str:
    assert response.status_code == 200, response.content[:500]
    return b"".join(response.streaming_content).decode()


def _keys():
    return load_public_keys([public_pem(get_signer()).encode()])


def test_jsonl_export_of_a_selection_verifies_offline_and_is_audited(log, auditor_client, auditor_user):
    response = auditor_client.get("/api/v1/audit/export/jsonl/", {"event_group": "inference"})

    assert response["Content-Type"] == "application/x-ndjson"
    lines = _body(response).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records][0] == "header" and records[-1]["type"] == "footer"
    assert [r["event_type"] for r in records if r["type"] == "event"] == ["inference.infer", "inference.infer"]
    assert any(r["type"] == "checkpoint" for r in records)
    report = verify_export(lines, _keys())
    assert report["ok"], report
    event = AuditEvent.objects.get(event_type="audit.export")
    assert event.actor == auditor_user
    assert event.details == {
        "format": "jsonl",
        "filters": {"event_group": "inference"},
        "rows": 2,
        "token_issuer_id": auditor_user.pk,
        "token_issuer": "audrey",
    }


def test_csv_export_carries_the_records_and_verifies_the_same_way(log, auditor_client):
    response = auditor_client.get("/api/v1/audit/export/csv/", {"outcome": "failure"})

    rows = list(csv.DictReader(io.StringIO(_body(response))))
    events = [r for r in rows if r["type"] == "event"]
    assert [(r["event_type"], r["error_code"]) for r in events] == [("inference.infer", "triton_unavailable")]
    assert verify_export([r["record"] for r in rows], _keys())["ok"]


def test_tampered_csv_record_fails_verification(log, auditor_client):
    rows = list(csv.DictReader(io.StringIO(_body(auditor_client.get("/api/v1/audit/export/csv/")))))
    records = [r["record"] for r in rows]
    i = next(n for n, r in enumerate(rows) if r["type"] == "event")
    records[i] = records[i].replace('"outcome":"success"', '"outcome":"failure"')
    report = verify_export(records, _keys())
    assert not report["ok"] and report["problem"]["kind"] == "modified"


def test_export_over_the_role_limit_is_refused(log, auditor_client, settings):
    settings.AUDIT_EXPORT_MAX_ROWS = 2
    response = auditor_client.get("/api/v1/audit/export/jsonl/")
    assert (response.status_code, response.json()["code"]) == (413, "export_too_large")
    assert "at most 2" in response.json()["detail"]
    assert not AuditEvent.objects.filter(event_type="audit.export").exists()
    assert auditor_client.get("/api/v1/audit/export/jsonl/", {"event_group": "keys"}).status_code == 200


def test_security_officer_exports_key_events_only(log, officer_client):
    records = [json.loads(line) for line in _body(officer_client.get("/api/v1/audit/export/jsonl/")).splitlines()]
    assert {r["event_group"] for r in records if r["type"] == "event"} == {"keys"}


def test_unknown_export_format(log, auditor_client):
    response = auditor_client.get("/api/v1/audit/export/xml/")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_format")
