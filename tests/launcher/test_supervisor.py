"""`make run`'s supervisor (deploy/run_local.py) with real child processes: restarts with capped
exponential back-off, each restart audited through `manage.py record_process_event` into the
test database, a give-up after repeated rapid failures, stop with SIGKILL for the stubborn,
private rotated logs, and Ctrl-C from a terminal ending `make` with status 0."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pty
import signal
import stat
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.audit.models import AuditEvent
from portal.celery import QuietRoutineTasks, quiet_routine_tasks
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def load_run_local():
    spec = importlib.util.spec_from_file_location("run_local_under_test", ROOT / "deploy" / "run_local.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_local(tmp_path, monkeypatch):
    module = load_run_local()
    monkeypatch.setattr(module, "LOGS", tmp_path)
    monkeypatch.setattr(module, "BACKOFF_FIRST", 0.2)
    monkeypatch.setattr(module, "BACKOFF_MAX", 0.5)
    monkeypatch.setattr(module, "STABLE_AFTER", 30.0)
    monkeypatch.setattr(module, "RESTART_LIMIT", 4)
    monkeypatch.setattr(module, "STOP_GRACE", 1.0)
    supervisors = []
    module.new_supervisor = lambda: supervisors.append(module.Supervisor()) or supervisors[-1]
    yield module
    for sup in supervisors:
        sup.stop()


def child_env() -> dict:
    """The environment of the children and of the audit command: this test's database."""
    s = connection.settings_dict
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    url = f"postgres://{s.get('USER') or 'postgres'}{password}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}"
    return {**os.environ, "DATABASE_URL": f"{url}/{s['NAME']}", "PYTHONUNBUFFERED": "1"}


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def tick_until(sup, predicate, timeout=60.0, what="the supervisor"):
    def step():
        sup.tick()
        return predicate()

    return wait_for(step, timeout, what=what, interval=0.02)


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


@pytest.mark.django_db(transaction=True)
def test_a_failing_process_is_restarted_with_backoff_then_given_up_and_every_step_audited(run_local):
    sup = run_local.new_supervisor()
    started = time.monotonic()
    child = sup.add("flaky", py("import sys; print('flaky starting'); sys.exit(3)"), child_env())

    def progress():
        return sup.gave_up

    tick_until(sup, progress, what="the give-up")
    sup.stop()  # joins the audit commands
    assert sup.gave_up is child and child.restarts == 3 and child.failures == 4
    assert time.monotonic() - started >= 0.2 + 0.4 + 0.5  # it did wait out each back-off
    restarts = events("platform.process.restart")
    assert [e.details["attempt"] for e in restarts] == [1, 2, 3]
    assert [e.details["backoff_seconds"] for e in restarts] == [0.2, 0.4, 0.5]  # doubling, capped
    assert all(e.target_id == "flaky" and e.details["exit_code"] == 3 and e.actor_id is None for e in restarts)
    [giveup] = events("platform.process.giveup")
    assert giveup.outcome == "failure" and giveup.details["failures"] == 4 and giveup.error_code == "process_failing"
    log = run_local.LOGS / "flaky.log"
    assert log.read_text().count("flaky starting") == 4
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.mark.django_db(transaction=True)
def test_a_killed_process_is_restarted_with_its_whole_group_cleaned_and_the_signal_audited(run_local, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    sup = run_local.new_supervisor()
    child = sup.add(
        "worker",
        py(f"""
            import subprocess, time
            # a pool process in the leader's process group, as Celery's are
            p = subprocess.Popen(["sleep", "600"])
            open({str(pidfile)!r}, "w").write(str(p.pid))
            time.sleep(600)
        """),
        child_env(),
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text(), 30, what="the grandchild")
    grandchild = int(pidfile.read_text())
    first = child.proc.pid
    pidfile.unlink()
    os.kill(first, signal.SIGKILL)
    tick_until(sup, lambda: child.proc.pid != first and child.alive(), what="the restart")
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]
    assert child.failures == 1 and not sup.gave_up
    sup.flush_audits()
    [event] = events("platform.process.restart")
    assert event.details == {
        "process": "worker",
        "exit_code": -9,
        "signal": "SIGKILL",
        "attempt": 1,
        "backoff_seconds": 0.2,
        "pid": child.proc.pid,
    }


