from django.core.management.base import BaseCommand, CommandError

from apps.audit.retention import purge_floor_days, retention_days
from apps.audit.services import raise_purge_floor


class Command(BaseCommand):
    help = (
        "Show the database purge floor (events younger than it are never purged) or raise it; "
        "lowering it is the owner role's act, in SQL (docs/audit.md)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--raise-to", type=int, metavar="DAYS", help="raise the floor to DAYS (audited)")

    def handle(self, *args, **options):
        days = options.get("raise_to")
        if days is not None:
            if days <= 0:
                raise CommandError("--raise-to takes a positive number of days")
            raise_purge_floor(days, actor=None)
        self.stdout.write(f"purge floor {purge_floor_days()} days; effective retention {retention_days()} days")
