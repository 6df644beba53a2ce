"""What the bench scripts share: logging, percentiles and tables, per-call wall/CPU timing, CPU
accounting per process group, a throw-away PostgreSQL database and portal environment, tritonserver
and gunicorn started and stopped, and a main() guard that always cleans up.

    from harness import CLEANUP, log, percentiles, run_main   # (bench/ is the script's directory)

Each script keeps its own scenario and report; only the machinery lives here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
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
SESSIONS: dict[str, int] = {}  # process group -> a session id: every process of a server the bench started


def use_code_root(path: str | Path) -> None:
    """Run the portal (Django in this process, the servers started after this) from another checkout, e.g. the
    code before a change (`git worktree add --detach /work/wt/before <commit>`); bench/ stays this one."""
    global ROOT
    new = Path(path).resolve()
    if not (new / "manage.py").exists():
        raise SystemExit(f"{new} is not a checkout of the portal (no manage.py)")
    if "django" in sys.modules:
        raise RuntimeError("use_code_root() must run before Django is imported")
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    sys.path.insert(0, str(new))
    ROOT = new


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
        fields = stat.rsplit(")", 1)[1].split()
        group = "load generator" if me else next((g for g, sid in SESSIONS.items() if int(fields[3]) == sid), None)
        group = group or next((g for g, mark in MARKS.items() if mark in cmd), None)
        if group:
            out[(group, d.name)] = (int(fields[11]) + int(fields[12])) / tick
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # Busy: all but idle and iowait. Steal (the hypervisor running someone else on our virtual CPUs) is counted
    # as busy, as the processes' own utime+stime count it too (their kernel cannot see it); it is also shown apart.
    out[("machine busy", "")] = (sum(ticks[:8]) - ticks[3] - ticks[4]) / tick
    out[("steal", "")] = ticks[7] / tick
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended and waited-for children (wrk)
    out[("ended children", "")] = children.ru_utime + children.ru_stime
    return out


def cpu_used(c0: dict, c1: dict, seconds: float, requests: int) -> dict:
    """CPU used between two snapshots (a process started in between counts from zero), per group."""
    used = dict.fromkeys([*SESSIONS, *MARKS, "load generator", "ended children", "machine busy", "steal"], 0.0)
    for (group, pid), value in c1.items():
        used[group] += value - c0.get((group, pid), 0.0)
    outside = ("machine busy", "steal")
    used["other processes"] = used["machine busy"] - sum(v for g, v in used.items() if g not in outside)
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
        # One token drives the whole load: the per-token limit (1000/s by default) is still checked on
        # every call, at its full cost, but set high enough never to refuse one.
        "SOVEREIGN_RATELIMIT_GATEWAY": "1000000/s",
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


def gateway_env(data: Path, db: str, redis: str, **extra: str) -> dict:
    """The portal as in production behind its TLS proxy, on the local KEK file."""
    return portal_env(
        data,
        db,
        REDIS_URL=redis,
        SOVEREIGN_ENV="production",
        SOVEREIGN_ALLOWED_HOSTS="127.0.0.1,localhost",
        SOVEREIGN_BEHIND_TLS_PROXY="true",  # clients send X-Forwarded-Proto: https, as the proxy would
        # production refuses the local KEK file unless told (docs/production.md); the HSM's own cost
        # is measured apart (bench/hsm_unwrap.py)
        SOVEREIGN_INSECURE_OVERRIDE="local_kek",
        **extra,
    )


def deploy(triton_url: str, models: dict[str, dict]) -> str:
    """Register the demo model under each name of `models` and deploy it with that batching (reconciled here,
    synchronously); grant an analyst invoke on them and return the analyst's token."""
    from django.contrib.auth import get_user_model

    from apps.accounts.services import create_user, grant_model_access, issue_token
    from apps.deployments import services as deployments
    from apps.deployments.models import Deployment, Observed
    from apps.registry.models import Model
    from apps.registry.services import register_model_version
    from inference_backend.demo_model import build_demo_onnx

    admin = get_user_model().objects.create_superuser("bench", "bench@localhost", secrets.token_urlsafe(16))
    server = deployments.register_server(name="bench-local", http_url=triton_url, hardware="cpu", actor=admin)
    for name, batching in models.items():
        mv = register_model_version(model_name=name, data=build_demo_onnx(), actor=admin)
        dep = deployments.request_deployment(
            model_version_id=mv.pk, server_id=server.pk, batching=batching, actor=admin
        )
        deployments.reconcile_deployment(dep.pk)  # the task request_deployment enqueued is flushed at exit
        dep = Deployment.objects.get(pk=dep.pk)
        if dep.observed_state != Observed.ACTIVE:
            raise RuntimeError(f"deployment of {name} is {dep.observed_state}: {dep.last_error}")
    # The realistic caller: an analyst with invoke grants (the superuser would skip the grant checks).
    analyst = create_user(
        username="bench-analyst", email="", password=secrets.token_urlsafe(16), role="analyst", actor=admin
    )
    for model in Model.objects.filter(name__in=list(models)):
        grant_model_access(model_id=model.pk, permission="invoke_model", user_id=analyst.pk, actor=admin)
    return issue_token(user=analyst, name="bench", days=1, actor=None)[1]  # issued on the host


