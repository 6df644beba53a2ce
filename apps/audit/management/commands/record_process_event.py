"""Called by `make run`'s supervisor (deploy/run_local.py), which has no Django of its own: records
that it restarted a process, or gave up on one, through the audit service."""

import re

from django.core.management.base import BaseCommand, CommandError

from apps.audit.platform import record_process_giveup, record_process_restart


class Command(BaseCommand):
    help = "Audit a restart (or a give-up) of a process supervised by `make run`."

    def add_arguments(self, parser):
        parser.add_argument("event", choices=["restart", "giveup"])
        parser.add_argument("--process", required=True, help="triton, worker or web")
        parser.add_argument("--exit-code", type=int, required=True, help="its exit status (-N: killed by signal N)")
        parser.add_argument("--attempt", type=int, default=1, help="restart: consecutive failure count")
        parser.add_argument("--delay", type=float, default=0.0, help="restart: back-off waited, seconds")
        parser.add_argument("--pid", type=int, default=None, help="restart: the new process id")
        parser.add_argument("--window", type=float, default=0.0, help="giveup: seconds counted as a rapid failure")

    def handle(self, *args, event, process, exit_code, attempt, delay, pid, window, **options):
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,39}", process):
            raise CommandError("--process must be a short lower-case name")
        if event == "restart":
            row = record_process_restart(process=process, exit_code=exit_code, attempt=attempt, delay=delay, pid=pid)
        else:
            row = record_process_giveup(process=process, exit_code=exit_code, failures=attempt, window=window)
        self.stdout.write(f"audit event {row.pk} {row.event_type}")
