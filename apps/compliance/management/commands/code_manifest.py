from django.core.management.base import BaseCommand, CommandError

from apps.compliance.manifest import verify_manifest, write_manifest


class Command(BaseCommand):
    help = (
        "The signed manifest of the installed code (apps/, portal/, inference_backend/ and the installed "
        "distributions). --write records and signs it (at install or deploy; audited); without it, verify "
        "it and exit 1 listing what differs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--write", action="store_true", help="build, sign and write the manifest")

    def handle(self, *args, write, **options):
        if write:
            manifest = write_manifest()
            self.stdout.write(
                f"code manifest written: {len(manifest['files'])} files, {len(manifest['distributions'])} distributions"
            )
            return
        report = verify_manifest()
        if report.ok:
            self.stdout.write(f"code manifest verified: {report.files} files, signed by {report.key_id}")
            return
        for name in ("changed", "missing", "added", "distributions"):
            for item in getattr(report, name)[:50]:
                self.stderr.write(f"{name}: {item}")
        raise CommandError(f"code manifest {report.status}: {report.detail}")