def triton_name(model: str) -> str:
    """The name `model`'s latest deployment is loaded under on Triton: "<model>--v<n>" since versions run side by
    side (Deployment.triton_name); the model's own name in code from before (a --code-root checkout)."""
    from apps.deployments.models import Deployment

    deployments = Deployment.objects.select_related("model", "model_version")
    return deployments.filter(model__name=model).latest("pk").triton_name


def triton_counts(metrics_url: str, model: str) -> dict[str, float]:
    """Triton's counters for `model`: successful requests and model executions (their ratio, over an interval,
    is the mean batch size Triton's scheduler formed)."""
    text = urllib3.request("GET", metrics_url, timeout=10).data.decode()
    out = {}
    for metric in ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count"):
        found = re.search(rf'^{metric}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$', text, re.M)
        out[metric] = float(found.group(1)) if found else 0.0
    return out


# --- servers --------------------------------------------------------------------------------------


_next_port: list[int] = []


def port() -> int:
    """A TCP port for a server the bench starts: the next one from BENCH_PORT_BASE (a range given to this
    bench, e.g. 18400: the bench then uses BENCH_PORT_BASE … +20), else one the kernel says is free now."""
    from inference_backend.server import _port_in_use, free_port

    base = os.environ.get("BENCH_PORT_BASE")
    if not base:
        return free_port()
    if not _next_port:
        _next_port.append(int(base))
    while _port_in_use(_next_port[0]):
        _next_port[0] += 1
    _next_port[0] += 1
    return _next_port[0] - 1


def start_triton(data: Path, env: dict):
    """A tritonserver under `data`/triton whose python backend unwraps with the portal's local KEK file."""
    from inference_backend.server import LocalTritonServer

    ports = [port(), port(), port()]
    kek = {"SOVEREIGN_KEK_PROVIDER": "local", "SOVEREIGN_LOCAL_KEK_FILE": env["SOVEREIGN_LOCAL_KEK_FILE"]}
    server = LocalTritonServer(data / "triton", *ports, extra_env=kek)
    CLEANUP.append(server.stop)
    server.start(timeout=180)
    SESSIONS["triton"] = server.pid  # tritonserver and its python backend stubs
    return server


GUNICORN = "gthread, 2 workers x 8 threads"


def http_ready(url: str, headers: dict | None = None) -> bool:
    try:
        return urllib3.request("GET", url, headers=headers, timeout=2, retries=False).status == 200
    except urllib3.exceptions.HTTPError:
        return False


