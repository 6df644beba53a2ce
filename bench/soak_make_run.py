"""Soak `make run` as a newcomer runs it, with a caller throughout and a worker killed on purpose.

    python bench/soak_make_run.py [--minutes 30] [--data-dir DIR] [--port 8300] [--triton-port 18300]
                                  [--kill-worker-at 0.33] [--kill-web-at 0.66] [--out soak.json]

What it does, in order:

1. starts `make run` in a pseudo-terminal (its own session, the pty as controlling terminal), with
   DATABASE_URL and REDIS_URL removed from the environment (SQLite + the embedded broker, as on a
   fresh machine) and a fresh data directory unless --data-dir is given;
2. reads what it prints until a token (`svt_…`) and the printed infer call appear (the URL and the
   body are taken from the printed curl line when there is one, else the demo model's defaults);
3. calls that endpoint in a loop until the end, recording status and latency of every call;
4. at --kill-worker-at (a fraction of the run) SIGKILLs the Celery worker's main process, and at
   --kill-web-at gunicorn's master (0 to skip); checks each comes back (a new pid) and that a
   `platform.process.restart` row for it is in the audit table of the SQLite database;
5. samples every second that triton, worker, web and dataplane are all running (how long any was missing), and the
   RSS of each (leader and its whole process group) at start and end;
6. after --minutes presses Ctrl-C on the terminal (the tty sends SIGINT to its foreground process
   group, as when a person presses it) and checks that make exits 0 and no process is left;
7. verifies the audit chain (`manage.py audit_verify`) and reports log sizes and modes, the address
   the portal listened on (127.0.0.1 unless SOVEREIGN_BIND) and what was left in the broker folders.

It prints a summary and writes it as JSON (--out); exit status 0 only if every check held.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import pty
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN_RE = re.compile(r"svt_[A-Za-z0-9_-]+")
INFER_URL_RE = re.compile(r"(https?://[^\s'\"]+/v2/models/[^/\s'\"]+/infer)")
BODY_RE = re.compile(r"-d\s+'(\{.*?\})'")
DEFAULT_BODY = '{"inputs":[{"name":"INPUT","datatype":"FP32","shape":[1,4],"data":[0.5,1.0,-0.5,2.0]}]}'
NAMES = ("triton", "worker", "web", "dataplane")


def now() -> float:
    return time.monotonic()


class MakeRun:
    """`make run` on a pseudo-terminal; its output is kept and copied to a file."""

    def __init__(self, env: dict, transcript: Path):
        self.master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG  # the line discipline turns ^C into SIGINT for the foreground group
        termios.tcsetattr(slave, termios.TCSANOW, attrs)

        def child_setup():
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)  # a shell's `&` would have left SIGINT ignored

        self.proc = subprocess.Popen(  # noqa: S603 - our own make target
            ["make", "run"],
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=child_setup,  # noqa: PLW1509 - setsid + controlling tty must happen in the child
            close_fds=True,
        )
        os.close(slave)
        self.output = ""
        self.lock = threading.Lock()
        self.transcript = open(os.open(transcript, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w")  # noqa: SIM115
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once every process holding the slave has exited
                return
            if not data:
                return
            text = data.decode(errors="replace")
            with self.lock:
                self.output += text
            self.transcript.write(text)
            self.transcript.flush()

    def text(self) -> str:
        with self.lock:
            return self.output

    def press_ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.master)
        self.transcript.close()


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, cmdline) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry)] = (int(fields[1]), int(fields[2]), cmd)
    return found


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def supervised(make_pid: int) -> dict:
    """The launcher's pid and, by name, the leader pid of each supervised process."""
    table = processes()
    launcher = next((p for p, (pp, _, cmd) in table.items() if pp == make_pid and "run_local.py" in cmd), None)
    found: dict = {"launcher": launcher}
    for pid, (ppid, _, cmd) in table.items():
        if launcher is None or ppid != launcher:
            continue
        if "inference_backend.server" in cmd:
            found["triton"] = pid
        elif "celery" in cmd and " worker" in cmd:
            found["worker"] = pid
        elif "gunicorn" in cmd:
            found["web"] = pid
        elif "run_dataplane" in cmd:
            found["dataplane"] = pid
    return found


def memory(pids: dict) -> dict:
    """RSS in MB of each leader and of its whole process group (pool workers, Triton and its stub)."""
    table = processes()
    out = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        group = [p for p, (_, pgid, _) in table.items() if pgid == pid] if name != "launcher" else [pid]
        out[name] = {"leader_mb": round(rss_kb(pid) / 1024, 1), "group_mb": round(sum(map(rss_kb, group)) / 1024, 1)}
    return out


