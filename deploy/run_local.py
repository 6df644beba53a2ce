"""`make run`: migrate, start the embedded Triton, a Celery worker (with beat) and gunicorn, deploy
the demo model and print how to use it. Ctrl-C stops everything this started.

Configuration: SOVEREIGN_PORT (portal, default 8000), SOVEREIGN_TRITON_PORT (Triton HTTP, default
18000; gRPC and metrics use the next two ports) and every variable of portal/settings.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("SOVEREIGN_DATA_DIR", ROOT / "var"))
PORT = int(os.environ.get("SOVEREIGN_PORT", "8000"))
TRITON_PORT = int(os.environ.get("SOVEREIGN_TRITON_PORT", "18000"))
children: list[subprocess.Popen] = []


def main() -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("SOVEREIGN_LOCAL_KEK_FILE", str(DATA / "keystore" / "kek.bin"))
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], check=True, cwd=ROOT, env=env)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v", "0"], check=True, cwd=ROOT, env=env)
    logs = DATA / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # The embedded Triton is "this host": it reads the same dev keystore to unwrap data keys.
    start(
        "triton",
        [
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
        env,
        logs,
    )
    start(
        "worker",
        [
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
        env,
        logs,
    )
    start(
        "web",
        [
            str(VENV_BIN / "gunicorn"),
            "portal.wsgi",
            "--bind",
            f"0.0.0.0:{PORT}",
            "--worker-class",
            "gthread",
            "--workers",
            "2",
            "--threads",
            "8",
            "--access-logfile",
            "-",
        ],
        env,
        logs,
    )
    wait_http(f"http://127.0.0.1:{TRITON_PORT}/v2/health/ready", "Triton", 120)
    wait_http(f"http://127.0.0.1:{PORT}/healthz", "portal", 60)
    subprocess.run(
        [
            *manage,
            "bootstrap_demo",
            "--triton-url",
            f"http://127.0.0.1:{TRITON_PORT}",
            "--portal-url",
            f"http://127.0.0.1:{PORT}",
        ],
        check=True,
        cwd=ROOT,
        env=env,
    )
    print(f"Logs: {logs}/", flush=True)
    while all(p.poll() is None for p in children):
        time.sleep(1)
    dead = [p.args[0] for p in children if p.poll() is not None]
    print(f"a process stopped unexpectedly ({dead}); see {logs}/", file=sys.stderr)
    return 1


def start(name: str, argv: list[str], env: dict, logs: Path) -> None:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
    children.append(
        subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    )


def wait_http(url: str, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in children):
            raise SystemExit(f"{what} did not start: a process exited early; see {DATA / 'logs'}/")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own localhost URL
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} was not ready at {url} within {timeout:.0f}s; see {DATA / 'logs'}/")


def stop_all(*_args) -> None:
    """SIGTERM each leader (it stops its own workers), then SIGKILL whatever group is left."""
    for p in children:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 20
    for p in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        sys.exit(0)
    finally:
        stop_all()
