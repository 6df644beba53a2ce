"""Run the tritonserver bundled in the ``nvidia-pytriton`` wheel as a local child process.

Used by ``make run`` (``python -m inference_backend.server ...``) and by tests.
Only x86-64 Linux is supported: that is what the wheel ships.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import urllib3

from inference_backend.triton_wheel import TritonStartError, prepare_backend_directory

__all__ = [
    "CREDENTIAL_ENV",
    "CREDENTIAL_HEADER",
    "EXIT_TIMEOUT_SECS",
    "GRPC_CREDENTIAL_METADATA",
    "RESTRICTED_APIS",
    "LocalTritonServer",
    "restriction_flags",
    "TritonStartError",
    "free_port",
    "launch_local_triton",
    "main",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 20
# On SIGTERM Triton waits this long for in-flight requests and open HTTP connections (idle
# keep-alive ones included) before exiting; keep it below stop()'s default timeout so Triton
# exits cleanly (unloading models, removing its temporary model directories) rather than being killed.
EXIT_TIMEOUT_SECS = 10
# Issue 15, closing the bypass (docs/triton-credential.md): with a credential, Triton refuses every
# API group but health without this header carrying it (HTTP 403 / gRPC UNAVAILABLE), so only the
# portal's clients (deployments, probes, the gateway's data plane) can infer or change the
# repository. Lower case: gRPC metadata keys must be. Health stays open for readiness probes
# (orchestrators, the launcher), which carry no secret; it answers only "up" or "ready".
CREDENTIAL_HEADER = "sovereign-triton-key"
# Over gRPC Triton expects the key with this prefix in the call metadata (seen with Triton 2.51).
GRPC_CREDENTIAL_METADATA = "triton-grpc-protocol-" + CREDENTIAL_HEADER
RESTRICTED_APIS = (
    "inference",
    "metadata",
    "model-repository",
    "model-config",
    "shared-memory",
    "statistics",
    "trace",
    "logging",
)
# `python -m inference_backend.server` takes the credential from the environment, never from its own
# argv (tritonserver can only take it on its command line: see docs/triton-credential.md).
CREDENTIAL_ENV = "SOVEREIGN_TRITON_CREDENTIAL"


def restriction_flags(credential: str) -> list[str]:
    """The tritonserver options that restrict every API group but health to holders of ``credential``."""
    if not credential or any(c in credential for c in ":=, \t\r\n"):
        raise ValueError("a Triton credential is a non-empty token without ':', '=', ',' or spaces")
    apis = ",".join(RESTRICTED_APIS)
    return [
        f"--http-restricted-api={apis}:{CREDENTIAL_HEADER}={credential}",
        f"--grpc-restricted-protocol={apis}:{CREDENTIAL_HEADER}={credential}",
    ]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers (tritonserver included) do: connections of a previous run lingering in
        # TIME_WAIT must not make a free port look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class LocalTritonServer:
    """A tritonserver child process with its own backend directory and an empty model repository.

    Models are loaded through the repository API (explicit model control). ``extra_env`` is
    the environment of "this Triton host", e.g. ``SOVEREIGN_LOCAL_KEK_FILE``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        extra_env: Mapping[str, str] | None = None,
        log_path: str | None = None,
        credential: str | None = None,
    ) -> None:
        """Configure (but do not start) a server whose files live under ``workdir``. With a
        ``credential`` every API group but health requires it in the ``CREDENTIAL_HEADER`` header."""
        if credential:
            restriction_flags(credential)  # refuses a malformed one now, not at start
        self.workdir = Path(workdir).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.extra_env = dict(extra_env or {})
        self.log_path = Path(log_path) if log_path else self.workdir / "tritonserver.log"
        self.credential = credential or None
        self.model_repository = self.workdir / "models"
        self.backend_directory = self.workdir / "backends"
        # The server's (and so every python-backend stub's) working directory, made at start.
        self.cwd: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP/REST endpoint."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus metrics endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """Process id of the running tritonserver, or None."""
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        """True while the tritonserver process is alive."""
        return self._process is not None and self._process.poll() is None

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        binary, libs_dir = prepare_backend_directory(self.backend_directory)
        self.model_repository.mkdir(parents=True, exist_ok=True)
        # Not the workdir: it holds the log, the backends and, in development, the KEK keystore, and
        # onnxruntime resolves a model's external-data names against the working directory (the
        # model refuses those and changes directory itself; this is the second wall). mkdtemp: a
        # fresh empty directory, mode 0700, every start.
        self.cwd = Path(tempfile.mkdtemp(prefix="cwd-", dir=self.workdir))
        env = dict(os.environ)

        def prepend(var: str, value: str) -> None:
            env[var] = value + (os.pathsep + env[var] if env.get(var) else "")

        # The stub's embedded Python finds its site-packages through the first python3 on PATH.
        prepend("PATH", os.path.dirname(sys.executable))
        prepend("LD_LIBRARY_PATH", str(libs_dir))
        # The stub's interpreter runs isolated (it ignores PYTHONPATH); triton_model.py applies it itself.
        prepend("PYTHONPATH", str(PROJECT_ROOT))
        env.update(self.extra_env)
        env.pop(CREDENTIAL_ENV, None)  # the stubs need no credential
        command = [
            str(binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_directory}",
            "--model-control-mode=explicit",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_SECS}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
        ]
        if self.credential:
            command += restriction_flags(self.credential)
        return command, env

    def start(self, timeout: float = 60) -> None:
        """Start tritonserver and wait until ``/v2/health/ready`` answers 200.

        Raises :class:`TritonStartError` (with the last log lines) if it cannot be
        executed, exits, or is not ready within ``timeout`` seconds.
        """
        with self._lock:
            if self.running():
                return
            for port in (self.http_port, self.grpc_port, self.metrics_port):
                if _port_in_use(port):
                    raise TritonStartError(f"port {port} on 127.0.0.1 is already in use")
            command, env = self._prepare()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - stays open for the child's lifetime
            try:
                self._process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                    env=env, cwd=self.cwd, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                self._close_log()
                hint = " (not an executable for this machine)" if exc.errno == errno.ENOEXEC else ""
                raise TritonStartError(f"cannot execute {command[0]}{hint}: {exc}") from exc
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        pool = urllib3.HTTPConnectionPool("127.0.0.1", self.http_port, maxsize=1)
        try:
            self._poll_ready(pool, timeout)
        finally:
            pool.close()  # an idle keep-alive connection would hold up Triton's shutdown

    def _poll_ready(self, pool: urllib3.HTTPConnectionPool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = "/v2/health/ready"
        process = self._process
        assert process is not None
        while True:
            try:
                response = pool.request(
                    "GET", url, headers={"Connection": "close"}, timeout=urllib3.Timeout(connect=1.0, read=2.0),
                    retries=False,
                )  # fmt: skip
                if response.status == 200 and process.poll() is None:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TritonStartError(
                    f"tritonserver was not ready within {timeout:.0f}s; last log lines "
                    f"({self.log_path}):\n{_tail(self.log_path)}"
                )
            try:  # waits on the "process exited" condition, re-checking readiness every 0.2 s
                code = process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            self.stop()
            raise TritonStartError(
                f"tritonserver exited with status {code} during startup; last log lines "
                f"({self.log_path}):\n{_tail(self.log_path)}"
            )

    def stop(self, timeout: float = 15) -> None:
        """Stop tritonserver: SIGTERM, then SIGKILL of its process group after ``timeout`` seconds."""
        with self._lock:
            process = self._process
            if process is None:
                return
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=timeout)
            # Python backend stubs are in the server's process group; reap any that outlived it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            self._process = None
            self._close_log()
            if self.cwd is not None:
                with contextlib.suppress(OSError):  # left in place if something was written there
                    self.cwd.rmdir()
                self.cwd = None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalTritonServer:
        """Start the server (if needed) and return it."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()