class Caller(threading.Thread):
    def __init__(self, url: str, token: str, body: str, interval: float):
        super().__init__(daemon=True)
        self.url, self.body, self.interval = url, body.encode(), interval
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.calls: list[tuple[float, int, float]] = []  # (time, status or 0 for no answer, latency s)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = now()
            request = urllib.request.Request(self.url, data=self.body, headers=self.headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - localhost
                    response.read()
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            self.calls.append((started, status, now() - started))
            self.stop.wait(self.interval)


def listening_addresses(port: int) -> list[str]:
    """Local addresses with a listening TCP socket on port (IPv4 and IPv6), from /proc/net."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    if len(raw) == 4:
                        found.append(".".join(str(b) for b in reversed(raw)))
                    else:  # four little-endian 32-bit words
                        words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                        found.append(ipaddress.IPv6Address(b"".join(words)).compressed)
    return found


def audit_rows(db: Path, event_type: str) -> list[dict]:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return []
    try:
        rows = conn.execute(
            "SELECT id, timestamp, target_id, details, outcome FROM audit_auditevent WHERE event_type = ? ORDER BY id",
            [event_type],
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return [
        {"id": r[0], "timestamp": r[1], "process": r[2], "details": json.loads(r[3]), "outcome": r[4]} for r in rows
    ]


def wait(predicate, timeout: float, interval: float = 0.5):
    deadline = now() + timeout
    while now() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def main() -> int:  # noqa: C901, PLR0912, PLR0915 - one scenario, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--data-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--triton-port", type=int, default=18300)
    parser.add_argument("--kill-worker-at", type=float, default=0.33, help="fraction of the run; 0: never")
    parser.add_argument("--kill-web-at", type=float, default=0.66, help="fraction of the run; 0: never")
    parser.add_argument("--interval", type=float, default=0.1, help="pause between two calls, seconds")
    parser.add_argument("--startup-timeout", type=float, default=900.0)
    parser.add_argument("--out", default=None, help="write the summary as JSON here")
    args = parser.parse_args()

    data = Path(args.data_dir or tempfile.mkdtemp(prefix="sovereign-soak-")).resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        SOVEREIGN_DATA_DIR=str(data),
        SOVEREIGN_PORT=str(args.port),
        SOVEREIGN_TRITON_PORT=str(args.triton_port),
        TERM="dumb",
    )
    summary: dict = {"data_dir": str(data), "minutes": args.minutes, "checks": {}}
    checks = summary["checks"]
    t0 = now()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    summary["transcript"] = str(data / "soak-transcript.txt")  # holds the printed password and token
    run = MakeRun(env, Path(summary["transcript"]))
    print(f"make run (pid {run.proc.pid}), data dir {data}; transcript {summary['transcript']}", flush=True)

    def ready():
        text = run.text()
        return run.proc.poll() is not None or (TOKEN_RE.search(text) and ("Logs:" in text or INFER_URL_RE.search(text)))

    wait(ready, args.startup_timeout, 1.0)
    text = run.text()
    token, url_match = TOKEN_RE.search(text), INFER_URL_RE.search(text)
    if run.proc.poll() is not None or not token:
        print(text[-3000:])
        print(f"make run did not come up (exit {run.proc.poll()})", file=sys.stderr)
        return 1
    url = url_match.group(1) if url_match else f"http://127.0.0.1:{args.port}/v2/models/triage-demo/infer"
    body_match = BODY_RE.search(text)
    summary["startup_seconds"] = round(now() - t0, 1)
    time.sleep(2)  # the launcher prints its "Logs:" line right after the bootstrap output
    pids = supervised(run.proc.pid)
    summary["rss_start"] = memory(pids)
    print(f"up in {summary['startup_seconds']} s; calling {url}; processes {pids}", flush=True)

    summary["portal_listens_on"] = listening_addresses(args.port)
    caller = Caller(url, token.group(0), body_match.group(1) if body_match else DEFAULT_BODY, args.interval)
    start = now()
    caller.start()
    duration = args.minutes * 60
    kills = []
    plan = sorted(
        [(f * duration, name) for f, name in ((args.kill_worker_at, "worker"), (args.kill_web_at, "web")) if f > 0]
    )
    down_since: dict[str, float | None] = dict.fromkeys(NAMES)
    longest_down = dict.fromkeys(NAMES, 0.0)
    samples = 0
    launcher_gone = False
    while now() - start < duration:
        elapsed = now() - start
        if plan and elapsed >= plan[0][0]:
            _, name = plan.pop(0)
            victim = supervised(run.proc.pid).get(name)
            if victim:
                os.kill(victim, signal.SIGKILL)
                kills.append({"process": name, "pid": victim, "at_s": round(elapsed, 1)})
                print(f"[{elapsed:7.1f}s] SIGKILL {name} (pid {victim})", flush=True)
        current = supervised(run.proc.pid)
        samples += 1
        if current.get("launcher") is None or run.proc.poll() is not None:
            launcher_gone = True
            print(f"[{elapsed:7.1f}s] make run exited ({run.proc.poll()})", flush=True)
            break
        for name in NAMES:
            if current.get(name) is None:
                down_since[name] = down_since[name] or now()
                longest_down[name] = max(longest_down[name], now() - down_since[name])
            else:
                down_since[name] = None
        time.sleep(min(1.0, max(0.1, duration - (now() - start))))
    caller.stop.set()
    caller.join(40)
    pids_end = supervised(run.proc.pid)
    summary["rss_end"] = memory(pids_end)
    summary["pids_start"], summary["pids_end"] = pids, pids_end
    db = data / "sovereign.sqlite3"
    restarts = audit_rows(db, "platform.process.restart")
    summary["audit_restart_rows"] = restarts
    summary["audit_giveup_rows"] = audit_rows(db, "platform.process.giveup")
    for kill in kills:
        rows = [r for r in restarts if r["process"] == kill["process"]]
        kill["restarted"] = pids_end.get(kill["process"]) not in (None, kill["pid"])
        kill["audited"] = any(r["details"].get("signal") == "SIGKILL" for r in rows)
    summary["kills"] = kills

    # Calls: totals, failures and where they fell relative to the kills.
    calls = caller.calls
    ok = [c for c in calls if c[1] == 200]
    failed = [c for c in calls if c[1] != 200]
    latencies = sorted(c[2] * 1000 for c in ok)
    summary["calls"] = {
        "total": len(calls),
        "ok": len(ok),
        "failed": len(failed),
        "per_second": round(len(calls) / max(1.0, duration), 2),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "failures": [{"at_s": round(c[0] - start, 1), "status": c[1]} for c in failed[:200]],
        "slowest": [
            {"at_s": round(c[0] - start, 1), "ms": round(c[2] * 1000), "status": c[1]}
            for c in sorted(calls, key=lambda c: -c[2])[:5]
        ],
    }
    summary["longest_down_s"] = {k: round(v, 1) for k, v in longest_down.items()}
    summary["samples"] = samples

    # Ctrl-C on the terminal; make must exit 0 and leave nothing behind.
    stop_started = now()
    run.press_ctrl_c()
    try:
        code = run.proc.wait(90)
    except subprocess.TimeoutExpired:
        code = None
        run.proc.kill()
    summary["stop_seconds"] = round(now() - stop_started, 1)
    summary["make_exit_code"] = code
    time.sleep(1)
    left = [
        (pid, cmd[:120])
        for pid, (_, _, cmd) in processes().items()
        if pid != os.getpid()
        and (
            str(data) in cmd
            or f":{args.port + 2}" in cmd  # gunicorn, behind the data plane (deploy/run_local.py)
            or ("run_dataplane" in cmd and f"--port {args.port}" in cmd)
            or f"port={args.triton_port}" in cmd
        )
    ]
    summary["processes_left"] = left
    run.close()
    summary["launcher_output_tail"] = run.text()[-1500:]

    summary["broker_files_left"] = {
        sub.name: len(list(sub.iterdir())) for sub in sorted((data / "broker").iterdir()) if sub.is_dir()
    }
    logs = data / "logs"
    summary["logs"] = {
        p.name: {"bytes": p.stat().st_size, "mode": oct(p.stat().st_mode & 0o777)} for p in sorted(logs.iterdir())
    }
    summary["logs_dir_mode"] = oct(logs.stat().st_mode & 0o777)
    summary["seconds_run"] = round(now() - start, 1)
    verify = subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "manage.py"), "audit_verify"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    summary["audit_verify"] = (verify.stdout + verify.stderr).strip()[-400:]
    summary["audit_rows_total"] = None
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        summary["audit_rows_total"] = conn.execute("SELECT count(*) FROM audit_auditevent").fetchone()[0]
        summary["audit_rows_unsealed"] = conn.execute(
            "SELECT count(*) FROM audit_auditevent WHERE sequence IS NULL"
        ).fetchone()[0]
        conn.close()

    checks["no_process_exited_unplanned"] = not launcher_gone and all(
        v < 60 for v in longest_down.values()
    )  # a killed one is back within a minute
    checks["killed_processes_restarted"] = all(k["restarted"] for k in kills)
    checks["restarts_audited"] = all(k["audited"] for k in kills)
    checks["all_running_at_end"] = all(pids_end.get(n) for n in NAMES)
    checks["no_giveup"] = not summary["audit_giveup_rows"]
    checks["make_exit_0_on_ctrl_c"] = code == 0
    checks["nothing_left_running"] = not left
    checks["logs_private"] = summary["logs_dir_mode"] == "0o700" and all(
        v["mode"] == "0o600" for v in summary["logs"].values()
    )
    checks["audit_chain_verifies"] = verify.returncode == 0
    checks["portal_on_loopback_only"] = summary["portal_listens_on"] == ["127.0.0.1"]
    checks["no_rejected_broker_messages"] = summary["broker_files_left"].get("rejected", 0) == 0
    checks["calls_mostly_ok"] = bool(calls) and len(failed) <= max(5, len(calls) // 100)
    print(json.dumps(summary, indent=2, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2, default=str))
    failed_checks = [k for k, v in checks.items() if not v]
    print("FAILED: " + ", ".join(failed_checks) if failed_checks else "all checks passed", flush=True)
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
