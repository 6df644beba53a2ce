"""A PostgreSQL server of the test's own (initdb + pg_ctl in a temporary directory, another port),
for what cannot be done to the shared cluster: archive_mode needs a restart, and the shared server
at 127.0.0.1:5432 is never restarted or reconfigured by a test."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from inference_backend.server import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"{name} not found under /usr/lib/postgresql/*/bin (install postgresql)")
    return found[-1]


class OwnPostgres:
    """initdb'd and started with archive_mode=on and archive_command `false` (nothing archives
    until a test sets `copy_command`: `cp %p <dir>/archive/%f`); trust auth on a Unix socket in its
    own directory and on 127.0.0.1:<port>."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sovereign-test-pg-"))
        self.data, self.archive, self.port = self.dir / "data", self.dir / "archive", free_port()
        self.archive.mkdir()
        self.copy_command = f"cp %p {self.archive}/%f"
        # initdb refuses to run as root: run the server as the postgres system user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            pw = pwd.getpwnam("postgres")
            for path in (self.dir, self.archive):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)  # noqa: S603

    def start(self) -> OwnPostgres:
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
                "archive_mode = on\narchive_command = 'false'\nfsync = off\n"
            )
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start")
        return self

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname="postgres", autocommit=True)

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
