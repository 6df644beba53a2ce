from django.core.management.base import BaseCommand, CommandError

from apps.compliance.backup import run_restore_drill


class Command(BaseCommand):
    help = (
        "Restore drill: pg_dump the database, pg_restore it into a scratch database, verify the audit "
        "chain on the restored copy, drop the copy, record the result (check backup.restore_drill). "
        "Needs a role that may create databases; exit 1 when the drill fails."
    )

    def handle(self, *args, **options):
        drill = run_restore_drill(actor=None)
        line = (
            f"restore drill {drill.pk}: {'OK' if drill.ok else 'FAILED'} in "
            f"{(drill.finished_at - drill.started_at).total_seconds():.1f} s; {drill.events_verified} event(s) "
            f"verified through sequence {drill.last_sequence}; {drill.detail}"
        )
        if not drill.ok:
            raise CommandError(line, returncode=1)
        self.stdout.write(line)
