import json

from django.core.management.base import BaseCommand, CommandError

from apps.audit.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the audit hash chain and every checkpoint signature; exit 1 at the first damage."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the full report as JSON")

    def handle(self, *args, **options):
        report = verify_chain()
        if options.get("json"):
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(report["detail"])
            if report["pending"]:
                self.stdout.write(f"{report['pending']} event(s) not sealed yet")
        if not report["ok"]:
            raise CommandError(report["detail"], returncode=1)
