from django.core.management.base import BaseCommand

from apps.audit.retention import purge_expired, retention_days


class Command(BaseCommand):
    help = "Archive and purge the sealed audit range older than the retention period (as the daily task does)."

    def handle(self, *args, **options):
        result = purge_expired()
        if result is None:
            self.stdout.write(f"nothing older than {retention_days()} days to purge")
            return
        self.stdout.write(
            f"purged {result.events} event(s) through sequence {result.through_sequence}; "
            f"archive {result.archive} (sha256 {result.archive_sha256})"
        )