@pytest.mark.django_db(transaction=True)
def test_a_process_that_ran_long_enough_starts_a_fresh_failure_count(run_local, monkeypatch):
    monkeypatch.setattr(run_local, "STABLE_AFTER", 0.3)
    sup = run_local.new_supervisor()
    child = sup.add("web", py("import time, sys; time.sleep(0.5); sys.exit(1)"), child_env())
    tick_until(sup, lambda: child.restarts >= 5, what="five restarts")
    assert child.failures == 1 and not sup.gave_up  # limit is 4: only rapid failures count
    sup.stop()
    assert {e.details["attempt"] for e in events("platform.process.restart")} == {1}


def test_stop_terminates_then_kills_what_ignores_sigterm(run_local):
    sup = run_local.new_supervisor()
    env = {**os.environ}
    polite = sup.add("polite", py("import time; time.sleep(600)"), env)
    stubborn = sup.add(
        "stubborn",
        py("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(600)"),
        env,
    )
    wait_for(lambda: b"ready" in (run_local.LOGS / "stubborn.log").read_bytes(), 30, what="the stubborn child")
    assert sup.stop() == ["stubborn"]
    assert polite.proc.returncode == -signal.SIGTERM and stubborn.proc.returncode == -signal.SIGKILL


def test_logs_rotate_at_the_size_limit_keep_n_backups_and_are_private(run_local, tmp_path):
    path = tmp_path / "web.log"
    path.write_bytes(b"old world-readable line\n")
    path.chmod(0o644)
    log = run_local.RotatingLog(path, max_bytes=100, backups=2)
    for i in range(12):
        log.write(f"line {i:02d} ".encode() + b"x" * 20 + b"\n")
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["web.log", "web.log.1", "web.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 100
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert b"line 11" in path.read_bytes()
    assert b"old world-readable" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())  # rotated away


def test_ctrl_c_on_the_terminal_reaches_the_launcher_not_make_and_make_exits_0(tmp_path):
    """What a person sees: `make run`, Ctrl-C, status 0. Without the launcher taking the terminal's
    foreground, make gets the SIGINT too and kills itself with it ("make: *** Interrupt", 130)."""
    (tmp_path / "Makefile").write_text(
        "run:\n\t"
        + f'{sys.executable} -c \'import runpy; m = runpy.run_path("{ROOT}/deploy/run_local.py"); '
        + 'import signal, time; t = m["Terminal"](); '
        + '[signal.signal(s, m["on_signal"]) for s in (signal.SIGINT, signal.SIGTERM)]; '
        + 't.take(); print("ready", flush=True); '
        + 'exec("while not m[\\"stop_signal\\"]: time.sleep(0.05)"); '
        + 't.release(); print("got", m["stop_signal"][0], flush=True)\'\n'
    )
    master, slave = pty.openpty()

    def setup():
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        ["make", "-s", "run"], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, preexec_fn=setup
    )
    os.close(slave)
    output = b""

    def read_until(marker: bytes) -> bool:
        nonlocal output
        os.set_blocking(master, False)
        with contextlib.suppress(BlockingIOError, OSError):
            output += os.read(master, 4096)
        return marker in output

    wait_for(lambda: read_until(b"ready"), 60, what=lambda: f"the launcher stub: {output!r}")
    os.write(master, b"\x03")  # the terminal's line discipline sends SIGINT to its foreground group
    assert proc.wait(30) == 0
    read_until(b"got")
    os.close(master)
    assert b"got SIGINT" in output and b"Interrupt" not in output


@pytest.mark.django_db
def test_record_process_event_refuses_a_strange_process_name():
    with pytest.raises(CommandError):
        call_command("record_process_event", "restart", "--process", "../../etc", "--exit-code", "1")
    assert not AuditEvent.objects.filter(event_type__startswith="platform.").exists()