def launch_local_triton(
    workdir: str | os.PathLike[str],
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 120,
    attempts: int = 3,
    credential: str | None = None,
) -> LocalTritonServer:
    """Start a :class:`LocalTritonServer` on three free ports and return it (for test fixtures).

    Retries with new ports when a port was taken between choosing and binding it.
    """
    last: TritonStartError | None = None
    for _ in range(attempts):
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        http_port, grpc_port, metrics_port = sorted(ports)
        server = LocalTritonServer(
            workdir, http_port, grpc_port, metrics_port, extra_env=extra_env, credential=credential
        )
        try:
            server.start(timeout=timeout)
            return server
        except TritonStartError as exc:
            last = exc
            if "in use" not in str(exc) and "address already in use" not in str(exc).lower():
                raise
    assert last is not None
    raise last


def main(argv: list[str] | None = None) -> int:
    """Run a local tritonserver in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="Run the local tritonserver of the nvidia-pytriton wheel.")
    parser.add_argument("--workdir", required=True, help="directory for the backend dir, model repo and log")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log-path", default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    credential = os.environ.pop(CREDENTIAL_ENV, "") or None  # not passed on to the stubs' environment
    try:
        server = LocalTritonServer(
            args.workdir, args.http_port, args.grpc_port, args.metrics_port, log_path=args.log_path,
            credential=credential,
        )  # fmt: skip
    except ValueError as exc:
        print(f"error: {CREDENTIAL_ENV}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server.start(timeout=args.timeout)
    except TritonStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"tritonserver pid {server.pid} ready at {server.http_url} (log: {server.log_path})", flush=True)
    try:
        while not stop.wait(0.5):
            if not server.running():
                print(f"error: tritonserver exited; last log lines:\n{_tail(server.log_path)}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
