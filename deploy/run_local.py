"""`make run`: migrate, start the embedded Triton, a Celery worker (with beat), the portal (gunicorn)
and the gateway's data plane, deploy the demo model and print how to use it, then supervise the four
until Ctrl-C.

One URL space, as in production behind nginx (docs/production.md): the data plane
(`manage.py run_dataplane`, uvicorn, one worker) listens on the public port and serves `/v2/…`
(KServe v2 over HTTP) itself, relaying every other path to the portal, which listens on loopback
only; KServe v2 over gRPC is on the next port (Triton's own layout: HTTP 8000, gRPC 8001).

Supervision: a process that exits is restarted after a back-off (1 s, doubling, at most 30 s; the
count resets once it has run 60 s), and each restart is recorded in the audit log as
`platform.process.restart` (process, exit code, attempt). After SOVEREIGN_RESTART_LIMIT (5)
failures in a row, each within 60 s of its start, the launcher gives up: it audits
`platform.process.giveup`, says which process and where its log is, stops everything and exits 1.

Ctrl-C (or SIGTERM / SIGHUP) stops the children (SIGTERM, then SIGKILL of what is left after 20 s)
and exits 0. With a terminal, the launcher takes the terminal's foreground so that Ctrl-C reaches it
and not make (make would otherwise kill itself with the signal and report it); a second Ctrl-C
while stopping kills at once.

Logs: each child's output goes to var/logs/<name>.log, rotated at SOVEREIGN_LOG_MAX_MB (10) MB,
SOVEREIGN_LOG_BACKUPS (5) old files kept; the directory is 0700 and the files 0600 (the launcher
runs with umask 077, so everything it and its children create under the data dir is private).

Configuration: SOVEREIGN_PORT (the public HTTP port: data plane, and the portal through it; default
8000), SOVEREIGN_GRPC_PORT (the data plane's gRPC port, default SOVEREIGN_PORT + 1; 0: no gRPC),
SOVEREIGN_PORTAL_PORT (gunicorn's port on 127.0.0.1, default SOVEREIGN_PORT + 2), SOVEREIGN_BIND
(the public address, default 127.0.0.1), SOVEREIGN_TRITON_PORT (Triton HTTP, default 18000; gRPC and
metrics use the next two ports) and every variable of portal/settings.py.

The portal sees every browser and API call arrive from the data plane on loopback, so the launcher adds
127.0.0.1 and ::1 to the portal's SOVEREIGN_TRUSTED_PROXIES (not the data plane's): the client address
in the audit log, the login lockout and the rate limits is the one the data plane saw.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("SOVEREIGN_DATA_DIR", ROOT / "var"))
LOGS = DATA / "logs"
PORT = int(os.environ.get("SOVEREIGN_PORT", "8000"))  # public: the data plane (the portal behind it)
GRPC_PORT = int(os.environ.get("SOVEREIGN_GRPC_PORT", str(PORT + 1)))  # public: KServe v2 over gRPC; 0: off
PORTAL_PORT = int(os.environ.get("SOVEREIGN_PORTAL_PORT", str(PORT + 2)))  # gunicorn, on 127.0.0.1 only
BIND = os.environ.get("SOVEREIGN_BIND", "127.0.0.1")
# Where the launcher (and the printed URLs) reach the portal: BIND itself unless it is a wildcard.
HOST = "127.0.0.1" if BIND in ("0.0.0.0", "::", "") else (f"[{BIND}]" if ":" in BIND else BIND)  # noqa: S104
TRITON_PORT = int(os.environ.get("SOVEREIGN_TRITON_PORT", "18000"))
TRITON_CREDENTIAL_ENV = "SOVEREIGN_TRITON_CREDENTIAL"  # inference_backend.server.CREDENTIAL_ENV
LOG_MAX_BYTES = int(float(os.environ.get("SOVEREIGN_LOG_MAX_MB", "10")) * 1024 * 1024)
LOG_BACKUPS = int(os.environ.get("SOVEREIGN_LOG_BACKUPS", "5"))
RESTART_LIMIT = int(os.environ.get("SOVEREIGN_RESTART_LIMIT", "5"))
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # seconds: 1, 2, 4, 8, 16, 30, 30, ...
STABLE_AFTER = 60.0  # a process that ran this long before exiting starts a fresh failure count
STOP_GRACE = 20.0  # seconds the children get to stop after SIGTERM
MANAGE = [sys.executable, str(ROOT / "manage.py")]


def say(message: str) -> None:
    tell(f"[make run] {message}", sys.stderr)


def tell(text: str, stream=None) -> None:
    """Print, ignoring a closed output (`make run | tee log` whose tee died): a launcher that cannot
    print must still stop its children, not die of BrokenPipeError and leave them running."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=stream or sys.stdout, flush=True)


