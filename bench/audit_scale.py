"""Audit log at scale: bulk-load N sealed synthetic events, then time the auditor's queries, a streamed
export and 32 concurrent writers with the sealer running.

Sets up its own PostgreSQL database (dropped at exit unless --keep) and a temp data dir (checkpoint
signing key). Run from the repository root:

    .venv/bin/python bench/audit_scale.py [--events 10000000] [--keep]

1. `manage.py migrate` on a fresh database.
2. Bulk load with COPY: 1,000 users (zipf-like activity), 50 models, 90 days ending now (diurnal and
   weekly pattern), event types from the catalogue (inference.infer ~85%), outcomes ~97/2/1%. Rows are
   loaded sealed: sequence, prev_hash and hash come from apps.audit.offline_verify.event_hash over the
   chain's canonical record, with a checkpoint signed by the configured (local) signer every
   --checkpoint-every events, so `audit_verify` passes. The append-only trigger fires on UPDATE and
   DELETE only; COPY is an INSERT. Secondary indexes are dropped before the COPY and rebuilt after.
3. The auditor's questions through the real HTTP view (GET /api/v1/audit/events/, bearer token of an
   auditor, first cursor page) and through the filterset alone (SQL only), p50/p95/max; EXPLAIN of each.
4. A ~1,000,000-row export (GET /api/v1/audit/export/jsonl/), streamed to a file: wall time, rows/s,
   peak RSS growth; then the file is verified offline (apps/audit/offline_verify.verify_export).
5. 32 concurrent writers (record_event in a transaction) with the sealer looping every second in its
   own process: events/s and sealing lag (insert to sealed), unthrottled and at 2,000 events/s.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import multiprocessing
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402 - bench/ is not a package
    CLEANUP,
    ROOT,
    db_name,
    fresh_db,
    log,
    percentiles,
    portal_env,
    run_main,
    table,
)
from harness import machine as host  # noqa: E402

DB_NAME = db_name("sovereign_audit_bench")
PG_BENCH = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
TABLE = "audit_auditevent"
NUL = "\\N"  # NULL in COPY text
EVENTS_URL, EXPORT_URL = "/api/v1/audit/events/", "/api/v1/audit/export/jsonl/"
COLUMNS = (
    "id", "timestamp", "sequence", "actor_id", "actor_name", "actor_roles", "token_id", "source_ip", "user_agent",
    "request_id", "event_type", "event_group", "target_type", "target_id", "target_display", "outcome",
    "error_code", "details", "prev_hash", "hash",
)  # fmt: skip

# (event type, share in %, target type): inference dominates; the rest is rarer.
MIX = [
    ("inference.infer", 85.0, "registry.model"),
    ("inference.metadata", 2.0, "registry.model"),
    ("inference.ready", 1.5, "registry.model"),
    ("auth.login.success", 2.0, "auth.user"),
    ("auth.login.failure", 0.4, "auth.user"),
    ("auth.logout", 1.4, "auth.user"),
    ("auth.2fa.success", 1.2, "auth.user"),
    ("auth.session.expired", 0.5, "auth.user"),
    ("auth.token.denied", 0.6, ""),
    ("auth.token.create", 0.3, "accounts.apitoken"),
    ("access.grant.create", 0.5, "registry.model"),
    ("access.grant.revoke", 0.2, "registry.model"),
    ("registry.model.create", 0.1, "registry.model"),
    ("registry.version.create", 0.4, "registry.modelversion"),
    ("deployment.request", 0.3, "deployments.deployment"),
    ("deployment.transition", 0.9, "deployments.deployment"),
    ("deployment.undeploy", 0.1, "deployments.deployment"),
    ("keys.dek.rewrap", 0.04, "keys.keyencryptionkey"),
    ("keys.kek.rotate", 0.01, "keys.keyencryptionkey"),
    ("audit.search", 1.0, ""),
    ("audit.field_change", 0.9, "registry.modelversion"),
    ("audit.export", 0.05, ""),
]
SYSTEM_TYPES = {"auth.token.denied", "deployment.transition", "keys.dek.rewrap"}  # no actor
DENIED_CODES = ["permission_denied", "no_grant", "token_scope"]
FAILURE_CODES = {"inference": ["triton_unavailable", "upstream_timeout", "invalid_input"], "": ["internal_error"]}
USER_AGENTS = [
    "python-requests/2.32.3",
    "sovereign-cli/1.4.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "curl/8.5.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605",
]
DOMAINS = ["sepsis", "chest-xray", "retina", "ecg", "fraud", "aml", "credit", "triage", "radiology", "claims"]
TASKS = ["risk", "triage", "detect", "score", "classify"]
GROUPS = ["auth", "inference", "deployment", "access", "registry", "keys", "audit"]


def stats(values: list[float]) -> dict:
    return percentiles(values, (50, 95), with_max=True)


def env_for(data: Path, export_max: int) -> dict:
    return portal_env(
        data,
        DB_NAME,
        SOVEREIGN_ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
        SOVEREIGN_AUDIT_SIGNING_KEY_FILE=str(data / "keystore" / "audit-signing.pem"),
        SOVEREIGN_AUDIT_EXPORT_MAX_ROWS=str(export_max),
        REDIS_URL="",
    )


def vm(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS, VmHWM)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


# --- 1-2. schema and bulk load ----------------------------------------------------------------


class World:
    """The synthetic population: users, models, addresses, and the time window."""

    def __init__(self, rng: np.random.Generator, user_ids: list[int], now: datetime):
        self.user_ids = user_ids
        self.user_names = [f"user{i:04d}" for i in range(len(user_ids))]
        roles = ["admin"] * 20 + ["security_officer"] * 5 + ["auditor"] * 5
        roles += ["analyst"] * (len(user_ids) - len(roles))
        self.user_roles = [r for r in roles]
        self.user_roles_json = [json.dumps([r]) for r in roles]
        activity = 1.0 / np.arange(1, len(user_ids) + 1)  # zipf-like: rank r does 1/r of rank 1's work
        self.user_p = activity / activity.sum()
        self.models = [f"{d}-{t}" for d in DOMAINS for t in TASKS][:50]
        popularity = 1.0 / np.arange(1, 51) ** 0.8
        self.model_p = popularity / popularity.sum()
        ips = [f"10.{rng.integers(0, 40)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}" for _ in range(290)]
        ips += [f"2001:db8:{i:x}::{rng.integers(1, 0xFFFF):x}" for i in range(1, 11)]
        self.ips = ips
        self.user_home_ip = rng.integers(0, len(ips), size=len(user_ids))
        self.end = now
        self.start = now - timedelta(days=90)


def hour_slots(world: World, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Events per hour slot over the 90 days: diurnal (office hours UTC+0..8) and weekly pattern."""
    diurnal = np.array([0.25, 0.2, 0.2, 0.2, 0.25, 0.35, 0.6, 0.9, 1.3, 1.6, 1.7, 1.6,
                        1.4, 1.5, 1.6, 1.6, 1.4, 1.1, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3])  # fmt: skip
    start_us = int(world.start.timestamp()) // 3600 * 3600 * 1_000_000 + 3_600_000_000
    end_us = int(world.end.timestamp() * 1e6)
    slots = np.arange(start_us, end_us, 3_600_000_000, dtype=np.int64)
    hours = (slots // 3_600_000_000) % 24
    weekday = ((slots // 86_400_000_000) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    weights = diurnal[hours] * np.where(weekday >= 5, 0.35, 1.0)
    weights *= np.linspace(0.85, 1.15, len(slots))  # growth over the quarter
    counts = rng.multinomial(n, weights / weights.sum())
    return slots, counts


class Loader:
    """Generates the events in timestamp order, chains and hashes them, and writes COPY text."""

    def __init__(self, world: World, rng: np.random.Generator, alg: str, signer, checkpoint_every: int):
        from apps.audit.catalogue import EVENT_TYPES, group_of

        self.w, self.rng, self.alg, self.signer, self.every = world, rng, alg, signer, checkpoint_every
        for t, _, _ in MIX:
            assert t in EVENT_TYPES, t
        self.types = [t for t, _, _ in MIX]
        self.groups = [group_of(t) for t in self.types]
        self.targets = [tt for _, _, tt in MIX]
        share = np.array([s for _, s, _ in MIX])
        self.type_p = share / share.sum()
        self.system = np.array([t in SYSTEM_TYPES for t in self.types])
        self.seq, self.prev = 0, "0" * 64
        self.checkpoints: list[dict] = []
        self.last_cp: dict | None = None
        self.sample_request_ids: list[str] = []

    def rows(self, ts_us: np.ndarray) -> list[str]:
        """COPY text lines for the events at these (sorted) timestamps."""
        from apps.audit.offline_verify import event_hash

        rng, w, n = self.rng, self.w, len(ts_us)
        ts = [s + "Z" for s in np.datetime_as_string(ts_us.astype("datetime64[us]"), unit="us").tolist()]
        types = rng.choice(len(self.types), size=n, p=self.type_p)
        users = rng.choice(len(w.user_ids), size=n, p=w.user_p)
        users = np.where(self.system[types], -1, users)
        models = rng.choice(len(w.models), size=n, p=w.model_p).tolist()
        versions = (rng.integers(1, 6, size=n)).tolist()
        u = rng.random(n)
        outcome = np.where(u < 0.97, 0, np.where(u < 0.99, 1, 2))  # success, denied, failure
        ip_idx = np.where(rng.random(n) < 0.8, w.user_home_ip[np.maximum(users, 0)], rng.integers(0, len(w.ips), n))
        ua_idx = rng.choice(len(USER_AGENTS), size=n, p=[0.55, 0.2, 0.15, 0.05, 0.05]).tolist()
        token = np.where(rng.random(n) < 0.7, np.maximum(users, 0) * 2 + 1, 0).tolist()
        latency = rng.lognormal(3.0, 0.8, size=n).astype(np.int64).tolist()  # tenths of ms, median ~2 ms
        codes = rng.integers(0, 3, size=n).tolist()
        hexes = rng.bytes(16 * n).hex()
        shared = (rng.random(n) < 0.05).tolist()  # an HTTP request that wrote two events
        types, users, outcome, ip_idx = types.tolist(), users.tolist(), outcome.tolist(), ip_idx.tolist()
        sample_every = max(1, len(ts_us) // 3)
        lines = []
        rid = ""
        for j in range(n):
            t, us, m = types[j], users[j], models[j]
            etype, group, ttype = self.types[t], self.groups[t], self.targets[t]
            if us >= 0:
                aid, aname, roles, roles_json = w.user_ids[us], w.user_names[us], [w.user_roles[us]], None
                roles_json = w.user_roles_json[us]
            else:
                aid, aname, roles, roles_json = None, "", [], "[]"
            oc = outcome[j]
            if etype == "auth.token.denied":
                oc = 1
            elif etype == "auth.login.failure":
                oc = 2
            outcome_s = ("success", "denied", "failure")[oc]
            if oc == 0:
                err = ""
            elif oc == 1:
                err = "invalid_token" if etype == "auth.token.denied" else DENIED_CODES[codes[j]]
            else:
                err = "bad_credentials" if group == "auth" else FAILURE_CODES.get(group, FAILURE_CODES[""])[0]
                if group == "inference":
                    err = FAILURE_CODES["inference"][codes[j]]
            mname = w.models[m]
            tid, tdisp = "", ""
            if group == "inference":
                status = (200, 403, 503)[oc] if not (oc == 2 and err == "invalid_input") else 400
                details = {"model": mname, "version": versions[j], "latency_ms": latency[j] / 10, "status": status}
                tid, tdisp = str(m + 1), mname
            elif group == "auth":
                if etype == "auth.token.create":
                    details = {"before": None, "after": {"name": "ci", "scopes": ["invoke", "read"], "days": 30}}
                    tid, tdisp = str(j % 5000 + 1), f"{aname}:ci"
                elif etype == "auth.token.denied":
                    details = {"path": f"/v2/models/{mname}/infer", "reason": "expired"}
                else:
                    details = {"method": "password+totp"} if etype == "auth.login.success" else {}
                    tid, tdisp = (str(aid), aname) if aid is not None else ("", "")
            elif group == "access":
                grant = {"permission": "invoke_model", "user": w.user_names[(j * 7) % len(w.user_names)]}
                before, after = (None, grant) if etype == "access.grant.create" else (grant, None)
                details = {"before": before, "after": after}
                tid, tdisp = str(m + 1), mname
            elif group == "registry":
                after = {"name": mname, "version": versions[j], "sha256": hexes[32 * j : 32 * j + 16]}
                details = {"before": None, "after": after}
                tid, tdisp = str(m + 1), mname if etype == "registry.model.create" else f"{mname} v{versions[j]}"
            elif group == "deployment":
                states = [("pending", "active"), ("active", "draining"), ("draining", "stopped")][codes[j]]
                details = {"before": {"state": states[0]}, "after": {"state": states[1]}, "server": f"gpu-{m % 8:02d}"}
                tid, tdisp = str(m * 3 + 1), f"{mname}@gpu-{m % 8:02d}"
            elif group == "keys":
                details = {"before": {"kek": "local:3fa1c2"}, "after": {"kek": "local:9be07d"}, "count": 500}
                tid, tdisp = "2", "local:9be07d"
            elif etype == "audit.field_change":
                details = {"field": "status", "before": {"status": "staged"}, "after": {"status": "approved"}}
                tid, tdisp = str(m * 5 + versions[j]), f"{mname} v{versions[j]}"
            elif etype == "audit.export":
                details = {"format": "jsonl", "filters": {"event_group": "inference"}, "rows": latency[j] * 10}
            else:
                details = {"actor": w.user_names[(j * 13) % len(w.user_names)], "event_group": "inference"}
            if not (shared[j] and rid):
                rid = hexes[32 * j : 32 * j + 32]
            ip = w.ips[ip_idx[j]] if us >= 0 or group == "auth" else None
            tok = token[j] if us >= 0 and token[j] else None
            ua = USER_AGENTS[ua_idx[j]] if ip is not None else ""
            self.seq += 1
            record = {
                "sequence": self.seq,
                "timestamp": ts[j],
                "actor_id": aid,
                "actor_name": aname,
                "actor_roles": roles,
                "token_id": tok,
                "source_ip": ip,
                "user_agent": ua,
                "request_id": rid,
                "event_type": etype,
                "event_group": group,
                "target_type": ttype,
                "target_id": tid,
                "target_display": tdisp,
                "outcome": outcome_s,
                "error_code": err,
                "details": details,
                "prev_hash": self.prev,
            }
            h = event_hash(record, self.alg)
            dj = json.dumps(details, separators=(",", ":"))
            if "\\" in dj:
                dj = dj.replace("\\", "\\\\")
            lines.append(
                f"{self.seq}\t{ts[j]}\t{self.seq}\t{NUL if aid is None else aid}\t{aname}\t{roles_json}\t"
                f"{NUL if tok is None else tok}\t{ip or NUL}\t{ua}\t{rid}\t{etype}\t"
                f"{group}\t{ttype}\t{tid}\t{tdisp}\t{outcome_s}\t{err}\t{dj}\t{self.prev}\t{h}\n"
            )
            self.prev = h
            if j % sample_every == sample_every // 2:
                self.sample_request_ids.append(rid)
            if self.seq % self.every == 0:
                self.checkpoint(ts[j])
        return lines

    def checkpoint(self, ts: str) -> None:
        from apps.audit.offline_verify import checkpoint_digest, checkpoint_payload, format_timestamp

        created = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) + timedelta(seconds=1)
        created = min(created, datetime.now(UTC))
        record = {
            "sequence": self.seq,
            "head": self.prev,
            "hash_alg": self.alg,
            "created_at": format_timestamp(created),
            "prev": checkpoint_digest(self.last_cp) if self.last_cp else "",
            "key_id": self.signer.key_id,
            "sig_alg": self.signer.sig_alg,
        }
        record["signature"] = base64.b64encode(self.signer.sign(checkpoint_payload(record))).decode()
        self.last_cp = record
        self.checkpoints.append({**record, "created_at": created})


def secondary_indexes(conn) -> list[tuple[str, str, str | None, str | None]]:
    """(index, CREATE INDEX statement, constraint, constraint definition) of every non-primary index."""
    return conn.execute(
        """SELECT i.relname, pg_get_indexdef(i.oid), c.conname, pg_get_constraintdef(c.oid)
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
           LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
           WHERE x.indrelid = %s::regclass AND NOT x.indisprimary ORDER BY i.relname""",
        [TABLE],
    ).fetchall()


def bulk_load(n: int, world: World, loader: Loader, rng: np.random.Generator, res: dict) -> None:
    with psycopg.connect(PG_BENCH) as conn:
        if conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]:  # noqa: S608
            raise RuntimeError("the audit table is not empty after migrate; the bench expects a fresh log")
        indexes = secondary_indexes(conn)
        for name, _, con, _ in indexes:
            conn.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT {con}" if con else f"DROP INDEX {name}")
        conn.commit()
        log(f"dropped {len(indexes)} secondary indexes for the load: {', '.join(i[0] for i in indexes)}")
        conn.execute("SET synchronous_commit = off")
        slots, counts = hour_slots(world, n, rng)
        t0, done, day = time.perf_counter(), 0, 24
        for k in range(0, len(slots), day):
            parts = []
            for s, c in zip(slots[k : k + day].tolist(), counts[k : k + day].tolist(), strict=True):
                span = min(3_600_000_000, int(world.end.timestamp() * 1e6) - s)
                parts.append(np.sort(s + rng.integers(0, max(span, 1), size=c)))
            ts_us = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
            if not len(ts_us):
                continue
            lines = loader.rows(ts_us)
            with conn.cursor() as cur, cur.copy(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for b in range(0, len(lines), 5000):
                    copy.write("".join(lines[b : b + 5000]).encode())
            conn.commit()
            done += len(lines)
            rate = done / (time.perf_counter() - t0)
            if done < n and (done * 20 // n) == ((done - len(lines)) * 20 // n):
                continue  # log every 5%
            log(f"  loaded {done:,}/{n:,} events ({rate:,.0f}/s, ETA {(n - done) / rate:.0f} s)")
        res["load_s"] = time.perf_counter() - t0
        res["load_rows_per_s"] = done / res["load_s"]
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), %s)", [done])
        conn.commit()
        log(f"loaded {done:,} events in {res['load_s']:.0f} s; rebuilding the indexes")
        conn.execute("SET maintenance_work_mem = '1GB'")
        res["index_build_s"] = {}
        for name, ddl, con, condef in indexes:
            t = time.perf_counter()
            conn.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {con} {condef}" if con else ddl)
            conn.commit()
            res["index_build_s"][name] = time.perf_counter() - t
            log(f"  {name}: {res['index_build_s'][name]:.1f} s")
        conn.autocommit = True
        t = time.perf_counter()
        conn.execute(f"VACUUM (ANALYZE) {TABLE}")
        res["vacuum_analyze_s"] = time.perf_counter() - t
        log(f"VACUUM (ANALYZE): {res['vacuum_analyze_s']:.1f} s")
    from apps.audit.models import AuditCheckpoint

    t = time.perf_counter()
    AuditCheckpoint.objects.bulk_create([AuditCheckpoint(**cp) for cp in loader.checkpoints])
    res["checkpoints"] = len(loader.checkpoints)
    res["events"] = done


# --- 3. the auditor's questions -----------------------------------------------------------------


def query_kinds(world: World, loader: Loader, rng: random.Random) -> dict:
    """name -> a function returning fresh parameters for one repetition."""
    lo, hi = world.start, world.end

    def window(days: float) -> dict:
        start = lo + timedelta(seconds=rng.uniform(0, (hi - lo).total_seconds() - days * 86400))
        return {"since": start.isoformat(), "until": (start + timedelta(days=days)).isoformat()}

    def user() -> str:
        rank = rng.randrange(20) if rng.random() < 0.5 else rng.randrange(20, len(world.user_names))
        return world.user_names[rank]

    def model_text() -> str:
        name = rng.choice(world.models)
        return name.upper() if rng.random() < 0.5 else name

    return {
        "a. one user, a week": lambda: {"actor": user(), **window(7)},
        "b. one event group, a day": lambda: {"event_group": rng.choice(GROUPS), **window(1)},
        "c. one request id": lambda: {"request_id": rng.choice(loader.sample_request_ids)},
        "d. failures, a month": lambda: {"outcome": "failure", **window(30)},
        "e1. text q=, a day": lambda: {"q": model_text(), **window(1)},
        "e2. text q=, a week": lambda: {"q": model_text(), **window(7)},
        # The worst case: text that is in no event, so every event of the period is read.
        "e3. text q= no match, a day": lambda: {"q": f"zq{rng.getrandbits(32):08x}", **window(1)},
        "e4. text q= no match, a week": lambda: {"q": f"zq{rng.getrandbits(32):08x}", **window(7)},
    }


def first_page_sql(params: dict) -> int:
    from apps.audit.filters import AuditEventFilter
    from apps.audit.models import AuditEvent

    fs = AuditEventFilter(params, queryset=AuditEvent.objects.all())
    assert fs.is_valid(), fs.errors
    return len(list(fs.qs.order_by("-timestamp", "-id")[:51]))


def explain(params: dict) -> dict:
    from apps.audit.filters import AuditEventFilter
    from apps.audit.models import AuditEvent

    fs = AuditEventFilter(params, queryset=AuditEvent.objects.all())
    assert fs.is_valid(), fs.errors
    plan = fs.qs.order_by("-timestamp", "-id")[:51].explain(analyze=True, buffers=True)
    lines = plan.splitlines()
    used = sorted(
        set(re.findall(r"(?:Index Scan|Index Only Scan)(?: Backward)? using (\w+)|Bitmap Index Scan on (\w+)", plan))
    )
    used = sorted({a or b for a, b in used})
    top = next((ln.strip() for ln in lines[1:] if "->" in ln), lines[0]).lstrip("-> ").split("  ")[0]
    exec_ms = float(re.search(r"Execution Time: ([\d.]+) ms", plan).group(1))
    return {"plan_top": lines[0].split("  (")[0], "under_limit": top, "indexes": used, "exec_ms": exec_ms,
            "plan": plan}  # fmt: skip


def measure_queries(client, kinds: dict, reps: int) -> dict:
    out = {}
    client.get(EVENTS_URL, {"event_group": "auth"})  # warm-up: first request through Django and DRF
    for name, fresh in kinds.items():
        api, sql, cold, warm, rows = [], [], [], [], []
        params = None
        for r in range(reps):
            if r % 2 == 0:  # a new question; the odd repetitions repeat it (warm)
                params = fresh()
            t = time.perf_counter()
            resp = client.get(EVENTS_URL, params)
            ms = (time.perf_counter() - t) * 1e3
            if resp.status_code != 200:
                raise RuntimeError(f"{name} {params}: HTTP {resp.status_code} {resp.content[:300]!r}")
            rows.append(len(resp.json()["results"]))
            api.append(ms)
            (cold if r % 2 == 0 else warm).append(ms)
            t = time.perf_counter()
            first_page_sql(params)
            sql.append((time.perf_counter() - t) * 1e3)
        ex = explain(params)
        out[name] = {"api_ms": stats(api), "sql_ms": stats(sql), "cold_p50": statistics.median(cold),
                     "warm_p50": statistics.median(warm), "rows_p50": statistics.median(rows), "explain": ex,
                     "example": params}  # fmt: skip
        log(f"  {name}: API p50 {out[name]['api_ms']['p50']:.1f} ms p95 {out[name]['api_ms']['p95']:.1f} ms; "
            f"SQL p95 {out[name]['sql_ms']['p95']:.1f} ms; {ex['under_limit']} {ex['indexes']}")  # fmt: skip
    return out


# --- 4. export ------------------------------------------------------------------------------------


def measure_export(client, rows_wanted: int, n: int, data: Path) -> dict:
    from apps.audit.models import AuditEvent
    from apps.audit.offline_verify import load_public_keys, verify_export
    from apps.audit.signing import get_signer, public_pem

    hi = max(1, n - n // 20)
    lo = max(1, hi - rows_wanted + 1)
    ts_lo = AuditEvent.objects.get(sequence=lo).timestamp
    ts_hi = AuditEvent.objects.get(sequence=hi).timestamp + timedelta(microseconds=1)
    params = {"since": ts_lo.isoformat(), "until": ts_hi.isoformat()}
    path = data / "export.jsonl"
    peak_reset = reset_peak_rss()
    rss0 = vm("VmRSS")
    samples, lines, size = [], 0, 0
    t0 = time.perf_counter()
    resp = client.get(EXPORT_URL, params)
    if resp.status_code != 200:
        raise RuntimeError(f"export: HTTP {resp.status_code} {resp.content[:300]!r}")
    first = None
    with open(path, "wb") as fh:
        for chunk in resp.streaming_content:
            if first is None:
                first = time.perf_counter() - t0
            fh.write(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            if lines % 100_000 == 0:
                samples.append(vm("VmRSS"))
    wall = time.perf_counter() - t0
    resp.close()
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 4096))
        footer = json.loads(fh.read().decode().strip().rsplit("\n", 1)[-1])
    out = {"params": params, "wall_s": wall, "first_byte_s": first, "lines": lines, "bytes": size,
           "events": footer.get("events"), "links": footer.get("links"), "checkpoints": footer.get("checkpoints"),
           "rows_per_s": (footer.get("events") or 0) / wall, "rss_before_mib": rss0 / 1024,
           "peak_rss_growth_mib": round((vm("VmHWM") - rss0) / 1024, 1) if peak_reset else None,
           "rss_samples_mib": [round(s / 1024, 1) for s in samples[:: max(1, len(samples) // 10)]]}  # fmt: skip
    log(f"  export: {out['events']:,} events in {wall:.1f} s ({out['rows_per_s']:,.0f}/s), "
        f"peak RSS growth {out['peak_rss_growth_mib']} MiB; verifying the file offline")  # fmt: skip
    keys = load_public_keys([public_pem(get_signer()).encode()])
    t = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        report = verify_export(fh, keys)
    out["offline_verify"] = {"ok": report["ok"], "status": report["status"], "s": time.perf_counter() - t}
    if not report["ok"]:
        out["offline_verify"]["report"] = {k: v for k, v in report.items() if k != "selection"}
    path.unlink()
    return out


# --- 5. concurrent writers and the sealer ----------------------------------------------------------


def sealer_loop(stop, queue) -> None:
    """The beat task's loop: seal_pending every second (at once when a round took longer)."""
    from django.db import connections

    from apps.audit.chain import chain_head, seal_pending

    connections.close_all()
    tick = time.monotonic()
    while not stop.is_set():
        t = time.time()
        result = seal_pending()
        queue.put((time.time(), chain_head()[0], result.sealed, time.time() - t))
        tick += 1.0
        time.sleep(max(0.0, tick - time.monotonic()))
        tick = max(tick, time.monotonic() - 1.0)


def writer_proc(threads: int, seconds: float, per_thread_rate: float | None, queue) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection, connections, transaction

    from apps.audit.services import Source, record_event
    from apps.core.context import bound_request_id

    connections.close_all()
    users = list(get_user_model().objects.filter(username__startswith="user").order_by("id")[:200])
    connection.close()
    start = time.monotonic() + 0.5
    end = start + seconds

    def work(k: int, out: dict) -> None:
        rnd = random.Random(k)
        n, lat = 0, []
        out["n"], out["lat"], out["error"] = 0, lat, None
        time.sleep(max(0.0, start - time.monotonic()))
        while (t0 := time.monotonic()) < end:
            user = users[min(int(rnd.paretovariate(1.0)) - 1, len(users) - 1)]
            source = Source(
                ip=f"10.0.{k % 250}.{rnd.randrange(1, 250)}", user_agent="python-requests/2.32.3", token_id=k
            )
            details = {"model": "sepsis-risk", "version": 3, "latency_ms": rnd.randrange(5, 400) / 10, "status": 200}
            with bound_request_id(uuid.uuid4().hex), transaction.atomic():
                record_event("inference.infer", actor=user, source=source, target_type="registry.model",
                             target_id="1", target_display="sepsis-risk", details=details)  # fmt: skip
            n += 1
            out["n"] = n
            lat.append(time.monotonic() - t0)
            if per_thread_rate:
                time.sleep(max(0.0, start + n / per_thread_rate - time.monotonic()))
        connection.close()

    def guarded(k: int, out: dict) -> None:
        try:
            work(k, out)
        except Exception as exc:  # reported, and the bench stops
            out["error"] = repr(exc)

    results = [{} for _ in range(threads)]
    pool = [threading.Thread(target=guarded, args=(os.getpid() % 1000 * 100 + i, results[i])) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    errors = [r["error"] for r in results if r["error"]]
    queue.put((sum(r["n"] for r in results), [x for r in results for x in r["lat"]], errors))


def measure_writers(writers: int, procs: int, seconds: float, rate: float | None) -> dict:
    from django.db import connection, connections

    from apps.audit.models import AuditEvent

    ctx = multiprocessing.get_context("fork")
    first_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    connections.close_all()
    stop, sealed_q, write_q = ctx.Event(), ctx.Queue(), ctx.Queue()
    sealer = ctx.Process(target=sealer_loop, args=(stop, sealed_q), daemon=True)
    sealer.start()
    time.sleep(1.5)  # let it seal what is pending (the bench's own search events) first
    per_proc = [writers // procs + (1 if i < writers % procs else 0) for i in range(procs)]
    per_thread = rate / writers if rate else None
    t0 = time.time()
    workers = [ctx.Process(target=writer_proc, args=(k, seconds, per_thread, write_q)) for k in per_proc]
    for p in workers:
        p.start()
    done = [write_q.get(timeout=seconds + 120) for _ in workers]
    errors = [e for d in done for e in d[2]]
    if errors:
        stop.set()
        raise RuntimeError(f"{len(errors)} writer threads failed, e.g. {errors[0]}")
    for p in workers:
        p.join()
    inserted = sum(d[0] for d in done)
    lat_ms = [x * 1e3 for d in done for x in d[1]]
    drain_deadline = time.time() + 60
    seal_log = []
    last_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    while time.time() < drain_deadline:
        while not sealed_q.empty():
            seal_log.append(sealed_q.get())
        if not AuditEvent.objects.filter(sequence__isnull=True, id__lte=last_id).exists():
            break
        time.sleep(0.5)
    time.sleep(1.2)
    stop.set()
    sealer.join(30)
    while not sealed_q.empty():
        seal_log.append(sealed_q.get())
    rows = list(
        AuditEvent.objects.filter(id__gt=first_id, event_type="inference.infer", sequence__isnull=False)
        .values_list("sequence", "timestamp")
        .order_by("sequence")
    )
    unsealed = AuditEvent.objects.filter(id__gt=first_id, sequence__isnull=True).count()
    connection.close()
    seal_log.sort()
    times, heads = [s[0] for s in seal_log], [s[1] for s in seal_log]
    lags = []
    for seq, ts in rows:
        k = bisect.bisect_left(heads, seq)  # heads grow with time
        if k < len(times):
            lags.append(times[k] - ts.timestamp())
    rounds = [s for s in seal_log if s[2]]
    out = {"writers": writers, "processes": procs, "seconds": seconds, "target_rate": rate, "inserted": inserted,
           "events_per_s": inserted / seconds, "insert_ms": stats(lat_ms), "unsealed_after_drain": unsealed,
           "sealing_lag_s": stats(lags) if lags else None, "seal_rounds": len(rounds),
           "seal_round_s": stats([s[3] for s in rounds]) if rounds else None,
           "events_per_round_max": max((s[2] for s in rounds), default=0), "elapsed_s": time.time() - t0}  # fmt: skip
    lag = out["sealing_lag_s"] or {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    log(f"  {inserted:,} events in {seconds:.0f} s = {out['events_per_s']:,.0f}/s; sealing lag p50 "
        f"{lag['p50']:.2f} s p95 {lag['p95']:.2f} s max {lag['max']:.2f} s")  # fmt: skip
    return out


# --- report ---------------------------------------------------------------------------------------


def sizes() -> dict:
    with psycopg.connect(PG_BENCH) as conn:
        q = conn.execute
        out = {
            "rows": q(f"SELECT count(*) FROM {TABLE}").fetchone()[0],  # noqa: S608
            "table_mib": q("SELECT pg_relation_size(%s::regclass) / 1048576.0", [TABLE]).fetchone()[0],
            "total_mib": q("SELECT pg_total_relation_size(%s::regclass) / 1048576.0", [TABLE]).fetchone()[0],
            "toast_mib": q(
                "SELECT coalesce(pg_total_relation_size(reltoastrelid), 0) / 1048576.0 FROM pg_class "
                "WHERE oid = %s::regclass",
                [TABLE],
            ).fetchone()[0],
            "indexes_mib": dict(
                q(
                    "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) / 1048576.0 FROM pg_index "
                    "WHERE indrelid = %s::regclass ORDER BY 2 DESC",
                    [TABLE],
                ).fetchall()
            ),
        }
    return {k: (float(v) if not isinstance(v, dict | int) else v) for k, v in out.items()}


def machine() -> dict:
    with psycopg.connect(PG_BENCH) as conn:
        names = ("server_version", "shared_buffers", "work_mem", "max_wal_size", "synchronous_commit", "jit")
        pg = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in names}
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {**host(), "mem_gib": round(int(mem) / 2**20, 1), "postgres": pg, "loadavg": os.getloadavg()}


def report(res: dict) -> None:
    m, s, ld = res["machine"], res["sizes"], res["load"]
    print(f"== Sovereign audit log at scale, {res['date']}, {m['nproc']} x {m['cpu']}, {m['mem_gib']} GiB, "
          f"PostgreSQL {m['postgres']['server_version']} (shared_buffers {m['postgres']['shared_buffers']}), "
          f"load {m['loadavg']}")  # fmt: skip
    print(f"rows {s['rows']:,}; table {s['table_mib']:.0f} MiB (toast {s['toast_mib']:.0f}), "
          f"with indexes {s['total_mib']:.0f} MiB; checkpoints {ld['checkpoints']}")  # fmt: skip
    rows = [[k, f"{v:.0f}"] for k, v in s["indexes_mib"].items()]
    table("Index sizes (MiB)", ["index", "MiB"], rows)
    rows = [["generate + hash + COPY", f"{ld['load_s']:.0f}", f"{ld['load_rows_per_s']:,.0f} rows/s"]]
    rows += [[f"index {k}", f"{v:.1f}", ""] for k, v in ld["index_build_s"].items()]
    rows += [["VACUUM (ANALYZE)", f"{ld['vacuum_analyze_s']:.1f}", ""]]
    if "verify_chain" in res:
        v = res["verify_chain"]
        rows.append([f"audit verify_chain: {v['status']}", f"{v['s']:.1f}", ""])
    table("1. Bulk load (s)", ["", "s", ""], rows)
    rows = []
    for name, q in res["queries"].items():
        a, sq, ex = q["api_ms"], q["sql_ms"], q["explain"]
        rows.append([name, f"{a['p50']:.1f}", f"{a['p95']:.1f}", f"{a['max']:.1f}", f"{sq['p50']:.1f}",
                     f"{sq['p95']:.1f}", f"{q['cold_p50']:.1f}/{q['warm_p50']:.1f}", f"{q['rows_p50']:.0f}",
                     f"{ex['exec_ms']:.1f}", ",".join(ex["indexes"]) or "none"])  # fmt: skip
    header = [
        "query (first page)",
        "API p50",
        "p95",
        "max",
        "SQL p50",
        "p95",
        "new/rep p50",
        "rows",
        "EXPLAIN",
        "index",
    ]
    table(f"2. Auditor queries, ms ({res['config']['reps']} reps each)", header, rows)
    for name, q in res["queries"].items():
        print(f"  {name}: {q['explain']['plan_top']} -> {q['explain']['under_limit']}")
    e = res["export"]
    print(f"\n3. Export {EXPORT_URL} {e['params']}")
    print(f"  {e['events']:,} events + {e['links']:,} links + {e['checkpoints']} checkpoints, "
          f"{e['bytes'] / 2**20:.0f} MiB, "
          f"{e['wall_s']:.1f} s ({e['rows_per_s']:,.0f} events/s), first byte {e['first_byte_s']:.2f} s")  # fmt: skip
    print(f"  RSS before {e['rss_before_mib']:.0f} MiB, peak growth {e['peak_rss_growth_mib']} MiB, "
          f"samples {e['rss_samples_mib']}")  # fmt: skip
    print(f"  offline verification of the file: {e['offline_verify']}")
    rows = []
    for w in res["writers"]:
        lag, ins = w["sealing_lag_s"] or {}, w["insert_ms"]
        pace = "unthrottled" if not w["target_rate"] else f"{w['target_rate']:.0f}/s"
        rows.append([f"{w['writers']} writers, {pace}",
                     f"{w['events_per_s']:,.0f}", f"{ins['p50']:.1f}/{ins['p95']:.1f}",
                     *(f"{lag.get(k, float('nan')):.2f}" for k in ("p50", "p95", "max")),
                     w["unsealed_after_drain"], w["events_per_round_max"]])  # fmt: skip
    header = ["", "events/s", "insert p50/p95 ms", "lag p50 s", "p95", "max", "unsealed", "max/round"]
    table("4. Concurrent writers + sealer (record_event in a transaction; seal_pending every 1 s)", header, rows)
    print("\n== JSON summary")
    slim = json.loads(json.dumps(res, default=str))
    for q in slim["queries"].values():
        q["explain"].pop("plan")
    print(json.dumps(slim, indent=2))


def run(args) -> dict:
    n = args.events
    data = Path(tempfile.mkdtemp(prefix="sovereign-audit-bench-"))
    CLEANUP.append(lambda: shutil.rmtree(data, ignore_errors=True))
    env = env_for(data, max(5_000_000, args.export_rows * 2))
    os.environ.update(env)
    log(f"database {DB_NAME}, data dir {data}, {n:,} events")
    fresh_db(DB_NAME, keep=args.keep)
    t = time.perf_counter()
    argv = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, check=True)
    log(f"migrated in {time.perf_counter() - t:.1f} s")
    import django

    django.setup()
    CLEANUP.append(lambda: __import__("django.db").db.connections.close_all())
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from apps.accounts.services import issue_token
    from apps.audit.chain import hash_alg
    from apps.audit.signing import get_signer

    res: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    res["config"] = {"events": n, "reps": args.reps, "checkpoint_every": args.checkpoint_every, "seed": args.seed,
                     "export_rows": args.export_rows, "writers": args.writers, "writer_processes": args.writer_procs,
                     "writer_seconds": args.writer_seconds}  # fmt: skip
    rng = np.random.default_rng(args.seed)
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"user{i:04d}", email=f"user{i:04d}@example.org", password="!") for i in range(1000)]
    )
    world = World(rng, [u.pk for u in users], datetime.now(UTC))
    groups = {g.name: g for g in Group.objects.all()}
    through = User.groups.through
    through.objects.bulk_create(
        [through(user_id=u.pk, group_id=groups[r].pk) for u, r in zip(users, world.user_roles, strict=True)]
    )
    loader = Loader(world, rng, hash_alg(), get_signer(), args.checkpoint_every)
    res["load"] = {}
    bulk_load(n, world, loader, rng, res["load"])
    if n <= args.verify_max:
        from apps.audit.verify import verify_chain

        t = time.perf_counter()
        report = verify_chain()
        res["verify_chain"] = {"ok": report["ok"], "status": report["status"], "s": time.perf_counter() - t}
        log(f"verify_chain: {res['verify_chain']}")
        if not report["ok"]:
            raise RuntimeError(f"the loaded chain does not verify: {report}")
    auditor = User.objects.create_user("bench-auditor", "auditor@example.org", secrets.token_urlsafe(16), is_staff=True)
    auditor.groups.add(groups["auditor"])
    token = issue_token(user=auditor, name="bench", days=1, actor=None)[1]  # issued on the host
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    res["sizes"] = sizes()
    res["machine"] = machine()
    log(f"queries: {args.reps} repetitions each")
    res["queries"] = measure_queries(client, query_kinds(world, loader, random.Random(args.seed)), args.reps)
    rows = min(args.export_rows, n // 2)
    log(f"export of ~{rows:,} rows")
    res["export"] = measure_export(client, rows, n, data)
    res["writers"] = []
    log(f"writers: {args.writers} in {args.writer_procs} processes, unthrottled, {args.writer_seconds:.0f} s")
    res["writers"].append(measure_writers(args.writers, args.writer_procs, args.writer_seconds, None))
    reached = res["writers"][0]["events_per_s"]
    rate = 2000.0 if reached >= 2000 else round(reached * 0.8, -1)
    log(f"writers: paced at {rate:.0f} events/s, {args.writer_seconds:.0f} s")
    res["writers"].append(measure_writers(args.writers, args.writer_procs, args.writer_seconds, rate))
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=30, help="repetitions of each query (half of them repeats)")
    parser.add_argument("--checkpoint-every", type=int, default=100_000)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--writer-procs", type=int, default=2, help="processes the writer threads are spread over")
    parser.add_argument("--writer-seconds", type=float, default=20.0)
    parser.add_argument("--verify-max", type=int, default=1_000_000, help="run verify_chain when events <= this")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    return run_main(lambda: report(run(args)))


if __name__ == "__main__":
    sys.exit(main())
