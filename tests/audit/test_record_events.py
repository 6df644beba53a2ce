"""record_events: the batch writer of the data plane's group commit. The rows are exactly what
record_event writes, a batch is all or nothing, one bad event cannot fail the others, and a
killed connection is replaced on the next call."""

from __future__ import annotations

import io

import psycopg
import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from apps.audit import offline_verify
from apps.audit.chain import seal_pending
from apps.audit.models import AuditEvent, Outcome
from apps.audit.services import (
    AuditUnavailable,
    PendingEvent,
    Source,
    record_event,
    record_events,
    roles_at_the_time,
)
from apps.audit.verify import verify_chain
from apps.core.context import bound_request_id

pytestmark = pytest.mark.django_db

TOKEN_SOURCE = Source(
    ip="2001:DB8:0:0::7", user_agent="tritonclient/2.73", token_id=42, token_issuer_id=3, token_issuer="carol"
)


def columns(event_id: int) -> dict:
    row = AuditEvent.objects.values().get(pk=event_id)
    row.pop("id")
    return row


def gateway_details(i: int = 0) -> dict:
    """What the gateway records for a call (apps/gateway/views.py, _Call.finish)."""
    return {
        "model": "iris",
        "status": 200,
        "latency_ms": 1.234 + i,
        "version": 2,
        "server": "edge-1",
        "deployment": 7,
        "deid": {"mode": "pseudonymise", "counts": {"email": 1}},
        "protocol": "grpc",
    }


def as_pending(actor, *, request_id: str, **facts) -> PendingEvent:
    """The PendingEvent of a record_event call: the actor given as the data plane's snapshot has it."""
    authenticated = actor is not None
    return PendingEvent(
        facts.pop("event_type"),
        actor_id=actor.pk if authenticated else None,
        actor_name=actor.get_username() if authenticated else "",
        actor_roles=roles_at_the_time(actor) if authenticated else [],
        request_id=request_id,
        **facts,
    )


