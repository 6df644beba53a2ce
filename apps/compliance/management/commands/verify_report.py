from django.core.management.base import BaseCommand, CommandError

from apps.compliance.reports.signing import ReportSignatureError, verify_file


class Command(BaseCommand):
    help = "Verify a compliance report against its detached signature (exit status 1 if it does not verify)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="the report (PDF, CSV or JSON)")
        parser.add_argument("signature", help="its .sig file")

    def handle(self, *args, **options):
        try:
            key_id = verify_file(options["file"], options["signature"])
        except (ReportSignatureError, OSError) as exc:
            raise CommandError(f"NOT VERIFIED: {exc}") from exc
        self.stdout.write(f"OK: {options['file']} is signed by key {key_id}")