def test_routine_beat_tasks_are_not_logged_at_info_but_their_errors_are(caplog):
    quiet_routine_tasks()
    caplog.set_level(logging.INFO)
    trace = logging.getLogger("celery.app.trace")
    beat = logging.getLogger("celery.beat")
    trace.info("Task %s[%s] succeeded in %ss: %s", "apps.audit.tasks.seal_audit_log", "id-1", 0.01, 3)
    beat.info("Scheduler: Sending due task %s (%s)", "audit-seal", "apps.audit.tasks.seal_audit_log")
    trace.info("Task %s[%s] succeeded in %ss: %s", "apps.deployments.tasks.reconcile_deployment_task", "id-2", 1, "ok")
    trace.error("Task %s[%s] raised unexpected: %s", "apps.audit.tasks.seal_audit_log", "id-3", "boom")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("seal_audit_log" in m and "succeeded" in m for m in messages)
    assert not any("Sending due task audit-seal" in m for m in messages)
    assert any("reconcile_deployment_task" in m for m in messages)
    assert any("raised unexpected" in m for m in messages)
    assert sum(isinstance(f, QuietRoutineTasks) for f in trace.filters) == 1


def test_the_data_plane_is_public_on_bind_and_the_portal_stays_on_loopback_behind_it(monkeypatch):
    for name in ("SOVEREIGN_BIND", "SOVEREIGN_GRPC_PORT", "SOVEREIGN_PORTAL_PORT", "SOVEREIGN_TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOVEREIGN_PORT", "8311")
    module = load_run_local()
    plane, web = module.commands()["dataplane"], module.commands()["web"]
    arg = lambda argv, flag: argv[argv.index(flag) + 1]  # noqa: E731
    assert (arg(plane, "--host"), arg(plane, "--port"), arg(plane, "--grpc-port")) == ("127.0.0.1", "8311", "8312")
    assert arg(web, "--bind") == "127.0.0.1:8313"
    assert arg(plane, "--portal-upstream") == "http://127.0.0.1:8313"  # every non-/v2 path reaches the portal
    monkeypatch.setenv("SOVEREIGN_BIND", "0.0.0.0")  # noqa: S104 - the explicit opt-in under test
    module = load_run_local()
    plane, web = module.commands()["dataplane"], module.commands()["web"]
    assert arg(plane, "--host") == "0.0.0.0" and module.HOST == "127.0.0.1"  # noqa: S104
    assert arg(web, "--bind") == "127.0.0.1:8313"  # never exposed: only the data plane reaches it
    monkeypatch.setenv("SOVEREIGN_BIND", "10.1.2.3")
    assert load_run_local().HOST == "10.1.2.3"  # health checks and printed URLs use the bound address
    monkeypatch.setenv("SOVEREIGN_GRPC_PORT", "0")
    assert arg(load_run_local().commands()["dataplane"], "--grpc-port") == "0"  # gRPC off


def test_only_the_portal_trusts_the_data_planes_loopback_hop(monkeypatch):
    monkeypatch.delenv("SOVEREIGN_TRUSTED_PROXIES", raising=False)
    module = load_run_local()
    assert module.child_env("web", {})["SOVEREIGN_TRUSTED_PROXIES"] == "127.0.0.1/32,::1/128"
    assert "SOVEREIGN_TRUSTED_PROXIES" not in module.child_env("dataplane", {})  # it faces the clients
    kept = module.child_env("web", {"SOVEREIGN_TRUSTED_PROXIES": "10.0.0.0/8"})["SOVEREIGN_TRUSTED_PROXIES"]
    assert kept == "10.0.0.0/8,127.0.0.1/32,::1/128"


def test_a_closed_output_does_not_stop_the_launcher_from_talking_or_stopping(run_local, monkeypatch):
    """`make run | tee log` whose tee died: printing "stopping…" raised BrokenPipeError in the
    launcher's finally block before it stopped its children, which then ran on as orphans."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads any more: a write raises BrokenPipeError (SIGPIPE is ignored)
    closed = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", closed)
    monkeypatch.setattr(sys, "stderr", closed)
    run_local.tell("stopping (SIGTERM)…")
    run_local.say("worker restarted")
    with pytest.raises(BrokenPipeError):  # what the launcher's old print did
        print("stopping", flush=True)