class RotatingLog:
    """Appends bytes to logs/<name>.log, rotating it at max_bytes (name.log.1 … name.log.N); 0600."""

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS):
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self.lock = threading.Lock()
        self.fd: int | None = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a log left by an older launcher was world-readable
        return fd

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.fd is None:
                return  # closed at stop: what a dying child still prints is dropped
            if self.size and self.size + len(data) > self.max_bytes:
                self._rotate()
            os.write(self.fd, data)
            self.size += len(data)

    def _rotate(self) -> None:
        os.close(self.fd)
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            os.unlink(self.path)
        self.fd = self._open()
        self.size = 0

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:  # closing twice could close a descriptor reused by something else
                os.close(self.fd)
                self.fd = None


class Child:
    """One supervised process: its command, its log, its restart history."""

    def __init__(self, name: str, argv: list[str], env: dict):
        self.name, self.argv, self.env = name, argv, env
        self.log = RotatingLog(LOGS / f"{name}.log")
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.failures = 0  # consecutive exits, each within STABLE_AFTER of its start
        self.restarts = 0
        self.restart_at: float | None = None  # monotonic time of the pending restart
        self.last_exit = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, and no terminal: Ctrl-C reaches only the launcher
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        threading.Thread(target=self._pump, args=(self.proc,), name=f"log-{self.name}", daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self.log.write(chunk)
        proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_group(self) -> None:
        """SIGKILL whatever is left in its process group (pool workers, Triton's stubs)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class Supervisor:
    def __init__(self):
        self.children: list[Child] = []
        self.stopping = False
        self.gave_up: Child | None = None
        self.audits: queue.Queue = queue.Queue()
        self.auditor: threading.Thread | None = None

    def add(self, name: str, argv: list[str], env: dict) -> Child:
        child = Child(name, argv, env)
        self.children.append(child)
        child.start()
        return child

    def tick(self) -> None:
        """Notice exits, schedule restarts with back-off, carry out the restarts that are due."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping or self.gave_up:
                return
            if child.restart_at is None and child.proc is not None and child.proc.poll() is not None:
                self._exited(child, now)
            elif child.restart_at is not None and now >= child.restart_at:
                delay = self._delay(child.failures)
                child.start()
                child.restarts += 1
                say(f"{child.name} restarted (pid {child.proc.pid}, attempt {child.failures})")
                self._audit(
                    "restart",
                    child,
                    "--attempt",
                    str(child.failures),
                    "--delay",
                    str(delay),
                    "--pid",
                    str(child.proc.pid),
                )

    @staticmethod
    def _delay(failures: int) -> float:
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1))

    def _exited(self, child: Child, now: float) -> None:
        code = child.proc.returncode
        child.last_exit = code
        child.kill_group()
        ran = now - child.started_at
        child.failures = 1 if ran >= STABLE_AFTER else child.failures + 1
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        if child.failures >= RESTART_LIMIT:
            self.gave_up = child
            say(
                f"{child.name} {how} after {ran:.0f}s: that is {child.failures} failures in a row, each within "
                f"{STABLE_AFTER:.0f}s of starting. Giving up and stopping everything; see {child.log.path}"
            )
            self._audit("giveup", child, "--attempt", str(child.failures), "--window", str(STABLE_AFTER))
            return
        delay = self._delay(child.failures)
        child.restart_at = now + delay
        say(f"{child.name} {how} after {ran:.0f}s; restarting in {delay:.0f}s (see {child.log.path})")

    def _audit(self, event: str, child: Child, *extra: str) -> None:
        """Record the event with a short-lived `manage.py` (the launcher has no Django of its own). One
        background thread runs them in order, so a busy database never holds up supervision and the
        audit log has the restarts in the order they happened."""
        argv = [*MANAGE, "record_process_event", event, "--process", child.name, "--exit-code", str(child.last_exit)]
        self.audits.put((event, child.name, [*argv, *extra], child.env))
        if self.auditor is None:
            self.auditor = threading.Thread(target=self._record_audits, name="audit", daemon=True)
            self.auditor.start()

    def _record_audits(self) -> None:
        while (item := self.audits.get()) is not None:
            event, name, argv, env = item
            result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, start_new_session=True)
            if result.returncode != 0:
                say(f"could not audit the {event} of {name}: {result.stderr.strip()[-500:]}")

    def flush_audits(self, timeout: float = 60.0) -> None:
        """Wait for the audit records queued so far (at stop, and in tests)."""
        if self.auditor is not None:
            self.audits.put(None)
            self.auditor.join(timeout)
            self.auditor = None

    def stop(self) -> list[str]:
        """SIGTERM each leader (newest first: data plane, web, worker, Triton), SIGKILL the groups still there after
        STOP_GRACE. Returns the names of the children that had to be killed."""
        self.stopping = True
        for child in reversed(self.children):
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and any(c.alive() for c in self.children):
            time.sleep(0.1)
        killed = [c.name for c in self.children if c.alive()]
        for child in self.children:
            child.kill_group()
            if child.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(5)
        self.flush_audits()
        for child in self.children:
            child.log.close()
        return killed