CASES = {
    "authenticated call with a token": lambda user: dict(
        event_type="inference.infer",
        actor=user,
        source=TOKEN_SOURCE,
        target_type="registry.model",
        target_id="12",
        target_display="iris",
        details=gateway_details(),
    ),
    "refused anonymous call": lambda user: dict(
        event_type="auth.token.denied",
        actor=None,
        source=Source(ip="198.51.100.7", user_agent="curl/8"),
        target_type="registry.model",
        target_display="iris",
        outcome=Outcome.DENIED,
        error_code="invalid_token",
        details={"model": "iris", "status": 401, "count": 1, "window_seconds": 60},
    ),
    "failed call, no source": lambda user: dict(
        event_type="inference.metadata",
        actor=user,
        outcome=Outcome.FAILURE,
        error_code="triton_error",
        details={"model": "ïris — ☃", "status": 502, "emoji": "🦜"},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_row_is_what_record_event_writes(case, admin_user):
    facts = CASES[case](admin_user)
    with time_machine.travel(timezone.now(), tick=False), bound_request_id("req-single"):
        single = record_event(**facts)
        actor = facts.pop("actor")
        record_events([as_pending(actor, request_id="req-single", **facts)])
    batched = AuditEvent.objects.filter(request_id="req-single").exclude(pk=single.pk).get()

    assert columns(batched.pk) == columns(single.pk)
    assert batched.encoding_version == offline_verify.CURRENT_ENCODING
    assert (batched.sequence, batched.hash, batched.prev_hash) == (None, "", "")


def test_the_request_id_defaults_to_the_bound_one():
    with bound_request_id("req-bound"):
        event = PendingEvent("inference.ready")
    assert event.request_id == "req-bound"


def test_encoding_version_is_read_when_written(monkeypatch):
    event = PendingEvent("inference.infer", request_id="req-v")
    monkeypatch.setattr(offline_verify, "CURRENT_ENCODING", 1)
    record_events([event])
    assert AuditEvent.objects.get(request_id="req-v").encoding_version == 1


def test_the_sealer_chains_a_batch_and_verification_passes(admin_user):
    events = [
        PendingEvent(
            "inference.infer",
            actor_id=admin_user.pk,
            actor_name="root",
            actor_roles=["admin"],
            source=TOKEN_SOURCE,
            request_id=f"req-{i}",
            target_type="registry.model",
            target_id="12",
            target_display="iris",
            details=gateway_details(i),
        )
        for i in range(120)
    ]
    record_event("inference.infer", actor=None, details={"before": True})  # a row from the ordinary path
    record_events(events)

    assert AuditEvent.objects.filter(request_id__startswith="req-").count() == 120
    assert seal_pending(checkpoint=True).sealed == AuditEvent.objects.count()  # the user's own events too
    report = verify_chain()
    assert report["ok"], report
    out = io.StringIO()
    call_command("audit_verify", stdout=out)  # exits non-zero on any damage
    ids = list(AuditEvent.objects.filter(request_id__startswith="req-").order_by("sequence").values_list("request_id"))
    assert [i for (i,) in ids] == [f"req-{i}" for i in range(120)]  # the batch's order is the chain's


@pytest.mark.parametrize(
    "inside",
    [
        pytest.param("a transaction", marks=pytest.mark.django_db),  # a savepoint around the COPY
        pytest.param("autocommit", marks=pytest.mark.django_db(transaction=True)),  # the COPY alone
    ],
)
def test_a_failed_batch_writes_nothing_and_the_next_one_works(inside):
    good = [PendingEvent("inference.infer", request_id="req-batch", details={"i": i}) for i in range(5)]
    out_of_range = PendingEvent("inference.infer", request_id="req-batch", actor_id=2**70)  # no bigint holds it
    if connection.vendor != "postgresql":
        pytest.skip("SQLite stores any integer")
    assert connection.in_atomic_block == (inside == "a transaction")

    with pytest.raises(AuditUnavailable):
        record_events([*good, out_of_range, *good])
    assert not AuditEvent.objects.filter(request_id="req-batch").exists()

    record_events(good)
    assert AuditEvent.objects.filter(request_id="req-batch").count() == 5


def test_nothing_to_write_is_no_transaction(django_assert_num_queries):
    with django_assert_num_queries(0):
        record_events([])


class TestOneBadEventCannotFailTheBatch:
    """Values PostgreSQL refuses would fail every call sharing the batch; they are refused or
    cleaned when the event is built, so the batch holds only writable rows."""

    def test_unknown_type_invalid_address_and_non_json_details_raise_when_built(self):
        with pytest.raises(ValueError, match="catalogue"):
            PendingEvent("inference.infre")
        with pytest.raises(ValueError, match="not an IP address"):
            PendingEvent("inference.infer", source=Source(ip="198.51.100.300"))
        with pytest.raises(TypeError):
            PendingEvent("inference.infer", details={"when": object()})

    def test_nul_surrogates_and_overlong_text_are_cleaned(self):
        event = PendingEvent(
            "inference.infer",
            request_id="r" * 100,
            target_display="ir\x00is" + "s" * 300,
            source=Source(ip="198.51.100.7", user_agent="ua\udcff"),
            details={"model": "ir\x00is", "bad": ["\ud800"], "k\x00": 1, "emoji": "🦜"},
        )
        neighbour = PendingEvent("inference.infer", request_id="neighbour")
        record_events([neighbour, event])

        row = AuditEvent.objects.get(request_id="r" * 64)
        assert row.target_display == ("ir\ufffdis" + "s" * 300)[:200]
        assert row.user_agent == "ua?"
        assert row.details == {"model": "ir\ufffdis", "bad": ["?"], "k\ufffd": 1, "emoji": "🦜"}
        assert AuditEvent.objects.filter(request_id="neighbour").exists()


@pytest.mark.django_db(transaction=True)
def test_a_killed_connection_is_replaced_on_the_next_call():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL backends only")
    record_events([PendingEvent("inference.infer", request_id="before")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    settings = connection.get_connection_params()
    settings.pop("cursor_factory", None)
    settings.pop("context", None)
    with psycopg.connect(**settings, autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]

    with pytest.raises(AuditUnavailable):
        record_events([PendingEvent("inference.infer", request_id="lost")])
    record_events([PendingEvent("inference.infer", request_id="after")])

    assert sorted(AuditEvent.objects.values_list("request_id", flat=True)) == ["after", "before"]
