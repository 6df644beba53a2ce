from django.core.management.base import BaseCommand

from apps.audit.chain import seal_pending


class Command(BaseCommand):
    help = "Seal committed audit events into the hash chain and write a signed checkpoint."

    def add_arguments(self, parser):
        parser.add_argument("--no-checkpoint", action="store_true", help="seal only; write no checkpoint")

    def handle(self, *args, no_checkpoint=False, **options):
        result = seal_pending(checkpoint=not no_checkpoint)
        if result.busy:
            self.stdout.write("another sealer is running; nothing done")
            return
        cp = f"checkpoint at sequence {result.checkpoint.sequence}" if result.checkpoint else "no new checkpoint"
        self.stdout.write(f"sealed {result.sealed} event(s); {cp}")
