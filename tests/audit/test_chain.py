"""The hash chain: sealing, checkpoints, verification, and every kind of tampering detected with
the right first bad sequence (PostgreSQL, with its append-only trigger)."""

from __future__ import annotations

import base64

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from apps.audit.chain import checkpoint_record, seal_pending, write_checkpoint
from apps.audit.models import AuditCheckpoint, AuditEvent
from apps.audit.offline_verify import GENESIS, checkpoint_payload, event_hash
from apps.audit.signing import LocalSigner
from apps.audit.verify import verify_chain
from tests.audit.chain_helpers import fill, sql

pytestmark = pytest.mark.django_db

VERIFY = "/api/v1/audit/verify/"


def by_seq(seq: int) -> AuditEvent:
    return AuditEvent.objects.get(sequence=seq)


def problem() -> tuple[str, int]:
    report = verify_chain()
    assert not report["ok"] and report["status"] == "tampered", report
    return report["problem"]["kind"], report["problem"]["sequence"]


class TestSealing:
    def test_insert_leaves_chain_empty_and_the_sealer_fills_it(self):
        events = fill(4, checkpoint=False)
        assert all(e.sequence is None and e.hash == "" for e in events)

        seqs = list(AuditEvent.objects.order_by("id").values_list("sequence", "prev_hash", "hash"))
        assert [s for s, _, _ in seqs] == [1, 2, 3, 4]
        assert seqs[0][1] == GENESIS
        assert all(seqs[i][1] == seqs[i - 1][2] for i in range(1, 4))

    def test_checkpoint_signs_the_head_and_links_to_the_previous_one(self):
        fill(3)
        first = AuditCheckpoint.objects.get()
        fill(2)
        second = AuditCheckpoint.objects.order_by("-sequence").first()

        assert (first.sequence, first.head, first.prev) == (3, by_seq(3).hash, "")
        assert second.sequence == 5 and second.prev != "" and second.key_id.startswith("p256:")
        assert write_checkpoint(force=True) is None  # head has not moved

    def test_checkpoint_waits_for_its_interval(self, settings):
        settings.AUDIT_CHECKPOINT_SECONDS = 3600
        fill(2)
        fill(2, checkpoint=None)  # due only by interval: not yet

        assert list(AuditCheckpoint.objects.values_list("sequence", flat=True)) == [2]

    def test_sm3_chain_in_guomi_mode(self, settings):
        settings.ARTIFACT_SUITE = "SM4-GCM"
        fill(3)

        record = verify_chain()
        assert record["ok"] and record["hash_alg"] == "sm3"
        assert AuditCheckpoint.objects.get().hash_alg == "sm3"


class TestVerify:
    def test_empty_log(self):
        report = verify_chain()

        assert report["ok"] and report["status"] == "empty"
        assert "empty" in report["detail"] and report["problem"] is None

    def test_unsealed_events_are_counted_not_failed(self):
        fill(2)
        fill(1, checkpoint=False)
        from apps.audit.services import record_event

        record_event("inference.infer", actor=None)

        report = verify_chain()
        assert report["ok"] and report["pending"] == 1 and report["last_sequence"] == 3
        assert report["unsigned_tail"] == 1 and report["last_checkpoint_sequence"] == 2

    def test_intact_log(self):
        fill(5)

        report = verify_chain()
        assert report["ok"] and report["status"] == "ok"
        assert (report["first_sequence"], report["last_sequence"], report["checkpoints_checked"]) == (1, 5, 1)

    def test_modified_event(self):
        fill(6)
        sql("UPDATE audit_auditevent SET details = '{\"i\": 99}' WHERE sequence = 3")

        assert problem() == ("modified", 3)

    def test_modified_actor_name(self):
        fill(6)
        sql("UPDATE audit_auditevent SET actor_name = 'someone-else' WHERE sequence = 5")

        assert problem() == ("modified", 5)

    def test_deleted_event(self):
        fill(6)
        sql("DELETE FROM audit_auditevent WHERE sequence = 3")

        assert problem() == ("deleted", 3)

    def test_deleted_first_event(self):
        fill(4)
        sql("DELETE FROM audit_auditevent WHERE sequence = 1")

        assert problem() == ("deleted", 1)

    def test_deleted_tail_before_a_checkpoint(self):
        fill(6)
        sql("DELETE FROM audit_auditevent WHERE sequence >= 5")

        assert problem() == ("deleted", 5)

    def test_deleted_and_renumbered(self):
        fill(6)
        sql("DELETE FROM audit_auditevent WHERE sequence = 3")
        sql("UPDATE audit_auditevent SET sequence = -(sequence - 1) WHERE sequence > 3")
        sql("UPDATE audit_auditevent SET sequence = -sequence WHERE sequence < 0")

        assert problem() == ("deleted", 3)

    def test_inserted_event(self):
        fill(6)
        two = by_seq(2)
        sql("UPDATE audit_auditevent SET sequence = -(sequence + 1) WHERE sequence >= 3")
        sql("UPDATE audit_auditevent SET sequence = -sequence WHERE sequence < 0")
        forged = {
            "sequence": 3,
            "timestamp": "2025-01-01T00:00:00.000000Z",
            "actor_id": None,
            "actor_name": "ghost",
            "actor_roles": [],
            "token_id": None,
            "source_ip": None,
            "user_agent": "",
            "request_id": "",
            "event_type": "inference.infer",
            "event_group": "inference",
            "target_type": "",
            "target_id": "",
            "target_display": "",
            "outcome": "success",
            "error_code": "",
            "details": {},
            "prev_hash": two.hash,
        }
        sql(
            "INSERT INTO audit_auditevent (timestamp, sequence, actor_name, actor_roles, user_agent, request_id,"
            " event_type, event_group, target_type, target_id, target_display, outcome, error_code, details,"
            " prev_hash, hash) VALUES ('2025-01-01T00:00:00Z', 3, 'ghost', '[]', '', '', 'inference.infer',"
            " 'inference', '', '', '', 'success', '', '{}', %s, %s)",
            [two.hash, event_hash(forged, "sha256")],
        )

        assert problem() == ("inserted", 3)

    def test_reordered_events(self):
        fill(6)
        sql("UPDATE audit_auditevent SET sequence = -1 WHERE sequence = 3")
        sql("UPDATE audit_auditevent SET sequence = 3 WHERE sequence = 4")
        sql("UPDATE audit_auditevent SET sequence = 4 WHERE sequence = -1")

        assert problem() == ("reordered", 3)

    def test_forged_checkpoint_head(self):
        fill(6)
        sql("UPDATE audit_auditcheckpoint SET head = %s", [by_seq(5).hash])

        assert problem() == ("forged_checkpoint", 6)

    def test_checkpoint_signed_by_an_untrusted_key(self, tmp_path):
        fill(4)
        fill(2)
        evil = LocalSigner(tmp_path / "evil.pem")
        last = AuditCheckpoint.objects.order_by("-sequence").first()
        record = {**checkpoint_record(last), "key_id": evil.key_id}
        signature = base64.b64encode(evil.sign(checkpoint_payload(record))).decode()
        sql(
            "UPDATE audit_auditcheckpoint SET key_id = %s, signature = %s WHERE id = %s",
            [evil.key_id, signature, last.pk],
        )

        kind, seq = problem()
        assert (kind, seq) == ("forged_checkpoint", 6)
        assert "not a trusted checkpoint key" in verify_chain()["detail"]

    def test_deleted_checkpoint_breaks_the_checkpoint_chain(self):
        fill(2)
        fill(2)
        fill(2)
        sql("DELETE FROM audit_auditcheckpoint WHERE sequence = 4")

        assert problem() == ("forged_checkpoint", 6)

    def test_rewritten_chain_is_caught_by_the_checkpoint(self):
        fill(4)
        # Rewrite event 4 and recompute its hash: the chain is self-consistent, the signed head is not.
        row = AuditEvent.objects.filter(sequence=4).values().get()
        from apps.audit.chain import event_record

        record = {**event_record(row), "details": {"i": 42}}
        sql(
            "UPDATE audit_auditevent SET details = '{\"i\": 42}', hash = %s WHERE sequence = 4",
            [event_hash(record, "sha256")],
        )

        assert problem() == ("modified", 1)