class Terminal:
    """Make the launcher the terminal's foreground process group while it runs, so that Ctrl-C is
    delivered to it alone: make (in the group it leaves) then sees the launcher exit 0 and exits 0,
    instead of killing itself with SIGINT. The children run in their own sessions anyway."""

    def __init__(self):
        self.fd: int | None = None
        self.previous: int | None = None

    def take(self) -> None:
        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return  # no controlling terminal (CI, nohup, a service): signals come from kill
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                os.close(fd)  # started in the background: leave the terminal alone
                return
            self.fd, self.previous = fd, os.getpgrp()
            os.setpgid(0, 0)
            self._foreground(os.getpgrp())
        except OSError:
            self.release()

    def _foreground(self, pgrp: int) -> None:
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # allowed from a background group only so
        try:
            os.tcsetpgrp(self.fd, pgrp)
        finally:
            signal.signal(signal.SIGTTOU, old)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self._foreground(self.previous)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None


class Stop(Exception):
    pass


stop_signal: list[str] = []


def on_signal(signum, _frame) -> None:
    if stop_signal and supervisor.stopping:
        say("second interrupt: killing everything now")
        for child in supervisor.children:
            child.kill_group()
        os._exit(0)
    stop_signal.append(signal.Signals(signum).name)


def wait_until(done, what: str, timeout: float) -> None:
    """Supervise until done() is true; Stop on a signal or when the supervisor gave up."""
    deadline = time.monotonic() + timeout
    while not done():
        if stop_signal:
            raise Stop
        supervisor.tick()
        if supervisor.gave_up:
            raise Stop
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} within {timeout:.0f}s; see {LOGS}/")
        time.sleep(0.3)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own localhost URL
            return resp.status == 200
    except OSError:
        return False


def step(argv: list[str], env: dict, what: str, timeout: float) -> None:
    """Run a one-off command (migrate, bootstrap) in its own session while supervising."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None, f"{what} did not finish", timeout)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (status {proc.returncode})")


def commands() -> dict[str, list[str]]:
    """What the launcher supervises, by name. The data plane binds BIND (127.0.0.1 unless SOVEREIGN_BIND);
    the portal and Triton always bind 127.0.0.1 (inference_backend/server.py)."""
    return {
        # The embedded Triton is "this host": it reads the same dev keystore to unwrap data keys.
        "triton": [
            sys.executable,
            "-m",
            "inference_backend.server",
            "--workdir",
            str(DATA / "triton"),
            "--http-port",
            str(TRITON_PORT),
            "--grpc-port",
            str(TRITON_PORT + 1),
            "--metrics-port",
            str(TRITON_PORT + 2),
        ],
        "worker": [
            str(VENV_BIN / "celery"),
            "-A",
            "portal",
            "worker",
            "-B",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--schedule",
            str(DATA / "celerybeat-schedule"),
        ],
        "web": [
            str(VENV_BIN / "gunicorn"),
            "portal.wsgi",
            "--bind",
            f"127.0.0.1:{PORTAL_PORT}",
            "--worker-class",
            "gthread",
            "--workers",
            "2",
            "--threads",
            "8",
            "--access-logfile",
            "-",
        ],
        # One process, one event loop (docs/gateway.md): a second worker would halve each audit
        # group commit and compete with Triton for the same cores.
        "dataplane": [
            *MANAGE,
            "run_dataplane",
            "--host",
            BIND,
            "--port",
            str(PORT),
            "--grpc-port",
            str(GRPC_PORT),
            "--portal-upstream",
            f"http://127.0.0.1:{PORTAL_PORT}",
        ],
    }


def child_env(name: str, env: dict) -> dict:
    """The portal trusts the loopback hop in X-Forwarded-For: every request it gets comes through the data
    plane's relay, which appends the address it saw. Only the portal: the data plane itself faces clients."""
    if name != "web":
        return env
    trusted = [p for p in env.get("SOVEREIGN_TRUSTED_PROXIES", "").split(",") if p.strip()]
    trusted += [p for p in ("127.0.0.1/32", "::1/128") if p not in trusted]
    return {**env, "SOVEREIGN_TRUSTED_PROXIES": ",".join(trusted)}


