"""Versioned event encodings: each event records the version of the field list its hash covers, and
is verified with that version, online and offline, for as long as it is kept.

Only version 1 exists in the portal. These tests register a version 2 of their own (monkeypatching
offline_verify.EVENT_ENCODINGS, as the next issue's real version 2 will extend it): version 1's
fields plus `id`, the one column version 1 leaves out (a real version 2 adds a new column instead).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from apps.audit import offline_verify
from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent
from apps.audit.offline_verify import ENCODING_V1, UNKNOWN_ENCODING, event_hash, verify_export
from apps.audit.signing import get_signer, public_pem
from apps.audit.verify import verify_chain
from tests.audit.chain_helpers import fill, sql
from tests.audit.test_export_offline import export_lines, keys, tamper

pytestmark = pytest.mark.django_db

VERIFIER = Path(__file__).resolve().parents[2] / "apps" / "audit" / "offline_verify.py"
V2 = (*ENCODING_V1, "id")
# The verifier as a script, Django unimportable; argv[1] "v2" first registers the test's version 2
# in that process (the way a newer offline_verify.py would carry it).
SCRIPT = """
import importlib.util, sys
sys.modules["django"] = None
spec = importlib.util.spec_from_file_location("offline_verify", sys.argv[1])
verifier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verifier)
if sys.argv[2] == "v2":
    verifier.EVENT_ENCODINGS[2] = (*verifier.ENCODING_V1, "id")
sys.exit(verifier.main(sys.argv[3:]))
"""


def register_v2(monkeypatch) -> None:
    """Version 2 becomes known and current: events written from now on are hashed with it."""
    monkeypatch.setitem(offline_verify.EVENT_ENCODINGS, 2, V2)
    monkeypatch.setattr(offline_verify, "CURRENT_ENCODING", 2)


def offline(tmp_path, lines: list[str], *, knows_v2: bool) -> tuple[int, dict]:
    export = tmp_path / "export.jsonl"
    export.write_text("".join(lines), encoding="utf-8")
    key = tmp_path / "audit.pem"
    key.write_text(public_pem(get_signer()))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(VERIFIER), "v2" if knows_v2 else "-", str(export), "--public-key", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def mixed_chain(monkeypatch):
    """Sequences 1-3 written under version 1, then 4-6 under the test's version 2, in one chain."""
    fill(3)
    register_v2(monkeypatch)
    fill(3)
    return monkeypatch


def versions() -> list[int]:
    return list(AuditEvent.objects.order_by("sequence").values_list("encoding_version", flat=True))


class TestMixedChain:
    def test_each_event_records_its_version_and_is_hashed_with_it(self, mixed_chain):
        assert versions() == [1, 1, 1, 2, 2, 2]
        v2_event = AuditEvent.objects.filter(sequence=4).values().get()
        record = {**v2_event, "timestamp": offline_verify.format_timestamp(v2_event["timestamp"])}
        assert event_hash(record, "sha256") == v2_event["hash"]
        # version 2 covers `id`, under its own prefix: the version 1 hash of the same row differs
        assert event_hash({**record, "encoding_version": 1}, "sha256") != v2_event["hash"]

    def test_verifies_online(self, mixed_chain, auditor_client):
        report = verify_chain()
        assert (report["ok"], report["status"], report["events_checked"]) == (True, "ok", 6), report

        body = auditor_client.get("/api/v1/audit/verify/").json()
        assert (body["ok"], body["status"], body["last_sequence"]) == (True, "ok", 6)

    def test_verifies_offline(self, mixed_chain, tmp_path):
        lines = export_lines()

        code, report = offline(tmp_path, lines, knows_v2=True)

        assert (code, report["ok"], report["events_checked"], report["checkpoints_checked"]) == (0, True, 6, 2)
        events = [json.loads(line) for line in lines if '"type":"event"' in line]
        assert [e["encoding_version"] for e in events] == [1, 1, 1, 2, 2, 2]
        assert json.loads(lines[0])["version"] == 2  # the layout older verifiers refuse, not misread

    def test_a_v1_only_export_keeps_the_layout_older_verifiers_read(self):
        fill(3)

        lines = export_lines()

        assert json.loads(lines[0])["version"] == 1
        assert verify_export(lines, keys())["ok"]


