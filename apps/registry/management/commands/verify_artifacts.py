from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ServiceError
from apps.registry.integrity import verify_artifacts


class Command(BaseCommand):
    help = (
        "Decrypt a sample of the stored artifacts through the KEK provider, authenticate every segment and "
        "compare the plaintext SHA-256 with the recorded digest; record the run (registry.integrity.verify). "
        "Exits 1 when an artifact fails. `make run` runs it once at start; Celery beat runs it periodically."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sample", type=int, default=None, help="artifacts to verify (default: the setting)")
        parser.add_argument(
            "--warn-only", action="store_true", help="exit 0 even when a file fails (the run is recorded either way)"
        )

    def handle(self, *args, sample, warn_only, **options):
        try:
            run = verify_artifacts(sample_size=sample)
        except ServiceError as err:
            raise CommandError(f"{err.code}: {err.detail}") from err
        self.stdout.write(f"{run.verified}/{run.sampled} artifact(s) verified of {run.live_artifacts} live")
        for failure in run.failures:
            self.stderr.write(f"FAILED {failure['version']} {failure['file']} ({failure['code']}): {failure['reason']}")
        if run.failures and not warn_only:
            raise CommandError(f"{len(run.failures)} artifact file(s) failed verification")