class TestAppendOnlyTrigger:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE audit_auditevent SET details = '{}'",
            "UPDATE audit_auditevent SET hash = 'x'",
            "DELETE FROM audit_auditevent",
            "UPDATE audit_auditcheckpoint SET head = 'x'",
            "DELETE FROM audit_auditcheckpoint",
        ],
    )
    def test_refuses_update_and_delete(self, statement):
        fill(2)

        with (
            pytest.raises(DatabaseError, match="audit rows cannot be"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)

        assert verify_chain()["ok"]

    def test_an_unsealed_event_cannot_be_changed_either(self):
        fill(1, checkpoint=False)
        from apps.audit.services import record_event

        record_event("inference.infer", actor=None)

        with (
            pytest.raises(DatabaseError, match="cannot be changed"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("UPDATE audit_auditevent SET details = '{}', hash = 'x', sequence = 9")

    def test_the_purge_switch_alone_does_not_open_deletes(self):
        """Setting the session flag is not enough: only the purge function's owner may delete."""
        fill(2)
        with connection.cursor() as cursor:
            cursor.execute("CREATE ROLE sovereign_app_test NOLOGIN")
            cursor.execute("GRANT ALL ON audit_auditevent TO sovereign_app_test")
            cursor.execute("SET LOCAL ROLE sovereign_app_test")
            cursor.execute("SET LOCAL sovereign.audit_purge = 'on'")
        with (
            pytest.raises(DatabaseError, match="cannot be deleted"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("DELETE FROM audit_auditevent")


class TestVerifyInterfaces:
    def test_api_reports_tampering_and_is_audited(self, auditor_client):
        fill(3)
        sql("DELETE FROM audit_auditevent WHERE sequence = 2")

        resp = auditor_client.get(VERIFY)

        assert resp.status_code == 200
        body = resp.json()
        assert (body["ok"], body["status"], body["problem"]["kind"], body["problem"]["sequence"]) == (
            False,
            "tampered",
            "deleted",
            2,
        )
        event = AuditEvent.objects.get(event_type="audit.verify")
        assert (event.outcome, event.error_code, event.actor_name) == ("failure", "audit_deleted", "audrey")
        assert event.actor_roles == ["auditor"]

    def test_api_on_an_empty_log(self, auditor_client):
        body = auditor_client.get(VERIFY).json()

        assert (body["ok"], body["status"]) == (True, "empty")

    def test_command(self, capsys):
        fill(3)
        call_command("audit_verify")
        assert "sequences 1..3 verify" in capsys.readouterr().out

        sql("UPDATE audit_auditevent SET outcome = 'denied' WHERE sequence = 2")
        with pytest.raises(CommandError, match="modified at sequence 2"):
            call_command("audit_verify")

    def test_seal_command(self, capsys):
        fill(2, checkpoint=False)
        from apps.audit.services import record_event

        record_event("inference.infer", actor=None)
        call_command("audit_seal")

        assert "sealed 1 event(s); checkpoint at sequence 3" in capsys.readouterr().out
        assert seal_pending().sealed == 0