def start_server(name: str, argv: list[str], data: Path, env: dict, ready_url: str, timeout: float = 90):
    """Start `argv` (its own session; output to `data`/<name>.log) with os.environ + `env`; wait until GET
    `ready_url` answers 200 (X-Forwarded-Proto: https, as from the TLS proxy); stop its whole process group
    at exit (SIGTERM, then SIGKILL after 15 s). Returns the Popen."""
    with open(data / f"{name}.log", "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop() -> None:  # SIGTERM to the leader (gunicorn's master stops its workers), then SIGKILL to leftovers
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within 15 s: killing it")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    CLEANUP.append(stop)
    SESSIONS[name] = proc.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if http_ready(ready_url, {"X-Forwarded-Proto": "https"}):
            return proc
        time.sleep(0.3)
    tail = (data / f"{name}.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{name} did not become ready at {ready_url}; the end of its log:\n{tail}")


def start_gunicorn(data: Path, env: dict, bind_port: int | None = None) -> int:
    """gunicorn serving portal.wsgi as in production (GUNICORN); returns its port once /healthz answers."""
    bind_port = bind_port or port()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    argv = [gunicorn, "portal.wsgi", "-k", "gthread", "--workers", "2", "--threads", "8"]
    argv += ["-b", f"127.0.0.1:{bind_port}"]
    start_server("gunicorn", argv, data, env, f"http://127.0.0.1:{bind_port}/healthz")
    return bind_port


# --- the load generator: wrk ----------------------------------------------------------------------

WRK = os.environ.get("BENCH_WRK", "/usr/bin/wrk")
# wrk's done() prints one JSON line: totals, error counts by kind, latency percentiles (µs)
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def wrk_script(path: Path, body: bytes, headers: dict) -> Path:
    """A wrk Lua script POSTing `body` with `headers` (the name marks wrk's process for CPU accounting)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_str(body.decode())}"]
    lines += [f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n" + _WRK_DONE)
    return path


def _lua_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk(url: str, script: Path, conc: int, seconds: float, threads: int = 1) -> dict:
    """Run wrk (`conc` keep-alive connections on `threads` threads for `seconds`) with CPU accounting around it:
    {"rps", "requests", "errors", "p50_ms", "p90_ms", "p99_ms", "cores_busy", "cpu_ms_per_request"}; requests
    counts only 2xx answers (wrk counts the others as status errors)."""
    argv = [WRK, f"-t{threads}", f"-c{conc}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    argv += ["-s", str(script), url]
    c0, t0 = cpu_snapshot(), time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed, c1 = time.perf_counter() - t0, cpu_snapshot()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    r = json.loads(line[8:])
    errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
    ok = r["requests"] - r["status"]
    res = {"rps": ok / (r["duration_us"] / 1e6), "requests": ok, "errors": errors}
    res.update({f"{k}_ms": r[f"{k}_us"] / 1e3 for k in ("p50", "p90", "p99")})
    res.update(cpu_used(c0, c1, elapsed, ok))
    for key in ("cpu_ms_per_request", "cores_busy"):
        res[key]["wrk"] = res[key].pop("ended children")
    return res


# --- the gRPC load generator: h2load (nghttp2-client) ----------------------------------------------

H2LOAD = os.environ.get("BENCH_H2LOAD", "/usr/bin/h2load")


def grpc_infer_frame(model: str, inputs: list[tuple[str, str, list[int], bytes]]) -> bytes:
    """One gRPC message (5-byte prefix + protobuf) of KServe v2's ModelInfer: inputs as (name, datatype, shape,
    raw little-endian bytes)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in inputs:
        tensor = req.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
        req.raw_input_contents.append(raw)
    msg = req.SerializeToString()
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def h2load(url: str, body: Path, headers: dict, conc: int, requests: int) -> dict:
    """h2load: `conc` HTTP/2 connections, one stream each, POSTing `body` `requests` times (a count, not -D: with
    -D, h2load can wait forever for a peer's close after the window), with CPU accounting around it. h2load sees
    HTTP statuses only: a gRPC error is a 200 with grpc-status in the trailers, so callers cross-check the count
    with Triton's own (triton_counts)."""
    argv = [H2LOAD, "-c", str(conc), "-m", "1", "-n", str(max(requests, conc)), "-d", str(body)]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    c0, t0 = cpu_snapshot(), time.perf_counter()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"h2load did not finish within 600 s: {(exc.stdout or b'')[-800:]!r}") from exc
    elapsed, c1 = time.perf_counter() - t0, cpu_snapshot()
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out.stdout)
    codes = re.search(r"status codes: (\d+) 2xx", out.stdout)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out.stdout)
    if out.returncode != 0 or not (done and codes and finished):
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stdout[-800:]} {out.stderr[-500:]}")
    secs = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    ok = int(codes.group(1))
    res = {"rps": ok / secs, "requests": ok, "errors": int(done.group(1)) - ok, "seconds": secs}
    res.update(cpu_used(c0, c1, elapsed, ok))
    for key in ("cpu_ms_per_request", "cores_busy"):
        res[key]["h2load"] = res[key].pop("ended children")
    return res


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
