from django.core.management.base import BaseCommand

from apps.compliance.catalog import matrix_markdown


class Command(BaseCommand):
    help = (
        "Print, per profile, every control with its clause, the checks that evaluate it (and whether each "
        "probes, queries or reads an attestation) and what they look at — the table in docs/compliance.md."
    )

    def handle(self, *args, **options):
        self.stdout.write(matrix_markdown(), ending="")
