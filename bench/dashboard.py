"""The operator dashboard at ten million audit events (issue 17): fill, roll up, time the page.

Sets up its own PostgreSQL database (sov_dashbench, dropped at exit unless --keep) and a temp data
dir. Run from the repository root:

    .venv/bin/python bench/dashboard.py [--events 10000000] [--days 14] [--requests 200] [--keep]

1. `migrate` on a fresh database.
2. N audit events generated inside PostgreSQL (INSERT … SELECT FROM generate_series) over --days
   days ending now: ~90 % gateway calls (inference.infer, 2 % chat and completion calls with tokens)
   over 50 models × 3 versions, outcomes ~97/2/1 % success/failure/denied, latencies spread over
   1 ms – 3 s; the rest logins, grants, uploads, deployments, key operations. Rows are written
   **sealed but without a hash chain**: `sequence` = id, `prev_hash`/`hash` empty. The rollup reads
   only `sequence`, the dashboard never reads the chain; `audit_verify` would fail on this database
   (bench/audit_scale.py builds a verifiable chain; that costs 20 min here and proves nothing for
   this bench). Secondary indexes are dropped before the insert and rebuilt after.
3. The rollup from cursor 0 (apps.observability.services.roll_up_calls, the beat task's function,
   in batches of 100,000 sequence numbers): wall time, events/s, rows made.
4. 200 requests each, in process through Django's test client (the full middleware stack and
   the admin site's checks, no HTTP server): the admin index with the dashboard, as an auditor
   (every section, and the recorded read of the audit log) and as the admin role; the JSON
   endpoint (1h, 24h, 7d windows); and as a baseline in the same run, the admin's own password
   change page (same base template, no dashboard). p50/p95/max wall ms and CPU ms per request.
5. EXPLAIN ANALYZE of the privileged-actions query and of the 24 h series read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402 - bench/ is not a package
    CLEANUP,
    db_name,
    fresh_db,
    log,
    percentiles,
    portal_env,
    run_main,
    setup_django,
    table,
    time_calls,
)
from harness import machine as host  # noqa: E402

DB_NAME = db_name("sov_dashbench")
TABLE = "audit_auditevent"

# (event type, weight in ‰) for the events that are not gateway calls
OTHER = [
    ("auth.login.success", 20), ("auth.logout", 14), ("auth.2fa.success", 12), ("inference.metadata", 20),
    ("inference.ready", 15), ("audit.search", 10), ("access.grant.create", 5), ("access.grant.revoke", 2),
    ("registry.version.create", 4), ("deployment.request", 3), ("deployment.transition", 9),
    ("auth.token.create", 3), ("keys.kek.rotate", 1), ("compliance.evaluate", 1),
]  # fmt: skip


def fill(cursor, events: int, days: int) -> None:
    """INSERT … SELECT over generate_series: gateway calls (90 %) and other events (10 %)."""
    others = [t for t, w in OTHER for _ in range(w)]
    other_types = "ARRAY[" + ",".join(f"'{t}'" for t in others) + "]"
    sql = f"""
    INSERT INTO {TABLE} (id, timestamp, sequence, actor_id, actor_name, actor_roles, token_id, source_ip,
        user_agent, request_id, event_type, event_group, target_type, target_id, target_display, outcome,
        error_code, details, prev_hash, hash, encoding_version)
    SELECT g, ts, g, u, 'user' || u, '["analyst"]', NULL, ('10.0.' || (u %% 250) || '.' || (u %% 200 + 1))::inet,
        'tritonclient', md5(g::text), et, split_part(et, '.', 1), 'registry.model', m::text,
        'model-' || m, oc, CASE oc WHEN 'failure' THEN 'triton_unavailable' WHEN 'denied' THEN 'invoke_not_permitted'
        ELSE '' END,
        CASE WHEN et LIKE 'inference.%%' THEN jsonb_build_object(
            'model', 'model-' || m, 'version', CASE WHEN oc = 'denied' THEN NULL ELSE v END,
            'status', CASE oc WHEN 'success' THEN 200 WHEN 'failure' THEN 503 ELSE 403 END,
            'latency_ms', round((exp(random() * 8) * 0.9)::numeric, 3), 'server', 'triton-' || (m %% 4))
            || CASE WHEN et IN ('inference.chat', 'inference.completion') THEN jsonb_build_object('llm',
               jsonb_build_object('prompt_tokens', 20 + (g %% 400), 'completion_tokens', 10 + (g %% 300)))
               ELSE '{{}}'::jsonb END
          ELSE jsonb_build_object('note', 'bench') END,
        '', '', 1
    FROM (
        SELECT g,
            now() - make_interval(secs => {days} * 86400.0 * (1 - g::float8 / {events})) AS ts,
            1 + (g * 7919) %% 1000 AS u,
            1 + floor(50 * power(random(), 2))::int AS m,
            1 + (g %% 3) AS v,
            CASE WHEN r < 0.97 THEN 'success' WHEN r < 0.99 THEN 'failure' ELSE 'denied' END AS oc,
            CASE WHEN k < 0.88 THEN 'inference.infer' WHEN k < 0.89 THEN 'inference.chat'
                 WHEN k < 0.90 THEN 'inference.completion'
                 ELSE ({other_types})[1 + floor(random() * {len(others)})::int] END AS et
        FROM (SELECT g::bigint AS g, random() AS r, random() AS k FROM generate_series(%s::bigint, %s::bigint) g) s
    ) x
    """
    step = 1_000_000
    for first in range(1, events + 1, step):
        last = min(first + step - 1, events)
        t0 = time.perf_counter()
        cursor.execute(sql, [first, last])
        log(f"  rows {first:,}–{last:,} in {time.perf_counter() - t0:.1f} s")
    cursor.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), {events})")


def load(events: int, days: int) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = %s::regclass AND NOT x.indisprimary AND NOT x.indisunique",
            [TABLE],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
        t0 = time.perf_counter()
        fill(cursor, events, days)
        insert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, definition in indexes:
            cursor.execute(definition)
        cursor.execute(f"ANALYZE {TABLE}")
        index_s = time.perf_counter() - t0
        cursor.execute(f"SELECT pg_size_pretty(pg_total_relation_size('{TABLE}'))")
        size = cursor.fetchone()[0]
    return {"insert_s": round(insert_s, 1), "indexes_s": round(index_s, 1), "table_size": size}


def roll_up() -> dict:
    from django.db import connection

    from apps.observability.models import CallSeries
    from apps.observability.services import roll_up_calls

    t0, c0 = time.perf_counter(), time.process_time()
    result = roll_up_calls(budget_seconds=24 * 3600, batch_size=100_000)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE observability_callseries")
    return {
        "call_events": result.events,
        "cursor": result.sequence,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "events_per_s": round(result.events / wall),
        "series_rows": CallSeries.objects.count(),
    }


def clients() -> dict:
    from django.test import Client

    from apps.accounts.roles import ADMIN, AUDITOR
    from tests.conftest import make_user, otp_login

    out = {}
    for role, name in ((AUDITOR, "bench-auditor"), (ADMIN, "bench-admin")):
        client = Client()
        otp_login(client, make_user(name, role))
        out[role] = client
    return out


def measure(requests: int) -> list[list]:
    from apps.accounts.roles import ADMIN, AUDITOR

    people = clients()
    cases = [
        ("baseline: /admin/password_change/ (admin role)", people[ADMIN], "/admin/password_change/"),
        ("dashboard page /admin/ (auditor: all sections + audit read)", people[AUDITOR], "/admin/"),
        ("dashboard page /admin/ (admin role)", people[ADMIN], "/admin/"),
        ("JSON ?window=1h (auditor)", people[AUDITOR], "/admin/dashboard/data.json?window=1h"),
        ("JSON ?window=24h (auditor)", people[AUDITOR], "/admin/dashboard/data.json?window=24h"),
        ("JSON ?window=7d (auditor)", people[AUDITOR], "/admin/dashboard/data.json?window=7d"),
    ]
    rows, baseline = [], None
    for label, client, url in cases:

        def get(client=client, url=url):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        wall, cpu = time_calls(get, requests, warmup=5)
        w, c = percentiles([x / 1e3 for x in wall], (50, 95), with_max=True), percentiles([x / 1e3 for x in cpu], (50,))
        baseline = baseline or w["p50"]
        figures = [w["p50"], w["p95"], w["max"], c["p50"]]
        rows.append([label, *(f"{x:.1f}" for x in figures), f"{w['p50'] / baseline:.2f}"])
        log(f"  {rows[-1]}")
    return rows


def explain() -> dict:
    from django.db import connection
    from django.utils import timezone

    from apps.audit.models import AuditEvent
    from apps.observability.models import CallSeries
    from apps.observability.selectors import PRIVILEGED_TYPES

    day_ago = timezone.now() - timedelta(days=1)
    queries = {
        "privileged actions": AuditEvent.objects.filter(event_type__in=PRIVILEGED_TYPES)
        .order_by("-timestamp")
        .values_list("pk", "timestamp", "actor_name", "event_type")[:10],
        "24 h series": CallSeries.objects.filter(period=3600, start__gte=day_ago).values_list(
            "start", "model_name", "calls"
        ),
    }
    out = {}
    for name, qs in queries.items():
        sql, params = qs.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            out[name] = [row[0] for row in cursor.fetchall()]
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sov-dashbench-"))
    CLEANUP.append(lambda: __import__("shutil").rmtree(data, ignore_errors=True))
    fresh_db(DB_NAME, keep=args.keep)
    os.environ.update(
        portal_env(data, DB_NAME, SOVEREIGN_ALLOWED_HOSTS="testserver", REDIS_URL="", SOVEREIGN_DB_CONN_MAX_AGE="0")
    )
    log(f"migrating {DB_NAME}")
    setup_django()
    log(f"filling {args.events:,} audit events over {args.days} days")
    loaded = load(args.events, args.days)
    log(f"loaded: {loaded}")
    log("rolling up from cursor 0")
    rolled = roll_up()
    log(f"rolled up: {rolled}")
    rows = measure(args.requests)
    print(json.dumps({"machine": host(), "events": args.events, "days": args.days, "load": loaded, "rollup": rolled}))
    table(
        f"Dashboard at {args.events:,} audit events, {args.requests} requests each (ms)",
        ["request", "p50", "p95", "max", "CPU p50", "p50 / baseline"],
        rows,
    )
    for name, plan in explain().items():
        print(f"\nEXPLAIN ANALYZE: {name}")
        print("\n".join(plan))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