def main() -> int:
    os.umask(0o077)  # database, keystore, broker, logs: nothing under the data dir is for other users
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(TRITON_CREDENTIAL_ENV, None)  # made below for Triton alone, never inherited by every child
    env.setdefault("SOVEREIGN_LOCAL_KEK_FILE", str(DATA / "keystore" / "kek.bin"))
    LOGS.mkdir(parents=True, exist_ok=True)
    os.chmod(LOGS, 0o700)
    for old in LOGS.iterdir():
        if old.is_file():
            os.chmod(old, 0o600)  # left world-readable by an older launcher
    step([*MANAGE, "migrate", "--noinput", "-v", "0"], env, "migrate", 600)
    step([*MANAGE, "collectstatic", "--noinput", "-v", "0"], env, "collectstatic", 600)
    # Closing the bypass (docs/triton-credential.md): a fresh credential every start, sealed into the
    # database before anything calls Triton, and given to Triton alone through its environment.
    credential = secrets.token_urlsafe(32)
    step(
        [*MANAGE, "set_triton_credential", "local", "--url", f"http://127.0.0.1:{TRITON_PORT}"],
        {**env, TRITON_CREDENTIAL_ENV: credential},
        "set_triton_credential",
        120,
    )
    # 等保 8.1.4.6: sign a manifest of the code being started; the portal and the worker verify it
    # when they start, platform.code_manifest whenever compliance is evaluated.
    step([*MANAGE, "code_manifest", "--write"], env, "code_manifest", 300)
    for name, argv in commands().items():
        child = child_env(name, env)
        supervisor.add(name, argv, {**child, TRITON_CREDENTIAL_ENV: credential} if name == "triton" else child)
    del credential
    wait_until(lambda: http_ok(f"http://127.0.0.1:{TRITON_PORT}/v2/health/ready"), "Triton was not ready", 180)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{PORTAL_PORT}/healthz"), "the portal was not ready", 120)
    wait_until(lambda: http_ok(f"http://{HOST}:{PORT}/dataplane/healthz"), "the data plane was not ready", 120)
    wait_until(lambda: http_ok(f"http://{HOST}:{PORT}/healthz"), "the portal was not reachable via the data plane", 60)
    step(
        [
            *MANAGE,
            "bootstrap_demo",
            "--triton-url",
            f"http://127.0.0.1:{TRITON_PORT}",
            "--portal-url",
            f"http://{HOST}:{PORT}",
            *(["--grpc-address", f"{HOST}:{GRPC_PORT}"] if GRPC_PORT else []),
        ],
        env,
        "bootstrap_demo",
        600,
    )
    grpc = f" and gRPC on {GRPC_PORT}" if GRPC_PORT else ""
    where = f"listening on {BIND}:{PORT}{grpc}" + (" (set SOVEREIGN_BIND to expose it)" if BIND == "127.0.0.1" else "")
    tell(f"Logs: {LOGS}/ (rotated at {LOG_MAX_BYTES // 1048576} MB; {where})")
    wait_until(lambda: False, "", float("inf"))
    return 0  # not reached: wait_until returns only by Stop


supervisor = Supervisor()

if __name__ == "__main__":
    terminal = Terminal()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)  # Ctrl-Z would stop the launcher but not make: use Ctrl-C
    terminal.take()
    code = 0
    try:
        main()
    except Stop:
        code = 1 if supervisor.gave_up else 0
    except SystemExit as exc:
        if exc.code not in (None, 0):
            print(exc.code if isinstance(exc.code, str) else f"exit {exc.code}", file=sys.stderr)
            code = 1
    finally:
        if stop_signal:
            tell(f"\nstopping ({stop_signal[0]})…")
        killed = supervisor.stop()
        if killed:
            say(f"had to kill {', '.join(killed)} after {STOP_GRACE:.0f}s")
        terminal.release()
    if stop_signal and not supervisor.gave_up:
        tell("stopped.")
    sys.exit(code)
