"""Export files and the standalone verifier: round trip, tampered files, filtered selections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.db.models import Q

from apps.audit.export import iter_export_jsonl
from apps.audit.models import AuditEvent
from apps.audit.offline_verify import load_public_keys, verify_export
from apps.audit.services import record_event
from apps.audit.signing import get_signer, public_pem
from tests.audit.chain_helpers import fill

pytestmark = pytest.mark.django_db

VERIFIER = Path(__file__).resolve().parents[2] / "apps" / "audit" / "offline_verify.py"
# Runs the verifier as a script with Django made unimportable: proof that it needs none of it.
NO_DJANGO = (
    "import runpy, sys; sys.modules['django'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def export_lines(queryset=None) -> list[str]:
    return list(iter_export_jsonl(queryset if queryset is not None else AuditEvent.objects.all()))


def offline(tmp_path, lines: list[str]) -> tuple[int, dict]:
    export = tmp_path / "export.jsonl"
    export.write_text("".join(lines), encoding="utf-8")
    key = tmp_path / "audit.pem"
    key.write_text(public_pem(get_signer()))
    proc = subprocess.run(
        [sys.executable, "-c", NO_DJANGO, str(VERIFIER), str(export), "--public-key", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def keys() -> dict:
    return load_public_keys([public_pem(get_signer()).encode()])


def tamper(lines: list[str], sequence: int, **changes) -> list[str]:
    out = []
    for line in lines:
        record = json.loads(line)
        if record.get("type") == "event" and record["sequence"] == sequence:
            record.update(changes)
            line = json.dumps(record) + "\n"
        out.append(line)
    return out


class TestExport:
    def test_round_trip_offline(self, tmp_path):
        fill(5)
        fill(3)
        lines = export_lines()

        code, report = offline(tmp_path, lines)

        assert code == 0 and report["ok"]
        assert (report["events_checked"], report["checkpoints_checked"], report["last_sequence"]) == (8, 2, 8)
        header = json.loads(lines[0])
        assert (header["format"], header["version"], header["hash_alg"]) == ("sovereign-audit-export", 1, "sha256")
        assert json.loads(lines[-1]) == {"type": "footer", "events": 8, "links": 0, "checkpoints": 2, "pending": 0}

    def test_modified_export_fails_offline(self, tmp_path):
        fill(6)

        code, report = offline(tmp_path, tamper(export_lines(), 4, details={"i": 1000}))

        assert code == 1 and not report["ok"]
        assert (report["problem"]["kind"], report["problem"]["sequence"]) == ("modified", 4)

    def test_removed_line_fails_offline(self, tmp_path):
        fill(6)
        lines = [line for line in export_lines() if '"sequence":3,' not in line or '"type":"event"' not in line]

        code, report = offline(tmp_path, lines)

        assert code == 1 and report["problem"]["kind"] == "deleted"

    def test_truncated_export_fails(self):
        fill(3)

        report = verify_export(export_lines()[:-1], keys())

        assert not report["ok"] and "truncated" in report["detail"]

    def test_wrong_key_fails(self, tmp_path):
        from apps.audit.signing import LocalSigner

        fill(3)
        other = LocalSigner(tmp_path / "other.pem")
        report = verify_export(export_lines(), load_public_keys([public_pem(other).encode()]))

        assert report["problem"]["kind"] == "forged_checkpoint"

    def test_filtered_selection_carries_links_and_verifies(self):
        fill(4)
        fill(4)
        fill(4)
        record_event("inference.infer", actor=None, target_display="m1")  # not sealed yet

        lines = export_lines(AuditEvent.objects.filter(Q(sequence=6) | Q(sequence__isnull=True)))
        kinds = [json.loads(line)["type"] for line in lines]

        report = verify_export(lines, keys())
        assert report["ok"], report
        # The selection is in the middle checkpoint interval: the first checkpoint anchors it,
        # the second closes it; the events between are links; the unsealed one is pending.
        assert kinds.count("event") == 1 and kinds.count("link") == 3 and kinds.count("pending") == 1
        assert kinds.count("checkpoint") == 2
        assert report["first_sequence"] == 5 and report["last_sequence"] == 8

    def test_forged_link_fails(self):
        fill(4)
        lines = export_lines(AuditEvent.objects.filter(sequence=2))
        lines = [line.replace('"type":"link"', '"type":"link","x":1') for line in lines]
        forged = []
        for line in lines:
            record = json.loads(line)
            if record.get("type") == "link" and record["sequence"] == 3:
                record["hash"] = "f" * 64
            forged.append(json.dumps(record) + "\n")

        report = verify_export(forged, keys())

        assert not report["ok"] and report["problem"]["sequence"] == 4

    def test_empty_export(self):
        report = verify_export(export_lines(), keys())

        assert report["ok"] and report["status"] == "empty"

    def test_streams_without_loading_everything(self):
        fill(30)
        stream = iter_export_jsonl(AuditEvent.objects.all())

        assert json.loads(next(stream))["type"] == "header"
        assert json.loads(next(stream))["sequence"] == 1
        stream.close()
