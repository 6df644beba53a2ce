"""What the bench scripts share: logging, percentiles and tables, per-call wall/CPU timing, CPU
accounting per process group, a throw-away PostgreSQL database and portal environment, tritonserver
and gunicorn started and stopped, and a main() guard that always cleans up.

    from harness import CLEANUP, log, percentiles, run_main   # (bench/ is the script's directory)

Each script keeps its own scenario and report; only the machinery lives here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLEANUP: list[Callable[[], object]] = []  # run in reverse order when main() ends, however it ends
MARKS: dict[str, str] = {}  # process group -> a substring of its processes' command lines (CPU accounting)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentiles(values: list[float], points: tuple[int, ...] = (50, 90, 99), *, with_max: bool = False) -> dict:
    """{"p50": …, "p90": …, "p99": …, "n": …} (inclusive method; one value is every percentile)."""
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else list(values) * 99
    out = {f"p{p}": q[p - 1] for p in points}
    if with_max:
        out["max"] = max(values)
    out["n"] = len(values)
    return out


def table(title: str, header: list, rows: list[list]) -> None:
    """Print a left-aligned first column and right-aligned others; an all-empty header is not printed."""
    widths = [max(len(str(cell)) for cell in column) + 2 for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for row in [header, *rows] if any(header) else rows:
        print(f"{row[0]:<{widths[0]}}" + "".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:], strict=True)))


# --- timing ---------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Run `fn` once; (wall µs, this thread's CPU µs)."""
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e3, (time.thread_time_ns() - c0) / 1e3


def time_calls(fn: Callable[[], object], n: int, warmup: int = 0) -> tuple[list[float], list[float]]:
    """`warmup` untimed calls, then `n` timed ones: (wall µs per call, CPU µs per call)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(n):
        w, c = timed(fn)
        wall.append(w)
        cpu.append(c)
    return wall, cpu


def cpu_snapshot() -> dict:
    """CPU seconds used so far by each process of a MARKS group and by this one (the load generator), and by
    the whole machine; keyed by (group, pid)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat, cmd = (d / "stat").read_text(), (d / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        me = d.name == str(os.getpid())
        group = "load generator" if me else next((g for g, mark in MARKS.items() if mark in cmd), None)
        if group:
            fields = stat.rsplit(")", 1)[1].split()
            out[(group, d.name)] = (int(fields[11]) + int(fields[12])) / tick
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    out[("machine busy", "")] = (sum(ticks) - ticks[3] - ticks[4]) / tick
    return out


def cpu_used(c0: dict, c1: dict, seconds: float, requests: int) -> dict:
    """CPU used between two snapshots (a process started in between counts from zero), per group."""
    used = dict.fromkeys([*MARKS, "load generator", "machine busy"], 0.0)
    for (group, pid), value in c1.items():
        used[group] += value - c0.get((group, pid), 0.0)
    used["other processes"] = used["machine busy"] - sum(v for g, v in used.items() if g != "machine busy")
    per_request = {g: v * 1e3 / max(requests, 1) for g, v in used.items()}
    return {"cores_busy": {g: v / seconds for g, v in used.items()}, "cpu_ms_per_request": per_request}


def machine() -> dict:
    cpu = [ln.split(":")[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
    return {"nproc": os.cpu_count(), "cpu": cpu[0] if cpu else "?", "python": sys.version.split()[0]}


# --- the portal's database and environment --------------------------------------------------------


def db_name(default: str) -> str:
    """The bench's own database: `default`, or BENCH_DB_NAME (to run beside another bench)."""
    return os.environ.get("BENCH_DB_NAME", default)


def redis_url(default: str) -> str:
    return os.environ.get("BENCH_REDIS_URL", default)


def recreate_db(name: str, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {name}")


def fresh_db(name: str, keep: bool = False) -> None:
    """Create `name` empty; drop it at exit unless `keep`."""
    if not keep:
        CLEANUP.append(lambda: recreate_db(name, drop_only=True))
    recreate_db(name)


def portal_env(data: Path, db: str, **extra: str) -> dict:
    """The portal's environment on `db` with its data directory `data` (a fresh secret key, the local
    KEK file under `data`); `extra` adds or overrides variables."""
    return {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}",
        "SOVEREIGN_DEBUG": "false",  # DEBUG would keep every query in memory
        "SOVEREIGN_SECRET_KEY": secrets.token_urlsafe(50),
        "SOVEREIGN_DATA_DIR": str(data),
        "SOVEREIGN_ARTIFACT_DIR": str(data / "artifacts"),
        "SOVEREIGN_LOCAL_KEK_FILE": str(data / "keystore" / "kek.bin"),
        **extra,
    }


def setup_django(migrate: bool = True) -> None:
    """django.setup() in this process (os.environ already holds portal_env), migrate; connections closed
    at exit."""
    import django
    from django.core.management import call_command

    django.setup()
    CLEANUP.append(lambda: __import__("django.db").db.connections.close_all())
    if migrate:
        call_command("migrate", "--noinput", verbosity=0)


def flushed_redis(url: str):
    """The Redis db at `url`, emptied now and at exit."""
    import redis

    rds = redis.Redis.from_url(url)
    rds.flushdb()
    CLEANUP.append(rds.flushdb)
    return rds


# --- servers --------------------------------------------------------------------------------------


def start_triton(data: Path, env: dict):
    """A tritonserver under `data`/triton whose python backend unwraps with the portal's local KEK file."""
    from inference_backend.server import LocalTritonServer, free_port

    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    kek = {"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": env["SOVEREIGN_LOCAL_KEK_FILE"]}
    server = LocalTritonServer(data / "triton", *sorted(ports), extra_env=kek)
    CLEANUP.append(server.stop)
    server.start(timeout=180)
    return server


GUNICORN = "gthread, 2 workers x 8 threads"


def start_gunicorn(data: Path, env: dict) -> int:
    """gunicorn serving portal.wsgi as in production (GUNICORN); returns its port once /healthz answers."""
    from inference_backend.server import free_port

    port, gunicorn = free_port(), str(Path(sys.executable).parent / "gunicorn")
    argv = [gunicorn, "portal.wsgi", "-k", "gthread", "--workers", "2", "--threads", "8", "-b", f"127.0.0.1:{port}"]
    with open(data / "gunicorn.log", "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop() -> None:  # SIGTERM to the master (it stops its workers), then SIGKILL to its group's leftovers
        proc.terminate()
        try:
            proc.wait(15)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    CLEANUP.append(stop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            url, headers = f"http://127.0.0.1:{port}/healthz", {"X-Forwarded-Proto": "https"}
            if urllib3.request("GET", url, headers=headers, timeout=2, retries=False).status == 200:
                return port
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not become ready; see {data / 'gunicorn.log'}")


# --- main -----------------------------------------------------------------------------------------


def run_main(body: Callable[[], int | None]) -> int:
    """Run `body` (the script's run-and-report); SIGTERM and Ctrl-C end it with 143 / 130, and
    CLEANUP runs in reverse order whatever happened, uninterrupted, each step on its own."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return body() or 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if CLEANUP:
            log("cleaning up")
        for fn in reversed(CLEANUP):
            try:
                fn()
            except Exception as exc:  # keep cleaning up
                log(f"cleanup step failed: {exc!r}")
        CLEANUP.clear()
