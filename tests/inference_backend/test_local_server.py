"""Unit tests of inference_backend.server process management, with stand-in server processes.

The real tritonserver is exercised in test_triton_integration.py.
"""

import json
import os
import socket
import sys
import textwrap

import pytest

from inference_backend import triton_wheel
from inference_backend.server import PROJECT_ROOT, LocalTritonServer, TritonStartError, free_port

# A stand-in for tritonserver: answers 200 on every GET and dumps its environment.
FAKE_SERVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    if os.environ.get("FAKE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.environ["FAKE_ENV_DUMP"], "w") as f:
        json.dump(dict(os.environ), f)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        def log_message(self, *a):
            pass
    print("fake tritonserver up", flush=True)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def fake_command(monkeypatch):
    """Replace the tritonserver command line (keeping the real environment and backend dir)."""
    holder = {}
    original = LocalTritonServer._prepare

    def prepare(self):
        command, env = original(self)
        return holder["command"](self), env

    monkeypatch.setattr(LocalTritonServer, "_prepare", prepare)
    return holder


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_start_env_backend_dir_and_stop(tmp_path, fake_command):
    dump = tmp_path / "env.json"
    fake_command["command"] = lambda s: [sys.executable, "-c", FAKE_SERVER, str(s.http_port)]
    srv = LocalTritonServer(tmp_path / "w", free_port(), free_port(), free_port(), {"FAKE_ENV_DUMP": str(dump)})
    with srv:
        pid = srv.pid
        assert srv.running() and _pid_alive(pid)
        assert srv.http_url == f"http://127.0.0.1:{srv.http_port}"
        env = json.loads(dump.read_text())
        assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(PROJECT_ROOT)
        assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0].endswith("nvidia_pytriton.libs")
        backend = srv.backend_directory / "python"
        assert (backend / "libtriton_python.so").is_symlink()
        assert (backend / "triton_python_backend_utils.py").is_symlink()
        stub = backend / "triton_python_backend_stub"
        assert stub.is_file() and not stub.is_symlink() and os.access(stub, os.X_OK)
        assert srv.model_repository.is_dir() and not list(srv.model_repository.iterdir())
    assert srv.pid is None and not srv.running()
    assert not _pid_alive(pid)
    assert "fake tritonserver up" in (tmp_path / "w" / "tritonserver.log").read_text()


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path, fake_command):
    dump = tmp_path / "env.json"
    fake_command["command"] = lambda s: [sys.executable, "-c", FAKE_SERVER, str(s.http_port)]
    srv = LocalTritonServer(
        tmp_path, free_port(), free_port(), free_port(), {"FAKE_ENV_DUMP": str(dump), "FAKE_IGNORE_TERM": "1"}
    )
    srv.start(timeout=30)
    pid = srv.pid
    srv.stop(timeout=0.5)
    assert not _pid_alive(pid)


def test_exit_during_startup_reports_log_tail(tmp_path, fake_command):
    script = "import sys; [print(f'line {i}') for i in range(40)]; print('fatal: no backend'); sys.exit(3)"
    fake_command["command"] = lambda s: [sys.executable, "-c", script]
    with pytest.raises(TritonStartError) as err:
        LocalTritonServer(tmp_path, free_port(), free_port(), free_port()).start(timeout=30)
    message = str(err.value)
    assert "exited with status 3" in message and "fatal: no backend" in message
    assert "line 39" in message and "line 5\n" not in message  # only the tail


def test_not_ready_in_time_stops_the_process(tmp_path, fake_command):
    fake_command["command"] = lambda s: [
        sys.executable,
        "-c",
        "import time; print('stuck', flush=True); time.sleep(120)",
    ]
    srv = LocalTritonServer(tmp_path, free_port(), free_port(), free_port())
    with pytest.raises(TritonStartError, match=r"not ready within 1s[\s\S]*stuck"):
        srv.start(timeout=1)
    assert srv.pid is None


def test_binary_that_cannot_execute(tmp_path, fake_command):
    bogus = tmp_path / "tritonserver"
    bogus.write_bytes(b"\x7fELF\x00garbage")
    bogus.chmod(0o755)
    fake_command["command"] = lambda s: [str(bogus)]
    with pytest.raises(TritonStartError, match="cannot execute"):
        LocalTritonServer(tmp_path, free_port(), free_port(), free_port()).start(timeout=5)


def test_port_in_use(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(TritonStartError, match=f"port {port} .* already in use"):
            LocalTritonServer(tmp_path, free_port(), port, free_port()).start(timeout=5)


def test_unsupported_platform(monkeypatch, tmp_path):
    monkeypatch.setattr(triton_wheel.platform, "machine", lambda: "aarch64")
    with pytest.raises(TritonStartError, match="x86-64 Linux only"):
        LocalTritonServer(tmp_path, free_port(), free_port(), free_port()).start(timeout=5)


def test_port_left_in_time_wait_by_a_previous_server_counts_as_free():
    """A restarted `make run` found Triton's port 'in use' while only TIME_WAIT entries of the
    previous run's closed connections remained (the server closes first, so they sit on its port)."""
    import socket

    from inference_backend.server import _port_in_use

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: TIME_WAIT on the server's port
    client.recv(1)
    client.close()
    assert _port_in_use(port)  # still listening
    listener.close()

    assert not _port_in_use(port)