class TestTampering:
    def test_a_changed_v2_only_field_is_detected_online(self, mixed_chain):
        sql("UPDATE audit_auditevent SET id = id + 100000 WHERE sequence = 2")  # not covered by version 1
        assert verify_chain()["ok"]

        sql("UPDATE audit_auditevent SET id = id + 100000 WHERE sequence = 5")  # covered by version 2

        problem = verify_chain()["problem"]
        assert (problem["kind"], problem["sequence"]) == ("modified", 5)

    def test_a_changed_v2_only_field_is_detected_offline(self, mixed_chain, tmp_path):
        lines = tamper(export_lines(), 5, id=424242)

        code, report = offline(tmp_path, lines, knows_v2=True)

        assert (code, report["problem"]["kind"], report["problem"]["sequence"]) == (1, "modified", 5)

    def test_a_v2_event_passed_off_as_v1_is_detected(self, mixed_chain, tmp_path):
        """Lowering the version (to drop the fields only version 2 covers) changes the hash's prefix."""
        lines = tamper(export_lines(), 6, encoding_version=1)

        code, report = offline(tmp_path, lines, knows_v2=True)

        assert (code, report["problem"]["kind"], report["problem"]["sequence"]) == (1, "modified", 6)


class TestOlderExports:
    def test_an_export_written_before_versions_still_verifies_offline(self, tmp_path):
        """Exports from before this change have no `encoding_version` on their events: read as version 1."""
        fill(4)
        lines = []
        for line in export_lines():
            record = json.loads(line)
            record.pop("encoding_version", None)
            lines.append(json.dumps(record) + "\n")
        assert json.loads(lines[0])["version"] == 1

        code, report = offline(tmp_path, lines, knows_v2=False)

        assert (code, report["ok"], report["events_checked"]) == (0, True, 4)


class TestUnknownVersion:
    def test_online_an_unknown_version_is_a_clear_failure(self, mixed_chain, auditor_client):
        mixed_chain.undo()  # this portal no longer knows version 2 (e.g. rolled back to an older release)

        report = verify_chain()

        assert (report["ok"], report["status"]) == (False, "unsupported")
        assert (report["problem"]["kind"], report["problem"]["sequence"]) == (UNKNOWN_ENCODING, 4)
        assert "encoding version 2" in report["detail"]
        body = auditor_client.get("/api/v1/audit/verify/").json()
        assert (body["status"], body["problem"]["kind"]) == ("unsupported", UNKNOWN_ENCODING)
        event = AuditEvent.objects.get(event_type="audit.verify")
        assert event.error_code == "audit_unknown_encoding"

    def test_offline_a_verifier_without_the_version_says_so(self, mixed_chain, tmp_path):
        code, report = offline(tmp_path, export_lines(), knows_v2=False)

        assert (code, report["status"], report["problem"]["kind"], report["problem"]["sequence"]) == (
            1,
            "unsupported",
            UNKNOWN_ENCODING,
            4,
        )

    @pytest.mark.parametrize("version", [99, "2", None, [1], 1.0], ids=repr)
    def test_a_malformed_version_is_reported_not_raised(self, tmp_path, version):
        fill(3)
        lines = tamper(export_lines(), 2, encoding_version=version)

        report = verify_export(lines, keys())

        assert (report["ok"], report["problem"]["kind"], report["problem"]["sequence"]) == (False, UNKNOWN_ENCODING, 2)


@pytest.mark.django_db(transaction=True)
def test_the_migration_makes_existing_events_version_1():
    """Rows written before the column existed become version 1 (today's field list), without being
    rewritten: the append-only trigger refuses any UPDATE, so the migration must not need one."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("audit", "0006_request_id_index")])
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO audit_auditevent (timestamp, actor_name, actor_roles, user_agent, request_id, event_type,"
                " event_group, target_type, target_id, target_display, outcome, error_code, details, prev_hash, hash)"
                " VALUES (now(), '', '[]', '', 'before', 'inference.infer', 'inference', '', '', '', 'success', '',"
                " '{}', '', '')"
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes("audit"))

    assert AuditEvent.objects.get(request_id="before").encoding_version == 1
    seal_pending(checkpoint=True)
    assert verify_chain()["ok"]
